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

from lpm_npc.render.contour import LocalFrame, height_table, lookup, ramp, smoothstep


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
class EyeFrame:
    """Per-frame data of both eyes (row 0 = character's left eye), output pixels unless noted."""

    upper: torch.Tensor         # (2, B, 9, 2) current upper lids
    upper_open: torch.Tensor    # (2, B, 9, 2) upper lids without blink (where the lid starts to cover from)
    lower: torch.Tensor         # (2, B, 9, 2) current lower lids
    blink: torch.Tensor         # (2, B) blink channel per eye
    gaze_offset: torch.Tensor   # (2, B, 2) iris shift in crop px
    eye_heights: tuple[float, float]  # rest eye opening heights, output px


def _gate(e: EyeFrame) -> torch.Tensor:
    """(2, B) layer weight: 0 when the lid is up and the gaze is centred (then the warp alone is exact)."""
    return (12.0 * e.blink + 2.0 * e.gaze_offset.norm(dim=-1)).clamp(0.0, 1.0)


def eye_boxes(e: EyeFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (2, 4) x0, y0, x1, y1 in output px around each eye over the batch, and the gates' max (2,)."""
    pts = torch.cat([e.upper, e.upper_open, e.lower], 2)   # (2, B, 27, 2)
    lo = pts.amin(dim=(1, 2))
    hi = pts.amax(dim=(1, 2))
    margin = torch.tensor([3.0 + 0.8 * h for h in e.eye_heights], device=pts.device)[:, None]
    return torch.cat([lo - margin, hi + margin + 1.0], 1), _gate(e).amax(1)


def composite_eyes(canvas: torch.Tensor, origin: tuple[int, int], e: EyeFrame, boxes: list[list[float]],
                   gates_on: list[float], plate: torch.Tensor, iris_rgba: torch.Tensor, rest: torch.Tensor,
                   eye_upper: torch.Tensor, to_crop_scale: float, to_crop_offset: tuple[float, float],
                   lid_colour: torch.Tensor, crop_size: int) -> None:
    """Composite both eyes into canvas (B, 4, h, w) float 0..255 in place; canvas pixel (0, 0) is `origin`.

    Both eyes are processed as one batch of 2B same-sized crops. Inside the current lid opening the
    iris-free plate is sampled rigidly (similarity from the eye corners) with the iris shifted by the
    gaze; as the lid comes down, the warped lid skin above the opening (already stretched over the eye
    by the blink basis) is softened toward the lid colour with a gradient, and a faint lash line marks
    the lid edge. Everything is scaled by the per-eye gate, so at gate 0 the warp is left untouched.
    """
    B, _, Hc, Wc = canvas.shape
    rx0, ry0 = origin
    dev = canvas.device
    ib = [[int(np.floor(b[0])), int(np.floor(b[1])), int(np.ceil(b[2])), int(np.ceil(b[3]))] for b in boxes]
    w = min(Wc, max(b[2] - b[0] for b in ib))
    h = min(Hc, max(b[3] - b[1] for b in ib))
    if w < 2 or h < 2:
        return
    org = []
    for b in ib:
        x0 = min(max(b[0] - rx0, 0), Wc - w)
        y0 = min(max(b[1] - ry0, 0), Hc - h)
        org.append((x0, y0))
    n = 2 * B
    ar_w = torch.arange(w, device=dev, dtype=torch.float32)
    ar_h = torch.arange(h, device=dev, dtype=torch.float32)
    xs = torch.stack([ar_w + (x0 + rx0) for x0, _ in org]).repeat_interleave(B, 0)    # (2B, w)
    ys = torch.stack([ar_h + (y0 + ry0) for _, y0 in org]).repeat_interleave(B, 0)    # (2B, h)
    upper = e.upper.reshape(n, -1, 2)
    lower = e.lower.reshape(n, -1, 2)
    upper_open = e.upper_open.reshape(n, -1, 2)
    fr = LocalFrame(upper[:, 0], upper[:, -1])
    uu, vu_pts = fr.uv_points(upper)
    ul, vl_pts = fr.uv_points(lower)
    uo, vo_pts = fr.uv_points(upper_open)
    table = height_table(torch.stack([uu, ul, uo], 1), torch.stack([vu_pts, vl_pts, vo_pts], 1))
    u, v = fr.uv_box(xs, ys)
    hts = lookup(table, u)
    vu, vl, vo = hts[:, 0], hts[:, 1], hts[:, 2]
    eh = torch.tensor(e.eye_heights, device=dev).repeat_interleave(B)[:, None, None]  # (2B, 1, 1)
    au = u.abs()
    in_u = ((1.0 - au) * 30.0).clamp(0.0, 1.0)
    opening = ramp(v - vu, 0.9) * ramp(vl - v, 0.9) * in_u
    closing = ((vu - vo) / (0.35 * eh + 0.5)).clamp(0.0, 1.0)  # 0 while the lid is up
    # the lid: warped lid skin from a little above the open lid line down to the current lid edge,
    # blended toward the lid colour more strongly near the edge (a soft gradient, no hard top)
    lid_top = vo - 0.3 * eh
    depth = ((v - lid_top) / (vu - lid_top).clamp_min(1.0)).clamp(0.0, 1.0)
    edge_in = ramp(vu - v + 0.5, 1.0)
    side = smoothstep((1.0 - au) / 0.35)
    skin_w = (0.6 * closing * side * edge_in) * smoothstep(depth)
    lash_w = (0.45 * closing * side) * torch.exp(-(((vu - v) / (0.07 * eh + 0.6)) ** 2))
    # similarity: current frame -> rest frame, in crop px
    s = to_crop_scale
    offs = torch.tensor(to_crop_offset, device=dev)
    a_c = (upper[:, 0] + offs) * s
    b_c = (upper[:, -1] + offs) * s
    rest_a = rest[eye_upper[:, 0], :2].repeat_interleave(B, 0)
    rest_b = rest[eye_upper[:, -1], :2].repeat_interleave(B, 0)
    cur = b_c - a_c
    rv = rest_b - rest_a
    denom = (cur * cur).sum(-1).clamp_min(1e-6)
    re = ((rv[:, 0] * cur[:, 0] + rv[:, 1] * cur[:, 1]) / denom)[:, None, None]
    im = ((rv[:, 1] * cur[:, 0] - rv[:, 0] * cur[:, 1]) / denom)[:, None, None]
    px = ((xs + offs[0]) * s - a_c[:, 0, None])[:, None, :]
    py = ((ys + offs[1]) * s - a_c[:, 1, None])[:, :, None]
    norm = 2.0 / (crop_size - 1)
    sx = (re * px - im * py + rest_a[:, 0, None, None]) * norm - 1
    sy = (im * px + re * py + rest_a[:, 1, None, None]) * norm - 1
    g = e.gaze_offset.reshape(n, 2) * norm
    pl = F.grid_sample(plate.expand(n, -1, -1, -1), torch.stack([sx, sy], -1), mode="bilinear",
                       padding_mode="border", align_corners=True)
    ir = F.grid_sample(iris_rgba.expand(n, -1, -1, -1),
                       torch.stack([sx - g[:, 0, None, None], sy - g[:, 1, None, None]], -1),
                       mode="bilinear", padding_mode="zeros", align_corners=True)
    colour = pl + (ir[:, :3] - pl) * ir[:, 3:4]
    # shadow cast by the lid as it comes down
    colour = colour * (1.0 - 0.25 * closing * torch.exp(-(v - vu).clamp_min(0) / (0.18 * eh + 0.5)))[:, None]
    crops = torch.cat([canvas[:, :3, y0:y0 + h, x0:x0 + w] for x0, y0 in org])
    lc = lid_colour.repeat_interleave(B, 0)                  # (2B, 2, 3)
    lid = crops + (lc[:, 0, :, None, None] - crops) * skin_w[:, None]
    lid = lid + (lc[:, 1, :, None, None] - lid) * lash_w[:, None]
    new = lid + (colour - lid) * opening[:, None]
    gate = _gate(e).reshape(n)[:, None, None, None]
    new = crops + (new - crops) * gate
    for i, (x0, y0) in enumerate(org):
        canvas[:, :3, y0:y0 + h, x0:x0 + w] = new[i * B:(i + 1) * B]
