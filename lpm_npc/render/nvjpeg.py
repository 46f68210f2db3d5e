"""Batched JPEG encoding with NVIDIA's nvJPEG library, called directly (ctypes).

torchvision's `encode_jpeg` on CUDA encodes the images of a list one after another, and waits for the
GPU twice per image (`cudaStreamSynchronize` after the encode and again before fetching the bytes),
under a process-wide lock, always with 4:4:4 chroma. In the render service that made JPEG the largest
share of the CPU per frame at 64 NPCs (py-spy on an H100: about a third of the render thread's time;
the service ran at 1.0 core and every NPC's frame waited for it). This module queues every image of a
batch on the caller's CUDA stream (after the kernels that drew the frames), each image with an encoder
state of its own, waits for the GPU once, then copies each file back; with 4:2:0 chroma (as OpenCV's
encoder on the CPU path writes) where the size allows it. ctypes lets go of Python's GIL in each call,
so a second render thread can plan its batch meanwhile. Measured on an H100 (tools/gpu_jpeg_ab.py, 64
frames of 512x512 at quality 85): 8.7 and 8.8 ms per batch in two runs against torchvision's 12.9 and
13.0 ms; 37.6 KB per frame against 47.3 KB; mean absolute difference to the pixels 1.48 levels, as
OpenCV's CPU encoder (1.48), against 1.24 (4:4:4). Spreading a batch over 4 or 8 extra streams was
slower (12.0 and 11.2 ms), so there is one.

The encoder states are made on first use, up to MAX_STATES: the render service's warm-up encodes a
batch of that many 512x512 frames, so no NPC waits for them (made mid-run, they stalled every session
~200 ms).

The library is the one torchvision (or the CUDA toolkit, or pip's nvidia-nvjpeg) brings; nothing is
downloaded. `BatchEncoder.load()` returns None where it cannot be found or does not work (no GPU, no
library), and the caller keeps torchvision's encoder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# nvjpeg.h
NVJPEG_MAX_COMPONENT = 4
NVJPEG_CSS_444, NVJPEG_CSS_420 = 0, 2
NVJPEG_INPUT_RGBI = 5            # interleaved RGB, one plane
MAX_STATES = 64                  # encoder states (each holds the GPU buffers of one image): images per wait


class NvjpegImage(ctypes.Structure):
    _fields_ = [("channel", ctypes.c_void_p * NVJPEG_MAX_COMPONENT),
                ("pitch", ctypes.c_size_t * NVJPEG_MAX_COMPONENT)]


class NvjpegError(RuntimeError):
    pass


def _candidates() -> list[str]:
    """Where libnvjpeg may be: beside torchvision (its wheels bundle it), pip's nvidia packages, the
    CUDA toolkit, the loader's path."""
    found: list[str] = []
    try:
        import torchvision

        tv = Path(torchvision.__file__).parent
        found += sorted(glob.glob(str(tv.parent / "torchvision.libs" / "libnvjpeg*.so*")))
        found += sorted(glob.glob(str(tv / "libnvjpeg*.so*")))
    except Exception:  # noqa: BLE001 - torchvision is optional
        pass
    try:
        import nvidia  # pip's nvidia-* packages (namespace package)

        for root in list(getattr(nvidia, "__path__", [])):
            found += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvjpeg.so*")))
    except Exception:  # noqa: BLE001
        pass
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if root:
            found += sorted(glob.glob(os.path.join(root, "lib64", "libnvjpeg.so*")))
    name = ctypes.util.find_library("nvjpeg")
    if name:
        found.append(name)
    return found


def _load_library() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.nvjpegEncodeImage  # noqa: B018 - the encoder's entry points are there
            log.debug("nvJPEG from %s", path)
            return lib
        except (OSError, AttributeError):
            continue
    return None


