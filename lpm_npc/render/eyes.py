"""Eye layer: the eye content stays put (no squashing) while the lids slide over it; gaze moves the iris.

At prepare time each eye gets an iris-free 'plate' (the iris inpainted with sclera) and an iris
RGBA texture (alpha = iris disk inside the rest eye opening). Per frame, inside the current lid
opening, the plate is sampled rigidly (similarity from the eye corners) and the iris is sampled
shifted by the gaze offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.render.contour import (
    TABLE_U,
    Frame,
    height_table,
    lookup,
    pixel_table,
    ramp,
    smoothstep,
)


def lid_colours(image: np.ndarray, landmarks: np.ndarray, eye_upper: np.ndarray) -> np.ndarray:
    """(2, 2, 3) float32: per eye the lid skin colour and the lash-line colour."""
    out = np.zeros((2, 2, 3), np.float32)
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    for row in range(2):
        up = landmarks[eye_upper[row], :2]
        eye_w = float(np.linalg.norm(up[-1] - up[0]))
        skin, lash = [], []
        for k in range(2, 7):
            x = int(np.clip(up[k, 0], 0, w - 1))
            y = up[k, 1]
            for dy, bucket in ((-0.12, skin), (-0.16, skin), (-0.2, skin), (-0.02, lash), (-0.05, lash)):
                yy = int(np.clip(y + dy * eye_w, 0, h - 1))
                bucket.append(img[yy, x])
        s = np.median(np.array(skin), 0)
        l_arr = np.array(lash)
        lum = l_arr @ np.array([0.299, 0.587, 0.114], np.float32)
        out[row, 0] = s
        out[row, 1] = np.minimum(l_arr[np.argsort(lum)[: max(1, len(lum) // 2)]].mean(0), s * 0.6)
    return out


def build_eye_textures(image: np.ndarray, landmarks: np.ndarray, eye_upper: np.ndarray, eye_lower: np.ndarray,
                       iris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (plate RGB float32 (S,S,3), iris alpha float32 (S,S) 0..1)."""
    h, w = image.shape[:2]
    plate = image.copy()
    alpha = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for row in range(2):
        poly = np.concatenate([landmarks[eye_upper[row], :2], landmarks[eye_lower[row][::-1], :2]])
        open_m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(open_m, [np.round(poly * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
        cx, cy, r = (float(v) for v in iris[row])
        r = max(r, 1.0)
        disk = np.clip(r + 0.75 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2), 0, 1)
        a = disk * (open_m.astype(np.float32) / 255.0)
        alpha = np.maximum(alpha, a)
        # sclera colour: bright opening pixels away from the iris
        ring = (open_m > 128) & (disk <= 0) & (np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) > 1.3 * r)
        px = image[ring].astype(np.float32)
        if len(px) >= 4:
            lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
            sclera = np.median(px[lum >= np.median(lum)], 0)
        else:
            sclera = np.array([225, 220, 215], np.float32)
        x0, x1 = int(max(0, cx - 4 * r)), int(min(w, cx + 4 * r + 1))
        y0, y1 = int(max(0, cy - 3 * r)), int(min(h, cy + 3 * r + 1))
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        tmp = image[y0:y1, x0:x1].copy()
        om = open_m[y0:y1, x0:x1] > 60
        tmp[~om] = sclera.astype(np.uint8)
        hole = ((disk[y0:y1, x0:x1] > 0) | (np.sqrt((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2)
                                            < r + 1.5)).astype(np.uint8)
        filled = cv2.inpaint(tmp, hole, max(2.0, r * 0.5), cv2.INPAINT_TELEA)
        # a little shading: sclera is darker toward the corners and under the lid
        sub = plate[y0:y1, x0:x1]
        sel = (hole > 0) & om
        sub[sel] = filled[sel]
    return plate.astype(np.float32), alpha


@dataclass
class EyePlan:
    """Host-side (numpy) per-frame plan of the eye layer for both eyes, as 2B items (eye-major)."""

    origins: list[tuple[int, int]]  # per eye, output px of crop pixel (0, 0)
    size: tuple[int, int]           # common crop (w, h)
    gate: np.ndarray                # (2B,) layer weight
    blinking: bool                  # any lid below its open position (else the lid terms are exactly 0)
    affine: np.ndarray              # (2B, 3, 7) [col, row, 1] -> u, 0, v, plate x, y, iris x, y (normalised)
    table: np.ndarray               # (2B, 5, 1, T) upper, lower and open upper lid heights; in-eye and side profiles
    eye_height: np.ndarray          # (2B,) rest eye opening height, output px

    @property
    def box(self) -> tuple[int, int, int, int]:
        (ax, ay), (bx, by) = self.origins
        w, h = self.size
        return min(ax, bx), min(ay, by), max(ax, bx) + w, max(ay, by) + h


def plan_eyes(upper: np.ndarray, lower: np.ndarray, upper_open: np.ndarray, blink: np.ndarray,
              gaze_offset: np.ndarray, eye_heights: tuple[float, float], rest_corners: np.ndarray,
              to_crop_scale: float, to_crop_offset: tuple[float, float], crop_size: int,
              width: int, height: int) -> EyePlan | None:
    """Plan the eye layer, or None when it would change nothing.

    upper, lower, upper_open: (2, B, 9, 2) lids in output px (row 0 = character's left eye);
    blink (2, B); gaze_offset (2, B, 2) iris shift in crop px; rest_corners (2, 2, 2) crop px.
    The gate is 0 when the lid is up and the gaze centred: the warp alone is then exact.
    """
    B = upper.shape[1]
    gate = np.clip(12.0 * blink + 2.0 * np.linalg.norm(gaze_offset, axis=-1), 0.0, 1.0).reshape(-1)
    if gate.max() <= 0.0:
        return None
    pts = np.concatenate([upper, upper_open, lower], 2)          # (2, B, 27, 2)
    flat = pts.reshape(2, -1, 2)    # one reduce axis: numpy reduces over (1, 2) much more slowly
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    margin = np.array([3.0 + 0.8 * h for h in eye_heights])[:, None]
    x0y0 = np.maximum(np.floor(lo - margin), 0).astype(int)
    x1y1 = np.minimum(np.ceil(hi + margin + 1), [width, height]).astype(int)
    w = int(min(width, (x1y1 - x0y0)[:, 0].max()))
    h = int(min(height, (x1y1 - x0y0)[:, 1].max()))
    if w < 2 or h < 2:
        return None
    # each crop grows away from the other eye, so that the two crops do not overlap
    left = int(np.argmin(x0y0[:, 0]))
    origins = []
    for e in range(2):
        x = x1y1[e, 0] - w if e == left else x0y0[e, 0]
        origins.append((int(np.clip(x, 0, width - w)), int(min(x0y0[e, 1], height - h))))
    n = 2 * B
    up = upper.reshape(n, -1, 2)
    fr = Frame(up[:, 0], up[:, -1])
    org = np.repeat(np.array(origins, np.float64), B, 0)       # (2B, 2)
    M = np.zeros((n, 3, 7))
    M[:, :, [0, 2]] = fr.uv_affine(org)
    # similarity: current eye corners -> rest eye corners, in crop px (the eye content stays still)
    s = to_crop_scale
    off = np.asarray(to_crop_offset, np.float64)
    a_c = (up[:, 0] + off) * s
    cur = (up[:, -1] + off) * s - a_c
    ra = np.repeat(rest_corners[:, 0], B, 0)
    rv = np.repeat(rest_corners[:, 1] - rest_corners[:, 0], B, 0)
    denom = np.maximum((cur * cur).sum(-1), 1e-6)
    re = (rv * cur).sum(-1) / denom
    im = (rv[:, 1] * cur[:, 0] - rv[:, 0] * cur[:, 1]) / denom
    cx = (org[:, 0] + off[0]) * s - a_c[:, 0]
    cy = (org[:, 1] + off[1]) * s - a_c[:, 1]
    norm = 2.0 / (crop_size - 1)
    M[:, 0, 3], M[:, 1, 3], M[:, 2, 3] = re * s * norm, -im * s * norm, (re * cx - im * cy + ra[:, 0]) * norm - 1
    M[:, 0, 4], M[:, 1, 4], M[:, 2, 4] = im * s * norm, re * s * norm, (im * cx + re * cy + ra[:, 1]) * norm - 1
    M[:, :, 5:7] = M[:, :, 3:5]
    M[:, 2, 5:7] -= gaze_offset.reshape(n, 2) * norm
    hts = height_table(fr, [up, lower.reshape(n, -1, 2), upper_open.reshape(n, -1, 2)])
    au = np.abs(TABLE_U)
    side = np.clip((1.0 - au) / 0.35, 0.0, 1.0)
    prof = np.stack([np.clip((1.0 - au) * 30.0, 0.0, 1.0), side * side * (3 - 2 * side)])   # functions of u
    table = np.concatenate([hts, np.broadcast_to(prof[None, :, None], (n, 2, 1, len(au)))], 1)
    return EyePlan(origins=origins, size=(w, h), gate=gate.astype(np.float32), blinking=bool(blink.max() > 0),
                   affine=M.astype(np.float32), table=np.ascontiguousarray(table, np.float32),
                   eye_height=np.repeat(np.asarray(eye_heights, np.float32), B))


def composite_eyes(canvas: torch.Tensor, origin: tuple[int, int], plan: EyePlan, plate: torch.Tensor,
                   iris_rgba: torch.Tensor, lid_colour: torch.Tensor) -> None:
    """Composite both eyes into canvas (B, 4, h, w) float 0..255 in place; canvas pixel (0, 0) is `origin`.

    Both eyes are processed as one batch of 2B same-sized crops. Inside the current lid opening the
    iris-free plate is sampled rigidly (similarity from the eye corners) with the iris shifted by the
    gaze; as the lid comes down, the warped lid skin above the opening (already stretched over the eye
    by the blink basis) is softened toward the lid colour with a gradient, and a faint lash line marks
    the lid edge. Everything is scaled by the per-eye gate, so at gate 0 the warp is left untouched.
    """
    B = canvas.shape[0]
    n = 2 * B
    dev = canvas.device
    w, h = plan.size
    rx0, ry0 = origin
    offs = [(x - rx0, y - ry0) for x, y in plan.origins]
    # non_blocking: a blocking copy to the GPU waits for every kernel queued before it (the whole
    # batch's warp); these small tables go in the command stream instead and the host queues on
    M = torch.from_numpy(plan.affine).to(dev, non_blocking=True)
    co = torch.matmul(pixel_table(h, w, dev), M).view(n, h, w, 7)
    hts = lookup(torch.from_numpy(plan.table).to(dev, non_blocking=True), co[..., 0:2])
    v = co[..., 2]
    vu, vl = hts[:, 0], hts[:, 1]
    opening = ramp(v - vu, 0.9) * ramp(vl - v, 0.9) * hts[:, 3]
    pl = F.grid_sample(plate.expand(n, -1, -1, -1), co[..., 3:5], mode="bilinear", padding_mode="border",
                       align_corners=True)
    ir = F.grid_sample(iris_rgba.expand(n, -1, -1, -1), co[..., 5:7], mode="bilinear", padding_mode="zeros",
                       align_corners=True)
    colour = pl.lerp_(ir[:, :3], ir[:, 3:4])
    crops = torch.cat([canvas[:, :3, y:y + h, x:x + w] for x, y in offs])
    base = crops
    if plan.blinking:
        eh = torch.from_numpy(plan.eye_height).to(dev, non_blocking=True)[:, None, None]
        vo = hts[:, 2]
        closing = ((vu - vo) / (0.35 * eh + 0.5)).clamp(0.0, 1.0)  # 0 while the lid is up
        # the lid: warped lid skin from a little above the open lid line down to the current lid edge,
        # blended toward the lid colour more strongly near the edge (a soft gradient, no hard top)
        lid_top = vo - 0.3 * eh
        depth = ((v - lid_top) / (vu - lid_top).clamp_min(1.0)).clamp(0.0, 1.0)
        # reaches a little below the lid edge as it closes: the collapsed eye under a shut lid can
        # leave a sliver of iris in the coarse warp
        edge_in = ramp(vu - v + 0.5 + 0.12 * eh * closing, 1.0)
        side = hts[:, 4] * closing
        skin_w = (0.8 * side * edge_in) * smoothstep(depth)
        lash_w = (0.35 * side) * torch.exp(-(((vu - v) / (0.06 * eh + 0.5)) ** 2))
        lc = lid_colour.repeat_interleave(B, 0)                  # (2B, 2, 3)
        base = torch.lerp(base, lc[:, 0, :, None, None].expand_as(base), skin_w[:, None])
        base = base.lerp_(lc[:, 1, :, None, None].expand_as(base), lash_w[:, None])
        # shadow cast by the lid as it comes down
        colour = colour.mul_((1.0 - 0.25 * closing * torch.exp(-(v - vu).clamp_min(0) / (0.18 * eh + 0.5)))[:, None])
    new = torch.lerp(base, colour, opening[:, None])
    gate = torch.from_numpy(plan.gate).to(dev, non_blocking=True)[:, None, None, None]
    delta = new.sub_(crops).mul_(gate)  # exactly 0 wherever the layer does nothing
    for i, (x, y) in enumerate(offs):  # added, not assigned: correct even if the two crops overlap
        canvas[:, :3, y:y + h, x:x + w] += delta[i * B:(i + 1) * B]
