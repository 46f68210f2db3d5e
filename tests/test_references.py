"""Extra references: each is used (mouth interior, head turn) or reported unused with a reason.

The always-run tests use packaged images only: the built-in astronaut portrait (whose mouth is open
with the teeth showing, so a rescaled, relit copy is a real open-mouth reference of the same
person), scikit-image's coffee cup (no face) and matplotlib's Grace Hopper photograph (another
person; matplotlib comes with mediapipe). The video tests need ../shared/data and skip without it.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch

from lpm_npc.character.landmarks import FaceLandmarker, decode_image
from lpm_npc.character.references import INTERIOR_ROWS, MouthInterior
from lpm_npc.character.rig import RIG_FORMAT_VERSION, CharacterRig, build_rig
from lpm_npc.performance.motion import MotionFrame
from lpm_npc.render import mouth as mouth_mod
from lpm_npc.render import renderer as renderer_mod
from lpm_npc.render.contour import TABLE_SIZE

from conftest import shared_file


@pytest.fixture(scope="module")
def landmarker():
    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return decode_image(f.read())


def _astro_relit(astronaut: np.ndarray) -> np.ndarray:
    small = cv2.resize(astronaut, (360, 360), interpolation=cv2.INTER_AREA)
    return np.clip(small.astype(np.float32) * 0.85 + 12, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astro_refs_rig(astronaut, landmarker) -> CharacterRig:
    import skimage.data

    return build_rig(astronaut, landmarker, [skimage.data.coffee(), _hopper(), _astro_relit(astronaut)])


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _frame(clip: str, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_file("video", f"{clip}.mp4")))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, f = cap.read()
    cap.release()
    assert ok, (clip, index)
    return cv2.cvtColor(f, cv2.COLOR_BGR2RGB)


def _render(renderer, prepared, interior, size: int, **w: float) -> np.ndarray:
    """Render with the given interior (None = the drawn one) in place of the rig's own."""
    import dataclasses

    p = dataclasses.replace(prepared, mouth_interior=interior, still={})
    return renderer.render(p, MotionFrame.from_dict(0.0, w).values[None], size, size)[0]


# ---------------------------------------------------------------- always run (packaged data)
def test_each_reference_is_reported(astro_refs_rig):
    used = astro_refs_rig.references_used
    assert len(used) == 3 and astro_refs_rig.num_references == 4
    assert used[0] == "unused: no face found"
    assert used[1].startswith("unused: not the same person"), used
    assert used[2] == "mouth_interior", used
    assert RIG_FORMAT_VERSION >= 4