class BatchEncoder:
    """Encodes (B, H, W, 3) uint8 CUDA frames to B JPEG files with one wait for the GPU per batch.

    Each image of a batch has an encoder state of its own. One batch at a time: two threads encoding
    together measured 1.6x to 3x slower per batch than one (H100, 64 x 512^2), so calls take turns."""

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.nvjpegCreateSimple.argtypes = [ctypes.POINTER(vp)]
        lib.nvjpegEncoderStateCreate.argtypes = [vp, ctypes.POINTER(vp), vp]
        lib.nvjpegEncoderParamsCreate.argtypes = [vp, ctypes.POINTER(vp), vp]
        lib.nvjpegEncoderParamsSetQuality.argtypes = [vp, ctypes.c_int, vp]
        lib.nvjpegEncoderParamsSetSamplingFactors.argtypes = [vp, ctypes.c_int, vp]
        lib.nvjpegEncodeImage.argtypes = [vp, vp, vp, ctypes.POINTER(NvjpegImage), ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int, vp]
        lib.nvjpegEncodeRetrieveBitstream.argtypes = [vp, vp, vp, ctypes.POINTER(sz), vp]
        for fn in ("nvjpegCreateSimple", "nvjpegEncoderStateCreate", "nvjpegEncoderParamsCreate",
                   "nvjpegEncoderParamsSetQuality", "nvjpegEncoderParamsSetSamplingFactors", "nvjpegEncodeImage",
                   "nvjpegEncodeRetrieveBitstream"):
            getattr(lib, fn).restype = ctypes.c_int
        self._handle = vp()
        self._check(lib.nvjpegCreateSimple(ctypes.byref(self._handle)), "nvjpegCreateSimple")
        self._lock = threading.Lock()
        self._states: list = []         # encoder states, image j of a chunk uses states[j]
        self._params: dict = {}         # (quality, chroma) -> encoder parameters

    @classmethod
    def load(cls) -> "BatchEncoder | None":
        lib = _load_library()
        if lib is None:
            return None
        try:
            return cls(lib)
        except Exception as exc:  # noqa: BLE001 - no usable GPU, or a library without the encoder
            log.info("nvJPEG found but not usable (%s)", exc)
            return None

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise NvjpegError(f"{what} failed with nvJPEG status {status}")

    def _params_for(self, quality: int, css: int):
        params = self._params.get((quality, css))
        if params is None:
            params = ctypes.c_void_p()
            self._check(self._lib.nvjpegEncoderParamsCreate(self._handle, ctypes.byref(params), None),
                        "nvjpegEncoderParamsCreate")
            self._check(self._lib.nvjpegEncoderParamsSetQuality(params, int(quality), None),
                        "nvjpegEncoderParamsSetQuality")
            self._check(self._lib.nvjpegEncoderParamsSetSamplingFactors(params, css, None),
                        "nvjpegEncoderParamsSetSamplingFactors")
            self._params[(quality, css)] = params
        return params

    def _state(self, j: int, stream: int):
        while len(self._states) <= j:
            s = ctypes.c_void_p()
            self._check(self._lib.nvjpegEncoderStateCreate(self._handle, ctypes.byref(s), stream),
                        "nvjpegEncoderStateCreate")
            self._states.append(s)
        return self._states[j]

    def encode(self, rgb, quality: int) -> list[np.ndarray]:
        """rgb: (B, H, W, 3) uint8 torch tensor on a CUDA device, written on the current stream. Returns B
        JPEG files (1-D uint8 arrays on the host)."""
        import torch

        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8 or not rgb.is_cuda:
            raise ValueError(f"expected (B, H, W, 3) uint8 CUDA frames, got {tuple(rgb.shape)} {rgb.dtype}")
        rgb = rgb.contiguous()
        B, H, W = int(rgb.shape[0]), int(rgb.shape[1]), int(rgb.shape[2])
        css = NVJPEG_CSS_420 if H % 2 == 0 and W % 2 == 0 else NVJPEG_CSS_444
        stream = torch.cuda.current_stream(rgb.device)   # the frames were drawn on it: no wait needed
        sid = int(stream.cuda_stream)
        with self._lock:
            params = self._params_for(int(quality), css)
            lib, h = self._lib, self._handle
            out: list[np.ndarray] = []
            frame_bytes = H * W * 3
            base = int(rgb.data_ptr())
            for start in range(0, B, MAX_STATES):
                chunk = range(start, min(B, start + MAX_STATES))
                for j, i in enumerate(chunk):
                    img = NvjpegImage()
                    img.channel[0] = base + i * frame_bytes
                    img.pitch[0] = W * 3
                    self._check(lib.nvjpegEncodeImage(h, self._state(j, sid), params, ctypes.byref(img),
                                                      NVJPEG_INPUT_RGBI, W, H, sid), "nvjpegEncodeImage")
                stream.synchronize()   # the one wait for the GPU (the encodes of the whole chunk)
                for j, _ in enumerate(chunk):
                    n = ctypes.c_size_t(0)
                    self._check(lib.nvjpegEncodeRetrieveBitstream(h, self._states[j], None, ctypes.byref(n), sid),
                                "nvjpegEncodeRetrieveBitstream (size)")
                    buf = np.empty(n.value, np.uint8)
                    self._check(lib.nvjpegEncodeRetrieveBitstream(h, self._states[j], buf.ctypes.data,
                                                                  ctypes.byref(n), sid),
                                "nvjpegEncodeRetrieveBitstream")
                    out.append(buf[:n.value])
            return out
