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

from lpm_npc.render.contour import LocalFrame, height_table, lookup, ramp, smoothstep

# tooth boundaries along u (incisors wider in the middle), as a share of the half mouth width
_TOOTH_EDGES = (0.0, 0.19, -0.19, 0.35, -0.35)
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class MouthFrame:
    """Per-frame mouth contours in output pixels."""

    upper: torch.Tensor        # (B, 11, 2) inner upper lip, corner to corner
    lower: torch.Tensor        # (B, 11, 2) inner lower lip
    teeth_line: torch.Tensor   # (B, 11, 2) where the upper teeth hang from (inner upper lip without expression)
    mouth_width: float         # rest mouth width in output px
    colours: torch.Tensor      # (5, 3) lip, skin, teeth, cavity, tongue (0..255)


def _frame(m: MouthFrame) -> LocalFrame:
    return LocalFrame(m.upper[:, 0], m.upper[:, -1])


def mouth_box(m: MouthFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Box (4,) x0, y0, x1, y1 in output px over the batch (lip bands included), and the largest gap (px)."""
    pts = torch.cat([m.upper, m.lower], 1)
    margin = 2.0 + 0.1 * m.mouth_width
    box = torch.cat([pts.amin(dim=(0, 1)) - margin, pts.amax(dim=(0, 1)) + margin + 1.0])
    fr = _frame(m)
    gap = fr.uv_points(m.lower)[1] - fr.uv_points(m.upper)[1]
    return box, gap[:, 1:-1].amax()


def composite_mouth(canvas: torch.Tensor, origin: tuple[int, int], m: MouthFrame, box: list[float]) -> None:
    """Composite the mouth interior into canvas (B, 4, h, w) float 0..255 in place; pixel (0, 0) is `origin`."""
    B, _, Hc, Wc = canvas.shape
    rx0, ry0 = origin
    x0 = max(int(np.floor(box[0])) - rx0, 0)
    y0 = max(int(np.floor(box[1])) - ry0, 0)
    x1 = min(int(np.ceil(box[2])) - rx0, Wc)
    y1 = min(int(np.ceil(box[3])) - ry0, Hc)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    dev = canvas.device
    mw = m.mouth_width
    fr = _frame(m)
    uu, vu_pts = fr.uv_points(m.upper)
    ul, vl_pts = fr.uv_points(m.lower)
    ut, vt_pts = fr.uv_points(m.teeth_line)
    table = height_table(torch.stack([uu, ul, ut], 1), torch.stack([vu_pts, vl_pts, vt_pts], 1))
    xs = torch.arange(x0 + rx0, x1 + rx0, device=dev, dtype=torch.float32)
    ys = torch.arange(y0 + ry0, y1 + ry0, device=dev, dtype=torch.float32)
    u, v = fr.uv_box(xs, ys)
    hts = lookup(table, u)
    vu, vl, vt = hts[:, 0], hts[:, 1], hts[:, 2]
    col = m.colours
    au = u.abs()
    au2 = au * au
    gap = (vl - vu).clamp_min(0.0)
    soft = max(0.7, 0.004 * mw)
    inside_u = ((1.0 - au) * 40.0).clamp(0.0, 1.0)
    # coverage of the opening; a closed mouth (gap <= 0) covers nothing, so the layer is then exact identity
    opening = ramp(v - vu, soft) * ramp(vl - v, soft) * inside_u * (gap * (0.5 / soft)).clamp(max=1.0)
    region = canvas[:, :3, y0:y1, x0:x1]

    # lips: where the portrait's own teeth were baked into the inner lip edge, pull pale pixels toward
    # the lip colour (only as far as the mouth is open, so a closed mouth is left as it is)
    lip = col[0][None, :, None, None]
    luma = torch.tensor(_LUMA, device=dev)
    lum = (region * luma[None, :, None, None]).sum(1)
    pale = ((lum - float(col[0] @ luma) - 8.0) * (1.0 / 40.0)).clamp(0.0, 1.0)
    open_f = (gap * (1.0 / (0.03 * mw + 1.0))).clamp(0.0, 1.0)
    band = torch.exp(-(v - vl).clamp_min(0.0) * (1.0 / (0.035 * mw + 0.5))) * ramp(v - vl, 1.0) \
        + torch.exp(-(vu - v).clamp_min(0.0) * (1.0 / (0.02 * mw + 0.5))) * ramp(vu - v, 1.0)
    lip_w = (0.85 * band * pale * open_f * smoothstep((0.95 - au) / 0.25))[:, None]
    region = region + (lip * 0.9 - region) * lip_w

    # cavity, darker toward the corners and the back
    depth = smoothstep((v - vu) / (gap + 1e-3))
    colour = col[3][None, :, None, None] * (0.5 + 0.5 * (1 - au2))[:, None]
    # tongue: a low mound near the lower lip, visible once the mouth is open enough
    tongue_top = vl - 0.5 * gap.clamp(max=0.2 * mw) - 0.02 * mw * (1 - au2)
    t_w = ramp(v - tongue_top, 0.05 * mw + 1.0) * smoothstep((0.75 - au) / 0.3) \
        * (0.8 * smoothstep(gap / (0.12 * mw + 1.0)))
    tongue = col[4][None, :, None, None] * (0.7 + 0.3 * depth[:, None]) * (0.75 + 0.25 * (1 - au2))[:, None]
    colour = colour + (tongue - colour) * t_w[:, None]
    # lower teeth: a faint, shaded hint just above the lower lip at wide openings
    lt_h = 0.04 * mw
    lt_w = ramp(v - (vl - lt_h), 0.4 * lt_h + 1.0) * smoothstep((0.5 - au) / 0.3) \
        * (0.3 * smoothstep((gap - 0.12 * mw) / (0.1 * mw + 1.0)))
    colour = colour + (col[2][None, :, None, None] * 0.6 - colour) * lt_w[:, None]
    # upper teeth hanging from the neutral upper lip line: a soft band whose height follows the opening
    t_top = vt - 0.015 * mw
    t_len = (0.085 * mw) * (1.0 - 0.5 * au2)
    t_bot = t_top + t_len
    edge = max(1.0, 0.02 * mw)
    ut_w = ramp(t_bot - v, edge) * ramp(v - t_top, 1.0) * smoothstep((0.72 - au) / 0.3) * 0.9
    shade = (1.0 - 0.55 * au2) * (0.62 + 0.38 * smoothstep((v - vu) / (0.045 * mw + 1.0)))
    shade = shade * (1.0 - 0.12 * smoothstep((v - t_bot + 0.3 * t_len) / (0.3 * t_len + 1.0)))
    tooth_px = 0.19 * 0.5 * mw
    sep_k = 0.09 * float(np.clip((tooth_px - 4.0) / 4.0, 0.0, 1.0))
    if sep_k > 0:
        uw = u * (0.5 * mw / max(0.8, 0.006 * mw))
        centres = torch.tensor(_TOOTH_EDGES, device=dev) * (0.5 * mw / max(0.8, 0.006 * mw))
        sep = 1.0 - sep_k * torch.exp(-((uw[..., None] - centres) ** 2)).sum(-1)
        shade = shade * sep
    teeth = col[2][None, :, None, None] * shade[:, None]
    colour = colour + (teeth - colour) * ut_w[:, None]
    # a soft shadow under the upper lip and above the lower lip
    lip_shadow = 1.0 - 0.4 * torch.exp(-(v - vu).clamp_min(0) * (1.0 / (0.03 * mw + 0.5))) \
        - 0.25 * torch.exp(-(vl - v).clamp_min(0) * (1.0 / (0.025 * mw + 0.5)))
    colour = colour * lip_shadow[:, None]
    canvas[:, :3, y0:y1, x0:x1] = region + (colour - region) * opening[:, None]
