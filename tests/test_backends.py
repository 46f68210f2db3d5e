"""Renderer backends: the same motion gives the same frame on every backend; batched render_many.

Tolerance between backends (0..255 levels): mean abs difference < 1.0 and 99.9th percentile < 8
(fixed-point cv2.remap vs float grid_sample at sharp edges). GPU tests skip without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpm_npc.character.landmarks import FaceLandmarker
from lpm_npc.character.rig import CharacterRig, build_rig
from lpm_npc.performance.motion import MotionFrame
from lpm_npc.render.backends import available_backends, make_renderer
from lpm_npc.render.renderer import RenderRequest
from lpm_npc.render.throughput import bare_render_throughput, talking_motions

SIZES = [(256, 256), (320, 180)]


@pytest.fixture(scope="module")
def rigs() -> tuple[CharacterRig, CharacterRig]:
    import skimage.data

    lm = FaceLandmarker()
    try:
        img = skimage.data.astronaut()
        # a mirrored portrait is a different image, hence a different rig (texture, mesh, layers)
        return build_rig(img, lm), build_rig(np.ascontiguousarray(img[:, ::-1]), lm)
    finally:
        lm.close()


def motion(**w: float) -> np.ndarray:
    return MotionFrame.from_dict(0.0, w).values


MOTIONS = np.stack([motion(), motion(jaw_open=0.8, blink_l=1.0, head_yaw=8.0, gaze_x=0.5),
                    motion(smile=1.0, head_pitch=-6.0, head_roll=5.0, blink_r=0.6),
                    motion(mouth_round=0.7, jaw_open=0.4, brow_up=0.8, gaze_y=-0.6, head_yaw=-5.0)])


def assert_close(a: np.ndarray, b: np.ndarray, mean: float = 1.0, p999: float = 8.0) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    d = np.abs(a.astype(np.float32) - b.astype(np.float32))
    assert d.mean() < mean, d.mean()
    assert np.percentile(d, 99.9) < p999, np.percentile(d, 99.9)


@pytest.fixture(scope="module")
def reference(rigs):
    r = make_renderer("torch", "cpu")
    return r, r.prepare(rigs[0])


@pytest.fixture(scope="module")
def ort_cpu(rigs, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    r = make_renderer("onnxruntime", "cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    return r, r.prepare(rigs[0])


def test_available_and_factory():
    names = available_backends()
    assert "torch:cpu" in names and "torch:cpu-gridsample" in names
    with pytest.raises(ValueError):
        make_renderer("nonsense")
    if "tensorrt:cuda" not in names:
        with pytest.raises(RuntimeError):
            make_renderer("tensorrt", "cuda")


@pytest.mark.parametrize("alpha", [False, True])
def test_torch_gridsample_and_onnxruntime_agree_with_cpu(reference, ort_cpu, rigs, alpha):
    ref, pref = reference
    gs = make_renderer("torch", "cpu-gridsample")
    pgs = gs.prepare(rigs[0])
    ort, port = ort_cpu
    for w, h in SIZES:
        a = ref.render(pref, MOTIONS, w, h, alpha)
        b = gs.render(pgs, MOTIONS, w, h, alpha)
        c = ort.render(port, MOTIONS, w, h, alpha)
        assert_close(a, b)
        assert_close(a, c)
        assert_close(b, c, mean=0.05, p999=2.0)   # the same float math: ONNX vs eager grid_sample


def test_onnx_files_cached(ort_cpu):
    r, _ = ort_cpu
    files = sorted(p.name for p in (r.cache_dir / "onnx").iterdir())
    assert any(f.startswith("geometry_") for f in files) and any(f.startswith("sample_") for f in files)


def _mixed_requests(p1, p2) -> list[RenderRequest]:
    reqs = []
    sizes = [(256, 256), (128, 96), (256, 256), (200, 300)]
    for i, m in enumerate(MOTIONS):
        for j, p in enumerate((p1, p2)):
            w, h = sizes[(i + j) % len(sizes)]
            reqs.append(RenderRequest(p, m, w, h, alpha_matte=(i == 3 and j == 1)))
    return reqs


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_render_many_mixed_rigs_and_sizes_equals_render(rigs, backend, tmp_path):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    r = make_renderer(backend, "cpu", cache_dir=tmp_path)
    p1, p2 = r.prepare(rigs[0]), r.prepare(rigs[1])
    reqs = _mixed_requests(p1, p2)
    out = r.render_many(reqs)
    assert len(out) == len(reqs)
    for rq, frame in zip(reqs, out):
        assert frame.shape == (rq.height, rq.width, 4) and frame.dtype == np.uint8
        single = r.render(rq.prepared, rq.motion[None], rq.width, rq.height, rq.alpha_matte)[0]
        # the batch shares one warped box: pixels differ by at most one level (layer crop rounding)
        assert np.abs(frame.astype(int) - single).max() <= 1
    # the two characters really are different pictures
    a = r.render(p1, MOTIONS[:1], 128, 128)[0].astype(int)
    b = r.render(p2, MOTIONS[:1], 128, 128)[0].astype(int)
    assert np.abs(a - b).mean() > 5


def test_render_many_conversions(reference):
    r, p = reference
    m = MOTIONS[1]
    rgba, bgra, flipped = r.render_many([RenderRequest(p, m, 160, 120), RenderRequest(p, m, 160, 120, bgra=True),
                                         RenderRequest(p, m, 160, 120, bgra=True, flip_y=True)])
    assert np.array_equal(bgra, rgba[..., [2, 1, 0, 3]])
    assert np.array_equal(flipped, bgra[::-1])
    assert flipped.flags["C_CONTIGUOUS"]


def test_render_many_empty_and_bad_motion(reference):
    from lpm_npc.errors import InvalidInputError

    r, p = reference
    assert r.render_many([]) == []
    with pytest.raises(InvalidInputError):
        r.render_many([RenderRequest(p, np.zeros(3, np.float32), 64, 64)])


def test_bare_render_throughput(rigs):
    res = bare_render_throughput(64, 2, 0.05, rig=rigs[0])
    assert res["frames"] >= 2 and res["frames_per_s"] > 0 and res["ms_per_frame"] > 0
    assert talking_motions(10).shape == (10, MOTIONS.shape[1])


# ---------------------------------------------------------------- GPU (skip cleanly without one)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@cuda
def test_torch_cuda_agrees_with_cpu(reference, rigs):
    ref, pref = reference
    r = make_renderer("torch", "cuda")
    p = r.prepare(rigs[0])
    for w, h in SIZES:
        for alpha in (False, True):
            assert_close(ref.render(pref, MOTIONS, w, h, alpha), r.render(p, MOTIONS, w, h, alpha))
    out = r.render_many(_mixed_requests(p, r.prepare(rigs[1])))
    assert len(out) == 8


def _ort_has(provider: str) -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return torch.cuda.is_available() and provider in ort.get_available_providers()


@pytest.mark.parametrize("device,provider", [("cuda", "CUDAExecutionProvider"),
                                             ("tensorrt-ep", "TensorrtExecutionProvider")])
def test_onnxruntime_gpu_agrees_with_cpu(reference, rigs, tmp_path, device, provider):
    if not _ort_has(provider):
        pytest.skip(f"onnxruntime {provider} or GPU not available")
    ref, pref = reference
    r = make_renderer("onnxruntime", device, cache_dir=tmp_path)
    p = r.prepare(rigs[0])
    for w, h in SIZES:
        assert_close(ref.render(pref, MOTIONS, w, h), r.render(p, MOTIONS, w, h))


def test_tensorrt_engine_agrees_and_is_cached(reference, rigs, tmp_path):
    if "tensorrt:cuda" not in available_backends():
        pytest.skip("tensorrt package or GPU not available")
    ref, pref = reference
    r = make_renderer("tensorrt", "cuda", cache_dir=tmp_path)
    p = r.prepare(rigs[0])
    for w, h in SIZES:
        assert_close(ref.render(pref, MOTIONS, w, h), r.render(p, MOTIONS, w, h))
    engines = list((tmp_path / "trt").glob("*.engine"))
    assert len(engines) == 2
    # a second renderer loads the cached engines instead of building them
    r2 = make_renderer("tensorrt", "cuda", cache_dir=tmp_path)
    assert_close(r.render(p, MOTIONS, 256, 256), r2.render(r2.prepare(rigs[0]), MOTIONS, 256, 256), 0.01, 1.0)


@cuda
def test_gpu_jpeg_decodes_to_the_gpu_pixels(rigs):
    """JPEG encoded on the GPU (render/gpu_jpeg.py) gives back the CUDA renderer's pixels, flipped when asked."""
    import cv2

    r = make_renderer("torch", "cuda")
    if not r.encodes_jpeg:
        pytest.skip("torchvision with CUDA JPEG encoding is not installed")
    p = r.prepare(rigs[0])
    pixels = r.render(p, MOTIONS, 256, 256)
    for flip in (False, True):
        files = r.render_many([RenderRequest(p, m, 256, 256, flip_y=flip, jpeg_quality=90) for m in MOTIONS])
        for k, f in enumerate(files):
            assert f.ndim == 1 and f[:2].tobytes() == b"\xff\xd8"
            rgb = cv2.cvtColor(cv2.imdecode(f, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            want = pixels[k, ::-1, :, :3] if flip else pixels[k, :, :, :3]
            assert np.abs(rgb.astype(int) - want.astype(int)).mean() < 2.5


@cuda
def test_direct_nvjpeg_encodes_each_frame_of_a_batch_as_its_own_file(rigs):
    """nvJPEG called directly (render/nvjpeg.py) queues a batch with one encoder state per image and
    waits once: each file must decode to its own frame (not a neighbour's), in batches longer than
    one chunk of states too, and with an odd size (4:4:4 there)."""
    import cv2
    import torch

    from lpm_npc.render.nvjpeg import MAX_STATES, BatchEncoder

    enc = BatchEncoder.load()
    if enc is None:
        pytest.skip("libnvjpeg not found beside torchvision, in pip's nvidia packages or the CUDA toolkit")
    r = make_renderer("torch", "cuda")
    p = r.prepare(rigs[0])
    for size in (256, 255):
        pixels = r.render(p, MOTIONS, size, size)[..., :3]
        n = MAX_STATES + 3
        batch = np.stack([pixels[k % len(pixels)] for k in range(n)])
        batch[:, :16, :16] = np.arange(n, dtype=np.uint8)[:, None, None, None] * 3   # tell the frames apart
        files = enc.encode(torch.from_numpy(batch).cuda(), 90)
        assert len(files) == n
        for k, f in enumerate(files):
            rgb = cv2.cvtColor(cv2.imdecode(f, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert rgb.shape == batch[k].shape
            assert np.abs(rgb.astype(int) - batch[k].astype(int)).mean() < 2.5
            assert abs(int(rgb[4:12, 4:12].mean()) - 3 * k) <= 4
