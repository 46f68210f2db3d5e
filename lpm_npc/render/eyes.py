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

from lpm_npc.render.contour import LocalFrame, box_of, interp_heights, ramp, smoothstep


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
class EyeInputs:
    """Per-frame data of one eye (output pixels unless noted)."""

    upper: torch.Tensor         # (B, 9, 2) current upper lid
    upper_open: torch.Tensor    # (B, 9, 2) the upper lid without blink (where the lid starts to cover from)
    lower: torch.Tensor         # (B, 9, 2) current lower lid
    rest_a: torch.Tensor        # (2,) rest corner a, crop px
    rest_b: torch.Tensor        # (2,) rest corner b, crop px
    gaze_offset: torch.Tensor   # (B, 2) iris shift in crop px
    to_crop_scale: float        # crop px per output px
    to_crop_offset: tuple[float, float]  # output px -> square px offset (ox, oy)
    eye_height: float           # rest eye opening height, output px
    lid_colour: torch.Tensor    # (2, 3) lid skin and lash line colours


def composite_eye(out: torch.Tensor, e: EyeInputs, plate: torch.Tensor, iris_rgba: torch.Tensor,
                  crop_size: int) -> None:
    """Composite one eye into out (B,4,H,W) float 0..255 in place. plate (1,3,S,S), iris_rgba (1,4,S,S)."""
    B, _, H, W = out.shape
    box = box_of(torch.cat([e.upper, e.upper_open, e.lower], 1), margin=3.0 + 0.8 * e.eye_height, width=W, height=H)
    if box is None:
        return
    x0, y0, x1, y1 = box
    fr = LocalFrame(e.upper[:, 0], e.upper[:, -1])
    uu, vu_pts = fr.uv_points(e.upper)
    ul, vl_pts = fr.uv_points(e.lower)
    _, vo_pts = fr.uv_points(e.upper_open)
    dev = out.device
    xs = torch.arange(x0, x1, device=dev, dtype=torch.float32)
    ys = torch.arange(y0, y1, device=dev, dtype=torch.float32)
    u, v = fr.uv_box(xs, ys)
    vu = interp_heights(uu, vu_pts, u)
    vl = interp_heights(ul, vl_pts, u)
    vo = interp_heights(uu, vo_pts, u)
    in_u = ((1.0 - u.abs()) * 30).clamp(0, 1)
    opening = ramp(v - vu, 0.9) * ramp(vl - v, 0.9) * in_u
    # the lid: skin from a little above the open lid line down to the current lid edge, with a lash line
    eh = e.eye_height
    lid_top = vo - 0.3 * eh
    covered = smoothstep((v - lid_top) / (0.45 * eh + 1.0)) * ramp(vu - v + 0.45, 0.9) * in_u * 0.92
    closing = ((vu - vo) / (0.35 * eh + 0.5)).clamp(0.0, 1.0)  # 0 while the lid is up
    covered = covered * closing
    lid_rgb = e.lid_colour[0][None, :, None, None] * (1.0 - 0.08 * ramp(v - lid_top, eh + 1.0))[:, None]
    lash = torch.exp(-(((vu - v) / (0.09 * eh + 0.6)) ** 2)) * (1.0 - 0.35 * u.abs() ** 2)
    lid_rgb = lid_rgb + (e.lid_colour[1][None, :, None, None] - lid_rgb) * (0.85 * lash)[:, None]
    # similarity: current frame -> rest frame, in crop px
    s = e.to_crop_scale
    ox, oy = e.to_crop_offset
    a_c = (e.upper[:, 0] + torch.tensor([ox, oy], device=dev)) * s          # (B,2)
    b_c = (e.upper[:, -1] + torch.tensor([ox, oy], device=dev)) * s
    cur = b_c - a_c
    rest = (e.rest_b - e.rest_a)[None]
    # complex division rest/cur gives rotation+scale taking current vectors to rest vectors
    denom = (cur * cur).sum(-1).clamp_min(1e-6)
    re = (rest[:, 0] * cur[:, 0] + rest[:, 1] * cur[:, 1]) / denom
    im = (rest[:, 1] * cur[:, 0] - rest[:, 0] * cur[:, 1]) / denom
    px = (xs[None, None, :] + ox) * s - a_c[:, 0, None, None]
    py = (ys[None, :, None] + oy) * s - a_c[:, 1, None, None]
    sx = re[:, None, None] * px - im[:, None, None] * py + e.rest_a[0]
    sy = im[:, None, None] * px + re[:, None, None] * py + e.rest_a[1]
    norm = 2.0 / (crop_size - 1)
    g_plate = torch.stack([sx * norm - 1, sy * norm - 1], -1)
    g_iris = torch.stack([(sx - e.gaze_offset[:, 0, None, None]) * norm - 1,
                          (sy - e.gaze_offset[:, 1, None, None]) * norm - 1], -1)
    pl = F.grid_sample(plate.expand(B, -1, -1, -1), g_plate, mode="bilinear", padding_mode="border",
                       align_corners=True)
    ir = F.grid_sample(iris_rgba.expand(B, -1, -1, -1), g_iris, mode="bilinear", padding_mode="zeros",
                       align_corners=True)
    ia = ir[:, 3:4]
    colour = pl + (ir[:, :3] - pl) * ia
    # shadow cast by the upper lid, stronger as the lid comes down
    lid = 1.0 - 0.28 * torch.exp(-(v - vu).clamp_min(0) / (0.18 * e.eye_height + 0.5))
    colour = colour * lid[:, None]
    region = out[:, :3, y0:y1, x0:x1]
    region = region + (lid_rgb - region) * covered[:, None]
    out[:, :3, y0:y1, x0:x1] = region + (colour - region) * opening[:, None]
