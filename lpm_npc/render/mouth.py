"""Mouth interior layer: cavity, upper teeth, lower-teeth hint and tongue inside the lip opening.

Works in a mouth-local frame (u along the mouth width, v down) in output pixels and touches only
the mouth's bounding box. Colours come from the portrait (see geometry._mouth_colours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lpm_npc.render.contour import LocalFrame, box_of, interp_heights, ramp, smoothstep

# tooth boundaries along u (incisors wider in the middle), as a share of the half mouth width
_TOOTH_EDGES = (0.0, 0.19, 0.35)


@dataclass
class MouthInputs:
    """Per-frame mouth contours in output pixels."""

    upper: torch.Tensor        # (B, 11, 2) inner upper lip, corner to corner
    lower: torch.Tensor        # (B, 11, 2) inner lower lip
    teeth_line: torch.Tensor   # (B, 11, 2) where the upper teeth hang from (inner upper lip without expression)
    mouth_width: float         # rest mouth width in output px
    colours: torch.Tensor      # (5, 3) lip, skin, teeth, cavity, tongue (0..255)


def composite_mouth(out: torch.Tensor, m: MouthInputs) -> None:
    """Composite the mouth interior into `out` (B, 4, H, W) float 0..255, in place."""
    B, _, H, W = out.shape
    mw = m.mouth_width
    pts = torch.cat([m.upper, m.lower], 1)
    box = box_of(pts, margin=2.0, width=W, height=H)
    if box is None:
        return
    x0, y0, x1, y1 = box
    fr = LocalFrame(m.upper[:, 0], m.upper[:, -1])
    uu, vu_pts = fr.uv_points(m.upper)
    ul, vl_pts = fr.uv_points(m.lower)
    _, vt_pts = fr.uv_points(m.teeth_line)
    dev = out.device
    xs = torch.arange(x0, x1, device=dev, dtype=torch.float32)
    ys = torch.arange(y0, y1, device=dev, dtype=torch.float32)
    u, v = fr.uv_box(xs, ys)
    vu = interp_heights(uu, vu_pts, u)
    vl = interp_heights(ul, vl_pts, u)
    vt = interp_heights(uu, vt_pts, u)
    soft = max(0.7, 0.004 * mw)
    inside_u = (1.0 - u.abs()).clamp(0.0, 1.0)
    opening = ramp(v - vu, soft) * ramp(vl - v, soft) * (inside_u * 40.0).clamp(0.0, 1.0)
    if float(opening.amax()) <= 0.0:
        return

    col = m.colours
    au = u.abs()
    gap = (vl - vu).clamp_min(0.0)
    # cavity, darker toward the corners and the back
    depth = smoothstep((v - vu) / (gap + 1e-3))
    cav = col[3][None, :, None, None] * (0.55 + 0.45 * (1 - au * au))[:, None]  # (B, 3, h, w)
    # tongue: a low mound near the lower lip, visible once the mouth is open enough
    tongue_top = vl - 0.55 * gap.clamp(max=0.22 * mw) - 0.02 * mw * (1 - au * au)
    t_w = ramp(v - tongue_top, 0.04 * mw) * smoothstep((0.8 - au) / 0.3) * 0.9
    tongue = col[4][None, :, None, None] * (0.75 + 0.25 * depth[:, None])
    colour = cav + (tongue - cav) * t_w[:, None]
    # lower teeth hint just above the lower lip
    lt_h = 0.045 * mw
    lt_w = ramp(v - (vl - lt_h), 0.25 * lt_h) * smoothstep((0.6 - au) / 0.3) * 0.45
    lt_col = col[2][None, :, None, None] * 0.7
    colour = colour + (lt_col - colour) * lt_w[:, None]
    # upper teeth hanging from the (neutral) upper lip line
    t_top = vt - 0.012 * mw
    t_bot = t_top + 0.11 * mw * (1.0 - 0.45 * au * au)
    ut_w = ramp(t_bot - v, max(1.0, 0.015 * mw)) * ramp(v - t_top, 1.0) * smoothstep((0.85 - au) / 0.35)
    shade = (1.0 - 0.75 * au ** 1.5) * (0.7 + 0.3 * smoothstep((v - vu) / (0.05 * mw)))
    shade = shade * (0.9 + 0.1 * smoothstep((t_bot - v) / (0.05 * mw)))
    sep = torch.ones_like(u)
    for e in _TOOTH_EDGES:
        for sgn in ((1.0,) if e == 0.0 else (1.0, -1.0)):
            sep = sep - 0.07 * torch.exp(-(((u - sgn * e) * (mw * 0.5)) / max(0.6, 0.006 * mw)) ** 2)
    teeth = col[2][None, :, None, None] * (shade * sep)[:, None]
    colour = colour + (teeth - colour) * ut_w[:, None]
    # a soft shadow under the upper lip and above the lower lip
    lip_shadow = 1.0 - 0.35 * torch.exp(-(v - vu).clamp_min(0) / (0.025 * mw)) \
        - 0.2 * torch.exp(-(vl - v).clamp_min(0) / (0.02 * mw))
    colour = colour * lip_shadow[:, None]
    region = out[:, :3, y0:y1, x0:x1]
    a = opening[:, None]
    out[:, :3, y0:y1, x0:x1] = region + (colour - region) * a
