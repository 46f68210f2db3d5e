"""The warp renderer on a real portrait (skimage astronaut), checked with the real face landmarker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lpm_npc.character.landmarks import FaceLandmarker, decode_image
from lpm_npc.character.rig import CharacterRig, build_rig
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.motion import NUM_CHANNELS, MotionFrame
from lpm_npc.render.renderer import TorchRenderer

PORTRAITS = Path("/work/shared/data/portraits")


@pytest.fixture(scope="module")
def landmarker():
    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def rig(landmarker) -> CharacterRig:
    import skimage.data

    return build_rig(skimage.data.astronaut(), landmarker)


@pytest.fixture(scope="module")
def renderer() -> TorchRenderer:
    return TorchRenderer()


@pytest.fixture(scope="module")
def prepared(renderer, rig):
    return renderer.prepare(rig)


def motion(**w: float) -> np.ndarray:
    return MotionFrame.from_dict(0.0, w).values[None]


def render(renderer, prepared, rig, **w: float) -> np.ndarray:
    S = rig.size
    return renderer.render(prepared, motion(**w), S, S)[0]


def lum(img: np.ndarray) -> np.ndarray:
    return img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def box(points: np.ndarray, pad: float) -> tuple[slice, slice]:
    x0, y0 = points[:, :2].min(0) - pad
    x1, y1 = points[:, :2].max(0) + pad
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


def inner_mouth(rig: CharacterRig) -> tuple[slice, slice]:
    lm = rig.landmarks
    mw = np.linalg.norm(lm[291, :2] - lm[61, :2])
    cx, cy = lm[[13, 14], :2].mean(0)
    return slice(int(cy), int(cy + 0.2 * mw)), slice(int(cx - 0.25 * mw), int(cx + 0.25 * mw))


def test_neutral_matches_reference(renderer, prepared, rig):
    out = render(renderer, prepared, rig)
    assert out.shape == (rig.size, rig.size, 4) and out.dtype == np.uint8
    assert np.all(out[..., 3] == 255)
    diff = np.abs(out[..., :3].astype(np.float32) - rig.image.astype(np.float32))
    assert diff.mean() < 2.5
    # away from the mouth (whose own gap is closed at rest) it is nearly exact
    ys, xs = box(rig.landmarks[[61, 291, 13, 14]], 0.2 * rig.geometry.mouth_width)
    diff[ys, xs] = 0
    assert diff.mean() < 1.5


def test_jaw_open_darkens_mouth_only(renderer, prepared, rig):
    neutral = render(renderer, prepared, rig)
    jaw = render(renderer, prepared, rig, jaw_open=1.0)
    ys, xs = inner_mouth(rig)
    assert lum(jaw)[ys, xs].mean() < lum(neutral)[ys, xs].mean() - 25
    mouth_ys, mouth_xs = box(rig.landmarks[[61, 291, 13, 14, 152]], 0.2 * rig.geometry.mouth_width)
    assert np.abs(jaw[mouth_ys, mouth_xs].astype(float) - neutral[mouth_ys, mouth_xs]).mean() > 8
    corner = (slice(0, rig.size // 8), slice(0, rig.size // 8))
    assert np.array_equal(jaw[corner], neutral[corner])
    eyes = box(rig.landmarks[[33, 263, 159, 386]], 3)
    assert np.abs(jaw[eyes].astype(float) - neutral[eyes]).mean() < 2


def test_jaw_open_measured_by_landmarker(renderer, prepared, rig, landmarker):
    gaps = []
    for j in (0.0, 0.5, 1.0):
        f = landmarker.detect(render(renderer, prepared, rig, jaw_open=j)[..., :3])
        gaps.append(float(f.points[14, 1] - f.points[13, 1]))
    mw = rig.geometry.mouth_width
    assert gaps[0] < 0.08 * mw  # lips closed at rest
    assert gaps[1] > gaps[0] + 0.05 * mw
    # the detector saturates on wide synthetic openings: require no collapse, and a clear total opening
    assert gaps[2] > gaps[1] - 0.03 * mw
    assert gaps[2] > gaps[0] + 0.12 * mw


def test_lips_press_closes_open_jaw(renderer, prepared, rig, landmarker):
    neutral = render(renderer, prepared, rig)
    pressed = render(renderer, prepared, rig, jaw_open=0.8, lips_press=1.0)
    ys, xs = inner_mouth(rig)
    assert abs(lum(pressed)[ys, xs].mean() - lum(neutral)[ys, xs].mean()) < 12
    f = landmarker.detect(pressed[..., :3])
    assert f.points[14, 1] - f.points[13, 1] < 0.08 * rig.geometry.mouth_width


def test_blink_changes_eyes_not_mouth(renderer, prepared, rig):
    neutral = render(renderer, prepared, rig)
    blink = render(renderer, prepared, rig, blink_l=1.0, blink_r=1.0)
    lm = rig.landmarks
    for ids in ((33, 133, 159, 145), (263, 362, 386, 374)):
        ys, xs = box(lm[list(ids)], 1)
        d = np.abs(blink[ys, xs].astype(float) - neutral[ys, xs]).mean()
        assert d > 10
        # the closed lid is skin: no darker than the open eye (iris/pupil covered)
        assert lum(blink)[ys, xs].mean() >= lum(neutral)[ys, xs].mean() - 3
    mouth = box(lm[[61, 291, 0, 17]], 3)
    assert np.abs(blink[mouth].astype(float) - neutral[mouth]).max() <= 2


def test_smile_raises_mouth_corners(renderer, prepared, rig, landmarker):
    n = landmarker.detect(render(renderer, prepared, rig)[..., :3]).points
    s = landmarker.detect(render(renderer, prepared, rig, smile=1.0)[..., :3]).points
    rise = ((n[61, 1] - s[61, 1]) + (n[291, 1] - s[291, 1])) / 2
    widen = (s[291, 0] - s[61, 0]) - (n[291, 0] - n[61, 0])
    assert rise > 0.04 * rig.geometry.mouth_width
    assert widen > 0
    f = landmarker.detect(render(renderer, prepared, rig, frown=1.0)[..., :3]).points
    assert ((f[61, 1] - n[61, 1]) + (f[291, 1] - n[291, 1])) / 2 > 0.03 * rig.geometry.mouth_width


def test_head_yaw_moves_nose(renderer, prepared, rig, landmarker):
    n = landmarker.detect(render(renderer, prepared, rig)[..., :3]).points
    r = landmarker.detect(render(renderer, prepared, rig, head_yaw=20.0)[..., :3]).points
    l = landmarker.detect(render(renderer, prepared, rig, head_yaw=-20.0)[..., :3]).points
    assert r[1, 0] > n[1, 0] + 5 and l[1, 0] < n[1, 0] - 5
    p = landmarker.detect(render(renderer, prepared, rig, head_pitch=15.0)[..., :3]).points
    assert p[1, 1] > n[1, 1] + 3


def test_gaze_moves_iris(renderer, prepared, rig, landmarker):
    n = landmarker.detect(render(renderer, prepared, rig)[..., :3]).points
    g = landmarker.detect(render(renderer, prepared, rig, gaze_x=1.0)[..., :3]).points
    assert g[468, 0] > n[468, 0] + 0.5 and g[473, 0] > n[473, 0] + 0.5
    assert abs(g[33, 0] - n[33, 0]) < 1.5  # eye corners stay


@pytest.mark.parametrize("wh", [(256, 256), (512, 512), (1024, 1024), (320, 180), (200, 400), (16, 16)])
def test_output_shapes(renderer, prepared, wh):
    w, h = wh
    out = renderer.render(prepared, motion(jaw_open=0.5, head_yaw=10.0), w, h, alpha_matte=True)
    assert out.shape == (1, h, w, 4) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert out[..., 3].min() < 50 and out[..., 3].max() > 200  # matte: background and person


def test_alpha_matte_follows_person(renderer, prepared, rig):
    out = renderer.render(prepared, motion(), 256, 256, alpha_matte=True)[0]
    assert out[128, 128, 3] > 200 and out[5, 250, 3] < 60
    opaque = renderer.render(prepared, motion(), 256, 256)[0]
    assert np.all(opaque[..., 3] == 255)
    assert np.array_equal(opaque[..., :3], out[..., :3])


def test_non_square_is_centre_crop(renderer, prepared):
    sq = renderer.render(prepared, motion(smile=0.5), 400, 400)[0]
    wide = renderer.render(prepared, motion(smile=0.5), 400, 200)[0]
    assert np.abs(wide.astype(int) - sq[100:300]).max() <= 2


def test_batch_equals_singles(renderer, prepared):
    ms = np.concatenate([motion(jaw_open=0.7), motion(blink_l=1.0, head_roll=10.0), motion(smile=1.0, gaze_x=-1)])
    batch = renderer.render(prepared, ms, 256, 256)
    for i in range(3):
        single = renderer.render(prepared, ms[i:i + 1], 256, 256)[0]
        assert np.abs(batch[i].astype(int) - single).max() <= 1


def test_render_rejects_bad_args(renderer, prepared):
    with pytest.raises(InvalidInputError):
        renderer.render(prepared, motion(), 8, 8)
    with pytest.raises(InvalidInputError):
        renderer.render(prepared, np.zeros((1, NUM_CHANNELS + 1), np.float32), 64, 64)


def test_extreme_motion_is_finite(renderer, prepared):
    m = np.ones((1, NUM_CHANNELS), np.float32) * 50  # clipped to the valid ranges
    out = renderer.render(prepared, m, 128, 128)
    assert out.shape == (1, 128, 128, 4)


@pytest.mark.parametrize("name", ["st_happy.png", "st_sad.png", "lp_s4.jpg", "lp_s8.jpg", "st_art_1.png",
                                  "st_art_2.png", "st_art_6.png", "st_full4.jpeg"])
def test_shared_portraits_render(renderer, landmarker, name):
    path = PORTRAITS / name
    if not path.exists():
        pytest.skip(f"shared portrait {name} not available")
    rig = build_rig(decode_image(path.read_bytes()), landmarker)
    prep = renderer.prepare(rig)
    S = rig.size
    frames = renderer.render(prep, np.concatenate([motion(), motion(jaw_open=1.0)]), S, S)
    diff = np.abs(frames[0, ..., :3].astype(np.float32) - rig.image).mean()
    assert diff < 4
    ys, xs = inner_mouth(rig)
    assert lum(frames[1])[ys, xs].mean() < lum(frames[0])[ys, xs].mean() - 4
    f = landmarker.detect(frames[1, ..., :3])
    n = landmarker.detect(frames[0, ..., :3])
    assert (f.points[14, 1] - f.points[13, 1]) > (n.points[14, 1] - n.points[13, 1]) + 0.1 * rig.geometry.mouth_width


def test_eye_layer_is_identity_at_gate_zero(prepared):
    """With the lid up and the gaze centred the eye layer is skipped; rendering it would change nothing."""
    import torch

    from lpm_npc.render.eyes import composite_eyes, plan_eyes

    g = np.array([[[100.0, 120.0], [110.0, 116.0], [120.0, 115.0], [130.0, 116.0], [140.0, 120.0]]])
    upper = np.stack([g, g + [60.0, 0.0]])                      # (2, 1, 5, 2)
    lower = upper + [0.0, 8.0]
    corners = np.array([[[160.0, 120.0], [200.0, 120.0]], [[100.0, 120.0], [140.0, 120.0]]])
    args = (upper, lower, upper, np.zeros((2, 1)), np.zeros((2, 1, 2)), (8.0, 8.0), corners, 2.0, (0.0, 0.0),
            prepared.size, 256, 256)
    assert plan_eyes(*args) is None
    # force the layer on with a gate of exactly 0: the canvas must not change at all
    plan = plan_eyes(upper, lower, upper, np.zeros((2, 1)), np.full((2, 1, 2), 0.3), *args[5:])
    plan.gate[:] = 0.0
    canvas = torch.rand(1, 3, 256, 256) * 255
    before = canvas.clone()
    composite_eyes(canvas, (0, 0), plan, prepared.plate, prepared.iris_rgba, prepared.lid_colours)
    assert torch.equal(canvas, before)
    # with the gaze on, the same call does change the eyes
    plan = plan_eyes(upper, lower, upper, np.zeros((2, 1)), np.full((2, 1, 2), 0.3), *args[5:])
    composite_eyes(canvas, (0, 0), plan, prepared.plate, prepared.iris_rgba, prepared.lid_colours)
    assert not torch.equal(canvas, before)


def test_torch_path_matches_cpu_path(rig):
    """The grid_sample path (used on CUDA) and the CPU cv2.remap path render the same frames."""
    fast, ref = TorchRenderer(), TorchRenderer()
    ref.cpu_remap = False
    ms = np.concatenate([motion(), motion(jaw_open=0.8, blink_l=1.0, head_yaw=8.0, gaze_x=0.5),
                         motion(smile=1.0, head_pitch=-6.0, head_roll=5.0)])
    for w, h in ((256, 256), (320, 180)):
        a = fast.render(fast.prepare(rig), ms, w, h, alpha_matte=True).astype(np.float32)
        b = ref.render(ref.prepare(rig), ms, w, h, alpha_matte=True).astype(np.float32)
        assert a.shape == b.shape
        assert np.abs(a - b).mean() < 0.5
        assert np.percentile(np.abs(a - b), 99.9) < 8  # fixed- vs float-point sub-pixel sampling at sharp edges


def test_fused_cpu_kernels_match_the_torch_stages(rig):
    """The CPU path's numba kernels (geometry, backward map, eye and mouth layers) give what the torch
    stages give.

    The torch stages stay the reference (they serve CUDA and the ONNX export): one renderer runs the
    kernels, the other the torch stages on the same cv2 warp, over motions that reach every branch
    (blink and lid shadow, gaze, an open mouth with the lower-teeth hint, head turns) and several
    sizes, down to one where the eye and mouth boxes run into the frame border.
    """
    import torch

    from lpm_npc.render import cpu_kernels
    from lpm_npc.render.renderer import NEWTON_STEPS, backward_core

    assert cpu_kernels.AVAILABLE, "numba is a dependency: without it the CPU renderer is ~30 % slower"
    fused, ref = TorchRenderer(), TorchRenderer()
    ref.fused = False
    pf, pr = fused.prepare(rig), ref.prepare(rig)
    assert fused._fused(pf) and not ref._fused(pr)
    ms = np.concatenate([motion(jaw_open=0.9, blink_l=0.6, blink_r=0.3, head_yaw=8.0, gaze_x=0.6, gaze_y=-0.4),
                         motion(smile=0.8, jaw_open=0.4, mouth_round=0.3, head_pitch=-6.0, head_roll=5.0),
                         motion(blink_l=1.0, blink_r=1.0, squint=0.5, frown=0.5, jaw_open=0.2, gaze_x=-0.3),
                         motion(lips_press=1.0, head_yaw=-4.0)])
    # the posed vertices and the helper vertices (teeth without expression, lids without blinking)
    m = torch.from_numpy(ms)
    host_pos, host_helper, pos = fused._geometry(pf, m)
    ref_pos, ref_helper, _ = ref._geometry(pr, m)
    assert np.abs(host_pos - ref_pos).max() < 1e-3 and np.abs(host_helper - ref_helper).max() < 1e-3  # crop px
    assert np.abs(ref_pos - pr.rest_np).max() > 5.0   # the motions do move the face
    # the backward map on the full coarse grid, points of a turned head included
    cell = (pf.size - 1) / (pf.grid_size - 1)
    want = backward_core(pos, pf.rest[:, :2], pf.grid_vertex, pf.grid_bary, pf.base_grid_cf, cell)
    G = pf.grid_size
    got = cpu_kernels.backward_map(pos.numpy(), pf.rest_np, pf.grid_vertex.numpy(), pf.grid_bary.numpy(),
                                   pf.base_grid_cf[0].numpy(), 0, G, 0, G, cell, NEWTON_STEPS)
    assert float((want - torch.from_numpy(got)).abs().max()) < 0.01  # crop px
    # whole frames; the last batch keeps the head still, so only a subgrid moves (the kernel's box)
    still_head = np.concatenate([motion(jaw_open=0.6), motion(blink_l=1.0), motion(smile=0.5, brow_up=0.5)])
    for batch, w, h, alpha in ((ms, 256, 256, False), (ms, 320, 180, True), (ms, 40, 40, False),
                               (still_head, 256, 256, False)):
        a = fused.render(pf, batch, w, h, alpha_matte=alpha).astype(np.int16)
        b = ref.render(pr, batch, w, h, alpha_matte=alpha).astype(np.int16)
        d = np.abs(a - b)
        assert d.max() <= 2 and d.mean() < 0.01, (w, h, d.max(), d.mean())
    # every kernel ran with the argument types warm_up compiled: none compiles again on a live frame
    for name in ("deform", "height_table", "catmull_rom", "backward_map", "upsample_map", "eye_layer", "mouth_layer"):
        assert len(getattr(cpu_kernels, name).signatures) == 1, name


def test_planning_kernels_give_the_numpy_plans(rig, monkeypatch):
    """The eye and mouth layers' plans (contour height tables from Catmull-Rom lip lines, boxes, affine
    maps) are the same with the compiled loops as with the numpy steps."""
    import torch

    from lpm_npc.render import cpu_kernels

    r = TorchRenderer()
    p = r.prepare(rig)
    assert cpu_kernels.ready()
    ms = np.concatenate([motion(jaw_open=0.9, blink_l=0.6, head_yaw=8.0, gaze_x=0.6), motion(smile=0.8, jaw_open=0.3),
                         motion(blink_l=1.0, blink_r=1.0, mouth_round=0.6, jaw_open=0.5, head_roll=-6.0)])
    host_pos, host_helper, _ = r._geometry(p, torch.from_numpy(ms))
    plans = {}
    for use in (True, False):
        monkeypatch.setattr(cpu_kernels, "ready", lambda use=use: use)
        plans[use] = r._plan(p, host_pos, host_helper, ms, 256, 256, False)
    k, n = plans[True], plans[False]
    assert k.region == n.region and k.eye_plan.box == n.eye_plan.box and k.mouth_plan.box == n.mouth_plan.box
    for a, b in ((k.eye_plan.table, n.eye_plan.table), (k.mouth_plan.table, n.mouth_plan.table),
                 (k.eye_plan.affine, n.eye_plan.affine), (k.mouth_plan.affine, n.mouth_plan.affine)):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4
    assert np.ptp(n.mouth_plan.table[:, 1]) > 1.0   # the lower lip's heights vary: a real contour was tabled


def test_kernels_that_cannot_compile_leave_the_torch_path(rig, monkeypatch, caplog):
    """If numba cannot compile (no writable cache, a broken install), the renderer says so once and
    keeps rendering on its torch path instead of failing every frame."""
    import logging

    from lpm_npc.render import cpu_kernels

    def broken() -> None:
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(cpu_kernels, "_compile_all", broken)
    monkeypatch.setattr(cpu_kernels, "_warmed", False)
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", True)
    r = TorchRenderer()
    with caplog.at_level(logging.WARNING, logger="lpm_npc.render.cpu_kernels"):
        p = r.prepare(rig)
    assert "could not be compiled" in caplog.text and "NUMBA_CACHE_DIR" in caplog.text
    assert not r._fused(p)
    ref = TorchRenderer()
    ref.fused = False
    m = motion(jaw_open=0.6, blink_l=0.5, gaze_x=0.4)
    assert np.array_equal(r.render(p, m, 128, 128), ref.render(ref.prepare(rig), m, 128, 128))


@pytest.mark.parametrize("w", [dict(smile=0.9, squint=0.3, jaw_open=0.5),
                               dict(brow_inner_up=0.7, eye_wide=0.7, mouth_spread=0.4, jaw_open=0.6)])
def test_open_mouth_tapers_and_keeps_lower_lip(renderer, prepared, rig, w):
    """Talking with an emotion: the opening is widest in the middle and closes toward the corners, and
    the lower lip's red moves down with the jaw instead of being swallowed by the opening."""
    import torch

    from lpm_npc.character.geometry import LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER_LOWER

    def rings(m):
        pos = renderer.vertex_positions(prepared, torch.as_tensor(m))[0].numpy()
        return (pos[list(LIPS_INNER_UPPER), 1], pos[list(LIPS_INNER_LOWER), 1], pos[list(LIPS_OUTER_LOWER), 1])

    mw = rig.geometry.mouth_width
    iu, il, ol = rings(motion(**w))
    gap = il - iu
    centre = gap[4:7].max()
    assert centre > 0.12 * mw
    assert gap[1] < 0.15 * centre and gap[9] < 0.15 * centre   # nearly closed next to the corners
    assert gap[2] < 0.5 * centre and gap[8] < 0.5 * centre
    # lower-lip thickness (outer minus inner lower lip) kept within a pixel or so of the rest pose
    _, il0, ol0 = rings(motion())
    assert np.all((ol - il)[2:9] > 0.75 * (ol0 - il0)[2:9] - 1.0)
    # and the layer shades the opening: dark, darker at the back (top) than at the floor of the mouth
    out = render(renderer, prepared, rig, **w)
    lm = rig.landmarks
    cx = int(lm[[13, 14], 0].mean())
    col = lum(out)[:, cx - 2:cx + 3].mean(1)
    pos = renderer.vertex_positions(prepared, torch.as_tensor(motion(**w)))[0].numpy()
    top, bot = pos[13, 1], pos[14, 1]
    teeth_end = int(top + 0.1 * mw)
    interior = col[teeth_end + 2:int(bot) - 2]
    assert interior.max() < 90
    assert col[teeth_end + 2:teeth_end + 5].mean() < col[int(bot) - 6:int(bot) - 3].mean()
    # the upper teeth under the upper lip read as teeth (light), not grey
    assert col[int(top) + 3:int(top) + 6].max() > 150


