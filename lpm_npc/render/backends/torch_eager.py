"""Torch eager backend: the shared implementation in `lpm_npc.render.renderer` (CPU: cv2.remap; CUDA: grid_sample)."""

from __future__ import annotations

from lpm_npc.render.renderer import TorchRenderer


def make(device: str = "cpu", grid_sample: bool = False) -> TorchRenderer:
    """device "cpu" or "cuda[:n]"; grid_sample=True forces the torch grid_sample path on CPU."""
    r = TorchRenderer(device=device)
    if grid_sample:
        r.cpu_remap = False
        r.name = f"{r.name}-gridsample"
    return r
