"""Mouth interior layer: cavity, upper teeth, lower-teeth hint and tongue inside the lip opening.

Works in a mouth-local frame (u along the mouth width, v down) in output pixels and touches only
the mouth's bounding box. Colours come from the portrait (see geometry._mouth_colours).

Details are scaled to the output resolution: tooth separation lines only appear where a tooth is
several pixels wide (at small sizes they read as fangs), and the upper-teeth band is a soft, shaded
strip just under the upper lip rather than a bright block. The inner edge of both lips is pulled
toward the lip colour where the portrait's own teeth were baked into the lip texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.render import cpu_kernels
from lpm_npc.render.contour import TABLE_U, Frame, height_table, lookup, pixel_table, ramp, smoothstep

# tooth boundaries along u (incisors wider in the middle), as a share of the half mouth width
_TOOTH_EDGES = (0.0, 0.19, -0.19, 0.35, -0.35)
_LUMA = (0.299, 0.587, 0.114)
_LUMA_T: dict[str, torch.Tensor] = {}


def _luma(dev: torch.device) -> torch.Tensor:
    key = str(dev)
    t = _LUMA_T.get(key)
    if t is None:
        t = _LUMA_T[key] = torch.tensor(_LUMA, device=dev)
    return t


@dataclass
class MouthPlan:
    """Host-side (numpy) per-frame plan of the mouth layer."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 output px
    affine: np.ndarray              # (B, 3, 3) [col, row, 1] -> u, 0, v
    table: np.ndarray               # (B, 3, 1, T) heights of the inner upper lip, inner lower lip, teeth line
    max_gap: float                  # widest opening over the batch (px)
    mouth_width: float              # rest mouth width, output px


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# channels of the mouth table: contour heights, then functions of u only (evaluated on the host)
_CH = ("vu", "vl", "t_top", "t_bot", "inside", "lip_side", "cav", "tongue_side", "tongue_shade", "tongue_off",
       "low_side", "teeth_side", "teeth_shade")
_C = {n: i for i, n in enumerate(_CH)}


_PROFILES: dict[float, np.ndarray] = {}


def _u_functions(mw: float) -> np.ndarray:
    """(len(_CH) - 4, T) profiles along u of the layer's horizontal shading (mouth width mw, output px)."""
    key = round(mw, 3)
    prof = _PROFILES.get(key)
    if prof is None:
        if len(_PROFILES) > 64:
            _PROFILES.clear()
        prof = _PROFILES[key] = _u_profiles(mw)
    return prof


def _u_profiles(mw: float) -> np.ndarray:
    u = TABLE_U
    au = np.abs(u)
    au2 = u * u
    shade = 0.97 - 0.45 * au2
    tooth_px = 0.19 * 0.5 * mw
    sep_k = 0.09 * float(np.clip((tooth_px - 4.0) / 4.0, 0.0, 1.0))  # no separation lines on small teeth
    if sep_k > 0:
        width = max(0.8, 0.006 * mw) / (0.5 * mw)
        shade = shade * (1.0 - sep_k * np.exp(-(((u[:, None] - np.asarray(_TOOTH_EDGES)) / width) ** 2)).sum(1))
    return np.stack([
        np.clip((1.0 - au) * 40.0, 0.0, 1.0),          # inside the corners
        _smooth((0.95 - au) / 0.25),                    # lip-edge fix
        0.45 + 0.55 * (1 - au2),                        # cavity: darker toward the corners
        _smooth((0.75 - au) / 0.3),                     # tongue extent
        0.75 + 0.25 * (1 - au2),                        # tongue shading
        0.02 * mw * (1 - au2),                          # tongue mound
        _smooth((0.5 - au) / 0.3),                      # lower teeth extent
        _smooth((0.66 - au) / 0.32) * 0.85,             # upper teeth extent
        shade,                                          # upper teeth shading (+ separations)
    ])


def catmull_rom(p: np.ndarray, n: int = 3) -> np.ndarray:
    """(B, K, 2) open polyline -> (B, (K - 1) * n + 1, 2) through the same points, with rounded joints."""
    if cpu_kernels.ready() and p.shape[1] >= 2:  # one compiled loop (same result)
        return cpu_kernels.catmull_rom(np.ascontiguousarray(p, np.float64), int(n))
    ext = np.concatenate([2 * p[:, :1] - p[:, 1:2], p, 2 * p[:, -1:] - p[:, -2:-1]], 1)
    p0, p1, p2, p3 = ext[:, :-3], ext[:, 1:-2], ext[:, 2:-1], ext[:, 3:]
    s = (np.arange(n) / n)[None, None, :, None]
    s2, s3 = s * s, s * s * s
    q = 0.5 * (2 * p1[:, :, None] + (p2 - p0)[:, :, None] * s + (2 * p0 - 5 * p1 + 4 * p2 - p3)[:, :, None] * s2
               + (3 * p1 - p0 - 3 * p2 + p3)[:, :, None] * s3)
    return np.concatenate([q.reshape(p.shape[0], -1, 2), p[:, -1:]], 1)


