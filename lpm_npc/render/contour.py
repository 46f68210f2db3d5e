"""Batched helpers for contour-bounded layers (mouth interior, eyes) in torch.

A layer lives in a local frame spanned by two corner points: u runs from -1 (corner a) to +1
(corner b), v is the signed distance (px) along the normal that points down the image. An
opening is the set of pixels between an upper and a lower contour, whose heights are
interpolated piecewise-linearly along u.
"""

from __future__ import annotations

import torch


def box_of(points: torch.Tensor, margin: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box (x0, y0, x1, y1) around points (B, K, 2) of all batch items, or None if empty."""
    lo = points.amin(dim=(0, 1))
    hi = points.amax(dim=(0, 1))
    vals = torch.cat([lo, hi]).tolist()
    x0 = max(0, int(vals[0] - margin))
    y0 = max(0, int(vals[1] - margin))
    x1 = min(width, int(vals[2] + margin) + 2)
    y1 = min(height, int(vals[3] + margin) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


class LocalFrame:
    """Frame per batch item from corners a, b (B, 2)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.o = (a + b) * 0.5
        ax = b - a
        self.half = ax.norm(dim=-1).clamp_min(1e-3) * 0.5  # (B,)
        self.ex = ax / (2 * self.half[:, None])
        ey = torch.stack([-self.ex[:, 1], self.ex[:, 0]], -1)
        flip = torch.where(ey[:, 1:2] < 0, -1.0, 1.0)
        self.ey = ey * flip

    def uv_points(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (normalised), v (px) of points (B, K, 2)."""
        d = p - self.o[:, None]
        u = (d * self.ex[:, None]).sum(-1) / self.half[:, None]
        v = (d * self.ey[:, None]).sum(-1)
        return u, v

    def uv_box(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u, v (B, h, w) of the pixel centres xs (w,), ys (h,)."""
        dx = xs[None, None, :] - self.o[:, 0, None, None]
        dy = ys[None, :, None] - self.o[:, 1, None, None]
        u = (dx * self.ex[:, 0, None, None] + dy * self.ex[:, 1, None, None]) / self.half[:, None, None]
        v = dx * self.ey[:, 0, None, None] + dy * self.ey[:, 1, None, None]
        return u, v


def interp_heights(u_pts: torch.Tensor, v_pts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear v(u) through points (B, K) evaluated at u (B, ...); clamped at the ends."""
    B, K = u_pts.shape
    u_sorted, order = torch.sort(u_pts, dim=1)
    v_sorted = torch.gather(v_pts, 1, order)
    flat = u.reshape(B, -1).contiguous()
    idx = torch.searchsorted(u_sorted.contiguous(), flat).clamp(1, K - 1)
    u0 = torch.gather(u_sorted, 1, idx - 1)
    u1 = torch.gather(u_sorted, 1, idx)
    v0 = torch.gather(v_sorted, 1, idx - 1)
    v1 = torch.gather(v_sorted, 1, idx)
    t = ((flat - u0) / (u1 - u0).clamp_min(1e-6)).clamp(0.0, 1.0)
    return (v0 + t * (v1 - v0)).reshape(u.shape)


def ramp(x: torch.Tensor, width: float) -> torch.Tensor:
    """Anti-aliased step: 0 below -width/2, 1 above +width/2."""
    return (x / width + 0.5).clamp(0.0, 1.0)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)
