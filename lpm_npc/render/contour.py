"""Helpers for contour-bounded layers (mouth interior, eyes).

A layer lives in a local frame spanned by two corner points: u runs from -1 (corner a) to +1
(corner b), v is the signed distance (px) along the normal that points down the image. An
opening is the set of pixels between an upper and a lower contour, whose heights are
interpolated piecewise-linearly along u.

Split for speed: everything per batch item (frames, contour height tables, affine maps) is a
handful of numbers computed on the host in numpy once per frame; everything per pixel is torch.
Per-pixel coordinates come from ONE matmul of a cached [col, row, 1] pixel table with a per-item
affine matrix, and contour heights from ONE `grid_sample` of a small per-item table, so a layer
costs a fixed, small number of tensor ops whatever the batch and the number of contours.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.render import cpu_kernels

TABLE_SIZE = 160  # fine enough for functions of u such as tooth separation lines
TABLE_U = np.linspace(-1.0, 1.0, TABLE_SIZE)


class Frame:
    """Local frames (numpy) per item from corners a, b (N, 2)."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.o = (a + b) * 0.5
        ax = b - a
        self.half = np.maximum(np.linalg.norm(ax, axis=-1), 1e-3) * 0.5   # (N,)
        self.ex = ax / (2 * self.half[:, None])
        ey = np.stack([-self.ex[:, 1], self.ex[:, 0]], -1)
        self.ey = ey * np.where(ey[:, 1:2] < 0, -1.0, 1.0)

    def uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """u (normalised), v (px) of points (N, K, 2)."""
        d = p - self.o[:, None]
        return (d * self.ex[:, None]).sum(-1) / self.half[:, None], (d * self.ey[:, None]).sum(-1)

    def uv_affine(self, origin: np.ndarray) -> np.ndarray:
        """(N, 3, 2): [col, row, 1] of a pixel in a crop whose pixel (0, 0) is at `origin` (N, 2) -> u, v."""
        d = origin - self.o
        M = np.empty((len(self.o), 3, 2))
        M[:, 0, 0] = self.ex[:, 0] / self.half
        M[:, 1, 0] = self.ex[:, 1] / self.half
        M[:, 2, 0] = (d * self.ex).sum(-1) / self.half
        M[:, 0, 1] = self.ey[:, 0]
        M[:, 1, 1] = self.ey[:, 1]
        M[:, 2, 1] = (d * self.ey).sum(-1)
        return M


def height_table(frame: Frame, contours: list[np.ndarray]) -> np.ndarray:
    """(N, C, 1, TABLE_SIZE) heights v of each contour (N, K, 2) at uniform u in [-1, 1] (clamped ends)."""
    if cpu_kernels.ready() and len({c.shape for c in contours}) == 1:  # one compiled loop (same result)
        c64 = lambda a: np.ascontiguousarray(a, np.float64)  # noqa: E731 - the kernel's exact types
        return cpu_kernels.height_table(c64(frame.o), c64(frame.ex), c64(frame.ey), c64(frame.half),
                                        np.stack([c64(c) for c in contours], 1), TABLE_U)
    uv = [frame.uv(pts) for pts in contours]
    U = np.stack([a for a, _ in uv], 1)                               # (N, C, K)
    V = np.stack([b for _, b in uv], 1)
    N, C, K = U.shape
    order = np.argsort(U, axis=-1)
    R = N * C
    flat = (order + (np.arange(R) * K).reshape(N, C, 1)).reshape(-1)
    U = U.reshape(-1)[flat]                                            # sorted per row, flattened
    V = V.reshape(-1)[flat]
    # one searchsorted for every row: rows are shifted apart (|u| stays far below the shift)
    shift = np.repeat(np.arange(R, dtype=np.float64) * 1e4, K)
    rows = np.arange(R)[:, None] * 1e4
    cnt = np.searchsorted(U + shift, (TABLE_U[None, :] + rows).reshape(-1), side="right").reshape(R, -1)
    base = (np.arange(R) * K)[:, None]
    idx = np.clip(cnt - base, 1, K - 1) + base                       # (R, T) flat index of the upper knot
    u0, u1, v0, v1 = U[idx - 1], U[idx], V[idx - 1], V[idx]
    t = np.clip((TABLE_U - u0) / np.maximum(u1 - u0, 1e-6), 0.0, 1.0)
    return (v0 + t * (v1 - v0)).reshape(N, C, 1, -1).astype(np.float32)


_PIXELS: dict[tuple[int, int, str], torch.Tensor] = {}


def pixel_table(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1, h*w, 3) [col, row, 1] of a crop's pixels (cached)."""
    key = (h, w, str(device))
    t = _PIXELS.get(key)
    if t is None:
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        t = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w)], -1)[None].to(device)
        if len(_PIXELS) > 256:
            _PIXELS.clear()
        _PIXELS[key] = t
    return t


def lookup(table: torch.Tensor, grid_u0: torch.Tensor) -> torch.Tensor:
    """Heights (N, C, h, w) of every contour in `table` at grid (N, h, w, 2) = (u, 0) (clamped at the ends)."""
    return F.grid_sample(table, grid_u0, mode="bilinear", padding_mode="border", align_corners=True)


def ramp(x: torch.Tensor, width: float) -> torch.Tensor:
    """Anti-aliased step: 0 below -width/2, 1 above +width/2."""
    return (x * (1.0 / width) + 0.5).clamp_(0.0, 1.0)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)
