"""Landmarks, image decoding and the character rig (real mediapipe models, real portraits)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from lpm_npc.character.geometry import FACE_OVAL, NUM_MESH_LANDMARKS, TERMS
from lpm_npc.character.landmarks import FaceLandmarker, decode_image
from lpm_npc.character.rig import RIG_FORMAT_VERSION, CharacterRig, build_rig
from lpm_npc.errors import InvalidImageError, InvalidInputError, NoFaceError

PORTRAITS = Path("/work/shared/data/portraits")
HUMAN = ["st_happy.png", "st_sad.png", "lp_s4.jpg", "lp_s8.jpg", "st_art_1.png", "st_art_2.png",
         "st_art_6.png", "st_full4.jpeg"]
ANIMALS = ["lp_s25.jpg", "lp_s39.jpg", "lp_s40.jpg"]


@pytest.fixture(scope="module")
def landmarker():
    lm = FaceLandmarker()
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def astro_rig(astronaut, landmarker) -> CharacterRig:
    return build_rig(astronaut, landmarker)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _shared(name: str) -> Path:
    path = PORTRAITS / name
    if not path.exists():
        pytest.skip(f"shared portrait {name} not available")
    return path


# ---------------------------------------------------------------- decode
def test_decode_rgb_gray_rgba(astronaut):
    rgb = decode_image(_png(astronaut))
    assert rgb.shape == astronaut.shape and rgb.dtype == np.uint8
    assert np.array_equal(rgb, astronaut)
    gray = decode_image(_png(astronaut[..., 0]))
    assert gray.shape == astronaut.shape and np.array_equal(gray[..., 0], gray[..., 2])
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:32, :, 3] = 255  # top half opaque red, bottom transparent -> white
    out = decode_image(_png(rgba))
    assert out.shape == (64, 64, 3)
    assert tuple(out[10, 10]) == (255, 0, 0)
    assert tuple(out[50, 10]) == (255, 255, 255)


def test_decode_palette():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("data", [b"not an image", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_decode_rejects_garbage(data):
    with pytest.raises(InvalidImageError) as exc:
        decode_image(data)
    assert exc.value.message


def test_decode_rejects_too_large():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (9000, 16)).save(buf, format="PNG")
    with pytest.raises(InvalidImageError, match="8192"):
        decode_image(buf.getvalue())


# ---------------------------------------------------------------- landmarks
def test_detect_astronaut(landmarker, astronaut):
    f = landmarker.detect(astronaut)
    assert f.points.shape == (478, 3) and f.points.dtype == np.float32
    assert f.score >= 0.5
    x0, y0, x1, y1 = f.bbox
    nose = f.points[1]
    assert x0 < nose[0] < x1 and y0 < nose[1] < y1
    # semantic checks on the index tables: image-left eye corner 33 left of 263, chin below the nose, lips between
    assert f.points[33, 0] < f.points[263, 0]
    assert f.points[152, 1] > f.points[14, 1] > f.points[13, 1] > f.points[1, 1]
    assert f.points[10, 1] < f.points[168, 1]


def test_noise_has_no_face(landmarker):
    noise = np.random.default_rng(1).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="no human face"):
        landmarker.detect(noise)


def test_matte(landmarker, astronaut):
    m = landmarker.matte(astronaut)
    assert m.shape == astronaut.shape[:2] and m.dtype == np.uint8
    assert m[150, 230] > 200  # face
    assert m[20, 480] < 60  # background corner


@pytest.mark.parametrize("name", HUMAN)
def test_detects_shared_humans(landmarker, name):
    img = decode_image(_shared(name).read_bytes())
    f = landmarker.detect(img)
    assert f.score >= 0.5


@pytest.mark.parametrize("name", ANIMALS)
def test_rejects_shared_animals(landmarker, name):
    img = decode_image(_shared(name).read_bytes())
    with pytest.raises(NoFaceError):
        landmarker.detect(img)


# ---------------------------------------------------------------- rig
def test_rig_shapes(astro_rig):
    r = astro_rig
    S = r.image.shape[0]
    assert r.image.shape == (S, S, 3) and 512 <= S <= 1024
    assert r.matte.shape == (S, S)
    assert r.landmarks.shape == (478, 3)
    g = r.geometry
    V = g.vertices.shape[0]
    assert V > NUM_MESH_LANDMARKS
    assert g.basis.shape == (len(TERMS), V, 2)
    # anchors never move with expressions, except the rings under the chin that follow part of the jaw drop
    jaw = TERMS.index("jaw_eff")
    assert np.all(np.delete(g.basis[:, NUM_MESH_LANDMARKS:], jaw, axis=0) == 0)
    # ... and the image border stays still under every motion (expressions and head rotation)
    anchors = g.vertices[NUM_MESH_LANDMARKS:, :2]
    on_border = (anchors.min(1) < 1.0) | (anchors.max(1) > S - 2.0)
    assert on_border.sum() >= 8
    assert np.all(g.basis[jaw, NUM_MESH_LANDMARKS:][on_border] == 0)
    assert np.all(g.head_weight[NUM_MESH_LANDMARKS:][on_border] == 0)
    G = int(g.grid_size)
    assert g.grid_vertex.shape == (G * G, 3) and g.grid_vertex.max() < V
    assert np.allclose(g.grid_bary.sum(1), 1, atol=1e-4)
    # face ~40% of the crop width, above centre
    oval = r.landmarks[list(FACE_OVAL)]
    fw = oval[:, 0].max() - oval[:, 0].min()
    assert 0.3 * S < fw < 0.5 * S
    assert oval[:, 1].mean() < S / 2


def test_rig_barycentric_reconstruction(astro_rig):
    """The grid tables reproduce the grid points from the rest vertices."""
    g = astro_rig.geometry
    G = int(g.grid_size)
    S = astro_rig.size
    rec = (g.vertices[g.grid_vertex][..., :2] * g.grid_bary[..., None]).sum(1)
    t = np.linspace(0, S - 1, G)
    gx, gy = np.meshgrid(t, t)
    assert np.abs(rec - np.stack([gx.ravel(), gy.ravel()], 1)).max() < 0.05


def test_rig_save_load_roundtrip(astro_rig, tmp_path):
    path = tmp_path / "rig.npz"
    astro_rig.save(path)
    back = CharacterRig.load(path)
    assert np.array_equal(back.image, astro_rig.image)
    assert np.array_equal(back.matte, astro_rig.matte)
    assert np.array_equal(back.landmarks, astro_rig.landmarks)
    assert back.face_score == astro_rig.face_score
    assert back.num_references == astro_rig.num_references
    for k, v in astro_rig.geometry.to_arrays().items():
        assert np.array_equal(back.geometry.to_arrays()[k], v), k
    with np.load(path, allow_pickle=False) as z:
        assert int(z["format_version"]) == RIG_FORMAT_VERSION


def test_rig_small_source_upsampled(landmarker, astronaut):
    import cv2

    small = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)
    rig = build_rig(small, landmarker)
    assert rig.image.shape == (512, 512, 3)


def test_rig_extra_references(landmarker, astronaut):
    rig = build_rig(astronaut, landmarker, extra_references=[astronaut[:, ::-1].copy()])
    assert rig.num_references == 2
    assert len(rig.references_used) == 1
    noise = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    rig = build_rig(astronaut, landmarker, extra_references=[noise])  # reported, not an error (tests/test_references.py)
    assert rig.references_used == ["unused: no face found"] and rig.num_references == 2


def test_rig_rejects_bad_input(landmarker):
    with pytest.raises(InvalidInputError):
        build_rig(np.zeros((10, 10), np.float32), landmarker)


def test_crop_box_moves_inside_tight_source():
    """A tight portrait (face filling the image) gets a crop that stays inside the source where it can."""
    from lpm_npc.character.rig import MAX_FACE_SHARE, _fit_inside

    cx, cy, side = _fit_inside(128.0, 148.0, 250.0, face=100.0, w=256, h=256)
    assert side <= 256 and 100.0 / side <= MAX_FACE_SHARE + 1e-6
    assert cx - side / 2 >= -1e-6 and cx + side / 2 <= 256 + 1e-6
    assert cy - side / 2 >= -1e-6 and cy + side / 2 <= 256 + 1e-6
    # a face too big for the source: the face share is capped and the rest is filled by _crop
    cx, cy, side = _fit_inside(128.0, 128.0, 400.0, face=200.0, w=256, h=256)
    assert abs(200.0 / side - MAX_FACE_SHARE) < 1e-6


def test_crop_fill_is_not_replicated_border():
    """Outside the source the crop is a blurred reflection, not the edge row smeared down (streaks)."""
    from lpm_npc.character.rig import _crop

    rng = np.random.default_rng(3)
    src = (rng.random((200, 200, 3)) * 255).astype(np.uint8)
    src = np.ascontiguousarray(np.repeat(np.repeat(src[::10, ::10], 10, 0), 10, 1))  # blocky texture
    out = _crop(src, 100.0, 160.0, 200.0, 200)       # the lower 30% of the crop is below the source
    inside = out[:120].astype(np.float32)
    assert np.abs(inside - src[60:180].astype(np.float32)).mean() < 3   # inside: the source itself
    below = out[150:].astype(np.float32)
    edge = out[139:140].astype(np.float32)
    assert np.abs(below - edge).mean() > 5            # not the last row repeated
    assert below.std(axis=0).mean() > 1               # and not constant down each column
