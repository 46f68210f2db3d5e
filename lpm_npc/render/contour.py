"""Batched helpers for contour-bounded layers (mouth interior, eyes) in torch.

A layer lives in a local frame spanned by two corner points: u runs from -1 (corner a) to +1
(corner b), v is the signed distance (px) along the normal that points down the image. An
opening is the set of pixels between an upper and a lower contour, whose heights are
interpolated piecewise-linearly along u.

Per pixel, contour heights are read from a small table (the contours resampled at `TABLE_SIZE`
uniform u values) by one `grid_sample`, so a layer costs a fixed, small number of tensor ops
however many contours it uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TABLE_SIZE = 48


class LocalFrame:
    """Frame per batch item from corners a, b (N, 2)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.o = (a + b) * 0.5
        ax = b - a
        self.half = ax.norm(dim=-1).clamp_min(1e-3) * 0.5  # (N,)
        self.ex = ax / (2 * self.half[:, None])
        ey = torch.stack([-self.ex[:, 1], self.ex[:, 0]], -1)
        self.ey = ey * torch.where(ey[:, 1:2] < 0, -1.0, 1.0)

    def uv_points(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (normalised), v (px) of points (N, K, 2)."""
        d = p - self.o[:, None]
        u = (d * self.ex[:, None]).sum(-1) / self.half[:, None]
        v = (d * self.ey[:, None]).sum(-1)
        return u, v

    def uv_box(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u, v (N, h, w) of pixel centres xs (N, w) or (w,), ys (N, h) or (h,)."""
        if xs.dim() == 1:
            xs = xs[None]
        if ys.dim() == 1:
            ys = ys[None]
        dx = (xs - self.o[:, 0, None])[:, None, :]   # (N, 1, w)
        dy = (ys - self.o[:, 1, None])[:, :, None]   # (N, h, 1)
        inv = 1.0 / self.half
        u = dx * (self.ex[:, 0] * inv)[:, None, None] + dy * (self.ex[:, 1] * inv)[:, None, None]
        v = dx * self.ey[:, 0, None, None] + dy * self.ey[:, 1, None, None]
        return u, v


def interp_heights(u_pts: torch.Tensor, v_pts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear v(u) through points (N, K) evaluated at u (N, M); clamped at the ends."""
    N, K = u_pts.shape
    u_sorted, order = torch.sort(u_pts, dim=1)
    v_sorted = torch.gather(v_pts, 1, order)
    flat = u.reshape(N, -1).contiguous()
    idx = torch.searchsorted(u_sorted.contiguous(), flat).clamp(1, K - 1)
    lo = torch.gather(torch.stack([u_sorted, v_sorted], 1), 2, (idx - 1)[:, None].expand(-1, 2, -1))
    hi = torch.gather(torch.stack([u_sorted, v_sorted], 1), 2, idx[:, None].expand(-1, 2, -1))
    t = ((flat - lo[:, 0]) / (hi[:, 0] - lo[:, 0]).clamp_min(1e-6)).clamp(0.0, 1.0)
    return (lo[:, 1] + t * (hi[:, 1] - lo[:, 1])).reshape(u.shape)


def height_table(u_pts: torch.Tensor, v_pts: torch.Tensor) -> torch.Tensor:
    """Contours (N, C, K) u/v points -> table (N, C, 1, TABLE_SIZE) of heights at uniform u in [-1, 1]."""
    N, C, K = u_pts.shape
    us = torch.linspace(-1.0, 1.0, TABLE_SIZE, device=u_pts.device).expand(N * C, -1)
    h = interp_heights(u_pts.reshape(N * C, K), v_pts.reshape(N * C, K), us)
    return h.view(N, C, 1, TABLE_SIZE)


def lookup(table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Heights (N, C, h, w) of every contour in `table` at pixel u (N, h, w) (clamped at the ends)."""
    grid = torch.stack([u, torch.zeros_like(u)], -1)
    return F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)


def ramp(x: torch.Tensor, width: float) -> torch.Tensor:
    """Anti-aliased step: 0 below -width/2, 1 above +width/2."""
    return (x * (1.0 / width) + 0.5).clamp_(0.0, 1.0)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)