def test_mouth_interior_texture(astro_refs_rig):
    mi = astro_refs_rig.mouth_interior
    assert mi is not None
    assert mi.texture.shape == (INTERIOR_ROWS, TABLE_SIZE, 3) and mi.texture.dtype == np.uint8
    assert mi.gap.shape == (TABLE_SIZE,)
    # the opening is widest in the middle and the middle holds the teeth: brighter than the corners
    assert mi.gap[TABLE_SIZE // 2] > 0.1 and mi.gap[TABLE_SIZE // 2] > mi.gap[5]
    lum = mi.texture.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    mid = slice(TABLE_SIZE // 3, 2 * TABLE_SIZE // 3)
    assert lum[: INTERIOR_ROWS // 2, mid].mean() > 120  # the astronaut's upper teeth


def test_rig_roundtrip_keeps_references(astro_refs_rig, tmp_path):
    path = tmp_path / "rig.npz"
    astro_refs_rig.save(path)
    back = CharacterRig.load(path)
    assert back.references_used == astro_refs_rig.references_used
    assert np.array_equal(back.mouth_interior.texture, astro_refs_rig.mouth_interior.texture)
    assert np.array_equal(back.mouth_interior.gap, astro_refs_rig.mouth_interior.gap)
    plain = CharacterRig(image=back.image, matte=back.matte, landmarks=back.landmarks, face_score=1.0,
                         geometry=back.geometry)
    plain.save(path)
    again = CharacterRig.load(path)
    assert again.mouth_interior is None and again.references_used == [] and again.head_turns == []


def test_interior_render(astro_refs_rig):
    renderer = renderer_mod.TorchRenderer()
    prepared = renderer.prepare(astro_refs_rig)
    interior = mouth_mod.prepare_interior(astro_refs_rig.mouth_interior)
    S = astro_refs_rig.size
    # a closed mouth is left alone either way
    closed_drawn = _render(renderer, prepared, None, S, lips_press=1.0)
    closed_ref = _render(renderer, prepared, interior, S, lips_press=1.0)
    assert np.array_equal(closed_drawn, closed_ref)
    drawn = _render(renderer, prepared, None, S, jaw_open=0.7).astype(np.float32)
    ref = _render(renderer, prepared, interior, S, jaw_open=0.7).astype(np.float32)
    diff = np.abs(drawn - ref).max(-1)
    assert diff.max() > 40
    lm = astro_refs_rig.landmarks
    mw = float(np.linalg.norm(lm[291, :2] - lm[61, :2]))
    ys, xs = np.nonzero(diff > 2)
    cx, cy = lm[[13, 14], :2].mean(0)
    assert np.all(np.abs(xs - cx) < 0.8 * mw) and np.all(np.abs(ys - cy) < 0.8 * mw)  # only the mouth changes
    # the middle of the opening under the upper lip shows the reference's (bright) teeth
    lum = lambda im: im[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)  # noqa: E731
    y_up = int(lm[13, 1] + 0.04 * mw)
    strip = (slice(y_up, y_up + max(2, int(0.04 * mw))), slice(int(cx - 0.12 * mw), int(cx + 0.12 * mw)))
    assert lum(ref)[strip].mean() > 110


def test_fused_interior_matches_the_torch_layer(astro_refs_rig):
    """The CPU path's mouth kernel with a reference interior gives what the torch layer gives."""
    fused, ref = renderer_mod.TorchRenderer(), renderer_mod.TorchRenderer()
    ref.fused = False
    pf, pr = fused.prepare(astro_refs_rig), ref.prepare(astro_refs_rig)
    assert pf.mouth_interior is not None and fused._fused(pf)
    S = astro_refs_rig.size
    for w in (dict(jaw_open=0.7), dict(jaw_open=0.25, smile=0.6), dict(jaw_open=1.0, mouth_round=0.5)):
        m = MotionFrame.from_dict(0.0, w).values[None]
        a = fused.render(pf, m, S, S)[0].astype(np.int16)
        b = ref.render(pr, m, S, S)[0].astype(np.int16)
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.01, w


def test_composite_anchors_texture_to_the_lips():
    """A half-white (upper) / half-black (lower) interior: white hangs from the upper lip, black stands on the lower."""
    tex = np.zeros((INTERIOR_ROWS, TABLE_SIZE, 3), np.uint8)
    tex[: INTERIOR_ROWS // 2] = 255
    interior = mouth_mod.prepare_interior(MouthInterior(texture=tex, gap=np.full(TABLE_SIZE, 0.3, np.float32)))
    u = np.linspace(-1, 1, 11)
    for gap in (0.1, 0.3, 0.5):  # in mouth widths (100 px): narrower than, equal to, wider than the reference
        upper = np.stack([100 + 50 * u, 100 - 0 * u], -1)[None]
        lower = np.stack([100 + 50 * u, 100 + 100 * gap * (1 - u ** 2)], -1)[None]
        plan = mouth_mod.plan_mouth(upper, lower, upper.copy(), 100.0, 200, 200)
        canvas = torch.full((1, 3, 200, 200), 128.0)
        mouth_mod.composite_mouth(canvas, (0, 0), plan, torch.full((5, 3), 100.0), interior)
        col = canvas[0, 0, :, 100].numpy()
        g = 100 * gap
        assert col[int(100 + 0.2 * g)] > 150, gap       # upper part: the white half
        assert col[int(100 + 0.85 * g)] < 60, gap       # lower part: the black half
        assert abs(col[40] - 128) < 1e-3 and abs(col[190] - 128) < 1e-3  # far from the mouth: untouched


def test_store_reports_references(tmp_path, astronaut):
    import skimage.data

    from lpm_npc.character.store import CharacterStore

    store = CharacterStore(tmp_path)
    try:
        portrait = _png(astronaut)
        info, cached = store.register(portrait, [_png(skimage.data.coffee()), _png(_astro_relit(astronaut))])
        assert not cached
        assert info.references_used == ("unused: no face found", "mouth_interior")
        assert store.get(info.character_id).mouth_interior is not None
        plain, _ = store.register(portrait)
        assert plain.character_id != info.character_id and plain.references_used == ()
        again, cached = store.register(portrait, [_png(skimage.data.coffee()), _png(_astro_relit(astronaut))])
        assert cached and again == info
    finally:
        store.close()
    reopened = CharacterStore(tmp_path)  # metadata survives a restart
    try:
        assert reopened.info(info.character_id).references_used == info.references_used
    finally:
        reopened.close()


# ---------------------------------------------------------------- development data (skip without it)
def test_video_open_mouth_reference(landmarker):
    portrait, open_mouth = _frame("lp_d18", 0), _frame("lp_d18", 144)
    rig = build_rig(portrait, landmarker, [open_mouth])
    assert rig.references_used == ["mouth_interior"]
    lum = rig.mouth_interior.texture.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    mid = slice(TABLE_SIZE // 3, 2 * TABLE_SIZE // 3)
    assert lum[:6, mid].mean() > lum[INTERIOR_ROWS // 2, mid].mean()  # upper teeth above the dark inside


def test_video_head_turn_and_other_person(landmarker):
    portrait, turned = _frame("lp_d12", 0), _frame("lp_d12", 48)
    other = _frame("lp_d18", 0)
    rig = build_rig(portrait, landmarker, [turned, other])
    assert rig.references_used[0] == "head_turn_left (recorded, not yet used)", rig.references_used
    assert rig.references_used[1].startswith("unused: not the same person"), rig.references_used
    assert len(rig.head_turns) == 1 and rig.head_turns[0].yaw_deg > 4