_catmull_rom = catmull_rom


@dataclass
class InteriorTexture:
    """Device copy of a mouth interior taken from a reference image (character/references.py)."""

    texture: torch.Tensor  # (1, 3, H, T) float32 0..255: rows t 0 (inner upper lip) .. 1 (inner lower lip)
    gap: torch.Tensor      # (1, 1, 1, T) float32 the reference's opening height at each u, in mouth widths


def prepare_interior(interior, device: torch.device | str = "cpu") -> InteriorTexture | None:
    """InteriorTexture from a `MouthInterior` (or anything with .texture (H, T, 3) uint8 and .gap (T,)); None -> None."""
    if interior is None:
        return None
    tex = torch.from_numpy(np.ascontiguousarray(interior.texture, np.float32)).permute(2, 0, 1)[None]
    gap = torch.from_numpy(np.ascontiguousarray(interior.gap, np.float32)).view(1, 1, 1, -1)
    return InteriorTexture(texture=tex.contiguous().to(device), gap=gap.to(device))


def plan_mouth(upper: np.ndarray, lower: np.ndarray, teeth_line: np.ndarray, mouth_width: float,
               width: int, height: int) -> MouthPlan | None:
    """Plan the mouth layer from the inner lips (B, 11, 2) in output px; None when every mouth is closed."""
    fr = Frame(upper[:, 0], upper[:, -1])
    gap = fr.uv(lower)[1] - fr.uv(upper)[1]
    max_gap = float(gap[:, 1:-1].max())
    if max_gap <= 0.0:  # a closed mouth covers nothing: the layer would be exact identity
        return None
    pts = np.concatenate([upper, lower], 1)
    mw = mouth_width
    margin = 2.0 + 0.1 * mw
    flat = pts.reshape(-1, 2)       # one reduce axis: numpy reduces over (0, 1) much more slowly
    x0, y0 = np.maximum(np.floor(flat.min(axis=0) - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(flat.max(axis=0) + margin + 1), [width, height]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    B = upper.shape[0]
    M = np.zeros((B, 3, 3))
    M[:, :, [0, 2]] = fr.uv_affine(np.repeat(np.array([[x0, y0]], np.float64), B, 0))
    # the lip contours are sampled at 11 points: round the opening between them (a polygon reads as a puppet)
    hts = height_table(fr, [catmull_rom(upper), catmull_rom(lower), catmull_rom(teeth_line)])   # (B, 3, 1, T)
    table = np.empty((B, len(_CH), 1, hts.shape[-1]), np.float32)
    table[:, 0:2] = hts[:, 0:2]
    # upper teeth hang from the neutral upper lip line, shorter toward the sides
    # (never below the current upper lip: when a smile lifts the lip, the teeth edge stays just under it)
    table[:, 2, 0] = np.minimum(hts[:, 2, 0], hts[:, 0, 0] + 0.01 * mw) - 0.015 * mw
    table[:, 3, 0] = table[:, 2, 0] + 0.085 * mw * (1.0 - 0.5 * TABLE_U ** 2)
    table[:, 4:, 0] = _u_functions(mw)[None]
    return MouthPlan(box=(int(x0), int(y0), int(x1), int(y1)), affine=M.astype(np.float32), table=table,
                     max_gap=max_gap, mouth_width=mw)


def composite_mouth(canvas: torch.Tensor, origin: tuple[int, int], plan: MouthPlan, colours: torch.Tensor,
                    interior: InteriorTexture | None = None) -> None:
    """Composite the mouth interior into canvas (B, C, h, w) float 0..255 in place; pixel (0, 0) is `origin`.

    With `interior` (a texture taken from an open-mouth reference of the character) the inside of the
    opening is that texture warped into the current inner-lip contour; without it, a drawn cavity,
    teeth and tongue. The lip-edge fixes and the coverage of the opening are the same for both.
    """
    B = canvas.shape[0]
    rx0, ry0 = origin
    bx0, by0, bx1, by1 = plan.box
    x0, y0, x1, y1 = bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0
    h, w = y1 - y0, x1 - x0
    dev = canvas.device
    mw = float(plan.mouth_width)  # a Python float: a numpy scalar costs a tensor conversion per op
    # non_blocking: a blocking copy to the GPU would wait for every kernel queued before it
    co = torch.matmul(pixel_table(h, w, dev), torch.from_numpy(plan.affine).to(dev, non_blocking=True)).view(B, h, w, 3)
    t = lookup(torch.from_numpy(plan.table).to(dev, non_blocking=True), co[..., 0:2])
    v = co[..., 2]
    vu, vl = t[:, 0], t[:, 1]
    col = colours
    gap = (vl - vu).clamp_min(0.0)
    soft = max(1.0, 0.011 * mw)
    d_up = v - vu   # below the upper lip
    d_lo = vl - v   # above the lower lip
    # coverage of the opening; a closed mouth (gap <= 0) covers nothing, so the layer is then exact identity
    opening = (ramp(d_up, soft) * ramp(d_lo, soft) * t[:, _C["inside"]] * (gap * (0.5 / soft)).clamp(max=1.0))
    region = canvas[:, :3, y0:y1, x0:x1]

    # lips: where the portrait's own teeth were baked into the inner lip edge, pull pale pixels toward
    # the lip colour (only as far as the mouth is open, so a closed mouth is left as it is)
    luma = _luma(dev)
    lum = torch.einsum("bchw,c->bhw", region, luma)
    pale = ((lum - ((col[0] * luma).sum() + 8.0)) * (1.0 / 40.0)).clamp_(0.0, 1.0)
    band = torch.exp(d_lo.clamp(max=0.0) * (1.0 / (0.035 * mw + 0.5))) * ramp(-d_lo, 1.0) \
        + torch.exp(d_up.clamp(max=0.0) * (1.0 / (0.02 * mw + 0.5))) * ramp(-d_up, 1.0)
    lip_w = band.mul_(pale).mul_((gap * (1.0 / (0.03 * mw + 1.0))).clamp_(max=1.0)).mul_(0.85 * t[:, _C["lip_side"]])
    region = torch.lerp(region, (col[0] * 0.9)[None, :, None, None].expand_as(region), lip_w[:, None])

    if interior is not None:
        colour = _interior_colour(interior, co[..., 0], d_up, d_lo, gap, mw, col[3])
    else:
        colour = _drawn_colour(t, col, v, d_up, d_lo, gap, mw, plan.max_gap)
    # the lips roll into the mouth: darken their inner edge a little so the opening meets them softly
    # (scaled by the gap, so a closed mouth is left exactly as it is)
    out_d = torch.maximum(-d_up, -d_lo).clamp_min(0.0)
    rim = torch.exp_(out_d.mul_(-1.0 / (0.025 * mw + 0.5))).mul_(t[:, _C["inside"]]) \
        .mul_((gap * (1.0 / (0.04 * mw + 1.0))).clamp_(max=1.0))
    region.mul_(rim.mul_(-0.28).add_(1.0)[:, None])
    canvas[:, :3, y0:y1, x0:x1] = region.lerp_(colour, opening[:, None])


def _interior_colour(interior: InteriorTexture, u: torch.Tensor, d_up: torch.Tensor, d_lo: torch.Tensor,
                     gap: torch.Tensor, mw: float, cavity: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) colour of the reference's mouth interior warped into the current opening.

    Rows of the texture run from the inner upper lip (t = 0) to the inner lower lip (t = 1) of the
    reference, whose opening at u was gap_ref(u) mouth widths. An opening narrower than that shows the
    reference's upper part at its own scale hanging from the upper lip and its lower part standing on
    the lower lip, blended across the middle (the lips cover the rest, as when a real mouth closes:
    teeth keep their size). A wider opening keeps both halves at their size too and fills the middle
    with the dark cavity colour (a reference with clenched teeth must not become a wall of teeth).
    """
    B = u.shape[0]
    g_ref = lookup(interior.gap, torch.stack([u, torch.zeros_like(u)], -1))[:, 0] * mw   # (B, h, w) px
    span = g_ref.clamp_min(1e-3)
    t_top = (d_up / span).clamp(0.0, 1.0)
    t_bot = (1.0 - d_lo / span).clamp(0.0, 1.0)
    tex = interior.texture.expand(B, -1, -1, -1)
    top = F.grid_sample(tex, torch.stack([u, t_top * 2 - 1], -1), mode="bilinear", padding_mode="border",
                        align_corners=True)
    bot = F.grid_sample(tex, torch.stack([u, t_bot * 2 - 1], -1), mode="bilinear", padding_mode="border",
                        align_corners=True)
    w = smoothstep(d_up / (gap + 1e-3))
    # a narrower opening lets less light in than the reference's: darken with the share of the
    # reference opening that is open now, the floor of the mouth (tongue) more than the upper teeth
    lit = smoothstep(gap / (g_ref + 1e-3))
    shade = (0.8 + 0.2 * lit) * (1 - w) + (0.45 + 0.55 * lit) * w
    colour = (top + (bot - top) * w[:, None]) * shade[:, None]
    # wider than the reference: the middle, out of reach of both halves, is the dark cavity
    mid = ramp(torch.minimum(d_up, d_lo) - 0.5 * g_ref, 0.15 * g_ref + 1.0) * ramp(gap - g_ref, 0.1 * g_ref + 1.0)
    colour = colour + (cavity[None, :, None, None] * (0.6 + 0.4 * w[:, None]) - colour) * mid[:, None]
    # a light shadow right under the upper lip and above the lower lip (the texture has its own shading)
    lip_shadow = 1.0 - 0.15 * torch.exp(-d_up.clamp_min(0) * (1.0 / (0.02 * mw + 0.5))) \
        - 0.1 * torch.exp(-d_lo.clamp_min(0) * (1.0 / (0.025 * mw + 0.5)))
    return colour * lip_shadow[:, None]


def _drawn_colour(t: torch.Tensor, col: torch.Tensor, v: torch.Tensor, d_up: torch.Tensor, d_lo: torch.Tensor,
                  gap: torch.Tensor, mw: float, max_gap: float) -> torch.Tensor:
    """(B, 3, h, w) colour of the drawn interior: cavity, tongue, lower-teeth hint, upper teeth."""
    vl = v + d_lo
    # cavity: dark, darkest at the back under the upper teeth and toward the corners, a little light
    # reaching the floor of the mouth in the middle
    depth = smoothstep(d_up / (gap + 1e-3))
    cav_u = t[:, _C["cav"]]
    colour = col[3][None, :, None, None] * ((0.4 + 0.9 * depth * cav_u) * cav_u)[:, None]
    # tongue: a dim, low mound near the lower lip (in shadow: it must not read as a second lower lip)
    tongue_top = vl - 0.45 * gap.clamp(max=0.2 * mw) - t[:, _C["tongue_off"]]
    t_w = ramp(v - tongue_top, 0.08 * mw + 1.0) * t[:, _C["tongue_side"]] \
        * (0.6 * smoothstep(gap * (1.0 / (0.14 * mw + 1.0))))
    tongue = col[4][None, :, None, None] * ((0.35 + 0.25 * depth) * t[:, _C["tongue_shade"]])[:, None]
    colour = colour.lerp_(tongue, t_w[:, None])
    if max_gap > 0.12 * mw:  # lower teeth: a faint hint at wide openings (exactly 0 below that gap)
        lt_h = 0.04 * mw
        lt_w = ramp(lt_h - d_lo, 0.4 * lt_h + 1.0) * t[:, _C["low_side"]] \
            * (0.3 * smoothstep((gap - 0.12 * mw) * (1.0 / (0.1 * mw + 1.0))))
        colour = colour.lerp_((col[2] * 0.5)[None, :, None, None].expand_as(colour), lt_w[:, None])
    # upper teeth just under the upper lip: off-white in the middle, falling into warm shadow toward
    # the corners and right under the lip (shadow mixes toward the cavity colour, not toward grey)
    t_top, t_bot = t[:, _C["t_top"]], t[:, _C["t_bot"]]
    ut_w = ramp(t_bot - v, max(1.0, 0.02 * mw)) * ramp(v - t_top, 1.0) * t[:, _C["teeth_side"]]
    lit = t[:, _C["teeth_shade"]] * (0.72 + 0.28 * smoothstep(d_up * (1.0 / (0.04 * mw + 1.0))))
    teeth = col[3][None, :, None, None] + (col[2] - col[3])[None, :, None, None] * lit[:, None]
    colour = colour.lerp_(teeth, ut_w[:, None])
    # a soft shadow under the upper lip and above the lower lip
    lip_shadow = 1.0 - 0.3 * torch.exp_(d_up.clamp_min(0).mul_(-1.0 / (0.02 * mw + 0.5))) \
        - 0.3 * torch.exp_(d_lo.clamp_min(0).mul_(-1.0 / (0.025 * mw + 0.5)))
    return colour.mul_(lip_shadow[:, None])
