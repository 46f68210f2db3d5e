"""JPEG encoding on the GPU: nvJPEG through `torchvision.io.encode_jpeg`, one batched call per tick.

On the CUDA path the rendered frames are already on the device. Encoding them there sends ~60 KB per
512x512 frame over PCIe (measured on an H100 at quality 90, docs/gpu_check_h100.json) instead of 1 MB
of pixels, and frees the 2-4 ms of CPU that OpenCV's encoder takes per 512x512 frame (at 64 NPCs x 30
fps that is 4-8 cores). Without nvJPEG (its library comes with torchvision's CUDA wheels, the CUDA
toolkit or pip's nvidia packages), or on CPU, the session encodes with OpenCV as before
(`lpm_npc.encode`).

The encoder is nvJPEG called directly (`render/nvjpeg.py`: the whole batch queued, one wait for the GPU,
4:2:0 chroma) where its library loads, else torchvision's `encode_jpeg` (one image at a time, two
waits each). `LPM_NPC_GPU_JPEG=torchvision` picks torchvision's, to compare the two.
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
import torch

log = logging.getLogger(__name__)
_direct_failed = False   # nvJPEG called directly failed its first encode: torchvision's from then on


@functools.lru_cache(maxsize=1)
def _batch_encoder():
    """nvJPEG called directly (render/nvjpeg.py), or None (not found, failed, or torchvision's asked for)."""
    if _direct_failed or os.environ.get("LPM_NPC_GPU_JPEG", "").strip().lower() == "torchvision":
        return None
    from .nvjpeg import BatchEncoder

    return BatchEncoder.load()


@functools.lru_cache(maxsize=8)
def available(device: str) -> bool:
    """Whether frames on `device` can be JPEG-encoded there (a CUDA device with nvJPEG, directly or
    through torchvision, checked once by encoding a small image)."""
    global _direct_failed
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return False
    probe = torch.zeros((1, 16, 16, 3), dtype=torch.uint8, device=device)
    enc = _batch_encoder()
    if enc is not None:
        try:
            if len(enc.encode(probe, 85)[0]) > 0:
                log.info("JPEG frames are encoded on the GPU (nvJPEG, whole batches)")
                return True
        except Exception as exc:  # noqa: BLE001 - fall back to torchvision's encoder
            log.info("nvJPEG called directly failed (%s); trying torchvision's encoder", exc)
        _direct_failed = True
        _batch_encoder.cache_clear()
    try:
        from torchvision.io import encode_jpeg
    except Exception as exc:  # noqa: BLE001 - missing, or built for another torch
        log.info("JPEG frames are encoded on the CPU: torchvision is not usable here (%s); "
                 "pip install torchvision to encode them on the GPU", exc)
        return False
    try:
        out = encode_jpeg([probe[0].permute(2, 0, 1).contiguous()], quality=85)
        ok = len(out) == 1 and out[0].numel() > 0
    except Exception as exc:  # noqa: BLE001 - a torchvision without CUDA encoding
        log.info("JPEG frames are encoded on the CPU: torchvision cannot encode on %s (%s)", device, exc)
        return False
    if ok:
        log.info("JPEG frames are encoded on the GPU (nvJPEG via torchvision)")
    return ok


def encode_batch(frames: torch.Tensor, quality: int, flip_y: bool = False) -> list[np.ndarray]:
    """(B, H, W, 3 or 4) uint8 frames on a CUDA device -> B JPEG files (1-D uint8 arrays on the host).

    The alpha channel, if any, is dropped (JPEG has none), as the CPU encoder does."""
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.dtype != torch.uint8:
        raise ValueError(f"expected (B, H, W, 3|4) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
    rgb = frames[..., :3]
    if flip_y:
        rgb = rgb.flip(1)
    enc = _batch_encoder()
    if enc is not None:
        return enc.encode(rgb.contiguous(), int(quality))
    from torchvision.io import encode_jpeg

    chw = rgb.permute(0, 3, 1, 2)
    files = encode_jpeg([chw[i].contiguous() for i in range(chw.shape[0])], quality=int(quality))
    sizes = [int(f.numel()) for f in files]
    host = torch.cat([f.reshape(-1) for f in files]).cpu().numpy()
    out, at = [], 0
    for n in sizes:
        out.append(host[at:at + n])
        at += n
    return out