@pytest.mark.parametrize("N,width,height,region", [(256, 256, 256, (40, 60, 220, 230)), (256, 256, 256, (0, 0, 256, 256)),
                                                    (512, 512, 384, (100, 3, 400, 380)), (300, 300, 200, (0, 0, 300, 200))])
@pytest.mark.parametrize("fused", [True, False])
def test_map_upsampling_is_grid_sample(N, width, height, region, fused):
    """The CPU path upsamples the coarse backward map separably (rows, then columns: a numba kernel, or
    two small matmuls without it); it must equal grid_sample (align_corners, border) at every output
    pixel of any region."""
    import torch
    import torch.nn.functional as F

    from lpm_npc.render.renderer import TorchRenderer

    r = TorchRenderer()
    r.fused = fused

    class P:
        size = 512
        device = torch.device("cpu")

    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 2, 96, 96, generator=g) * 511
    rx0, ry0, rx1, ry1 = region
    ogrid = r._output_grid(N, width, height, x.device)[:, ry0:ry1, rx0:rx1]
    side = 256
    ref = F.grid_sample(x * ((side - 1) / (P.size - 1)), ogrid.expand(3, -1, -1, -1), mode="bilinear",
                        padding_mode="border", align_corners=True).numpy()
    got = r._maps_cpu(P, x, N, width, height, side, region)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-3
