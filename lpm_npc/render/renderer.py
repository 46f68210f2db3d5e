"""Warp renderer: motion vector -> RGBA frames from the character's reference image.

Per frame (all matmul / gather / grid_sample, batchable):
  motion -> coefficient terms -> vertex displacements (basis matmul) + head rotation of the 3D
  landmarks -> coarse forward displacement field (gather + barycentric weights) -> backward map by
  fixed-point inversion at coarse resolution -> upsample -> one grid_sample of RGB+matte ->
  eye layer (lids over a still eye, gaze) -> mouth interior layer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.character.geometry import TERM_INDEX, TERMS
from lpm_npc.character.rig import CharacterRig
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.motion import CHANNEL_INDEX, NUM_CHANNELS, clip_motion
from lpm_npc.render.eyes import EyeInputs, build_eye_textures, composite_eye, lid_colours
from lpm_npc.render.mouth import MouthInputs, composite_mouth

log = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_SIDE = 1024
FIXED_POINT_STEPS = 2
GAZE_RANGE = (0.75, 0.45)  # iris travel at |gaze| = 1, in iris radii (x, y)


@dataclass
class PreparedRig:
    """Device tensors of one character (built once by `Renderer.prepare`)."""

    size: int
    device: torch.device
    textures: list[torch.Tensor]     # mip levels of (1, 4, s, s) float32 RGB + matte, 0..255
    plate: torch.Tensor              # (1, 3, S, S) iris-free eyes
    iris_rgba: torch.Tensor          # (1, 4, S, S) iris texture, alpha 0..1
    rest: torch.Tensor               # (V, 3)
    basis: torch.Tensor              # (K, V*2)
    head_weight: torch.Tensor        # (V, 1)
    pivot: torch.Tensor              # (3,)
    grid_size: int
    grid_vertex: torch.Tensor        # (G*G*3,) long
    grid_bary: torch.Tensor          # (G*G, 3, 1)
    base_grid: torch.Tensor          # (1, G, G, 2) crop px of the coarse grid points
    mouth_upper: torch.Tensor        # (11,) long
    mouth_lower: torch.Tensor        # (11,) long
    eye_upper: torch.Tensor          # (2, 9) long
    eye_lower: torch.Tensor          # (2, 9) long
    iris: torch.Tensor               # (2, 3)
    eye_heights: tuple[float, float]
    colours: torch.Tensor            # (5, 3)
    lid_colours: torch.Tensor        # (2, 2, 3) per eye: lid skin, lash line
    mouth_width: float


class Renderer(Protocol):
    name: str

    def prepare(self, rig: CharacterRig) -> PreparedRig: ...

    def render(self, prepared: PreparedRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray: ...


def motion_to_terms(m: torch.Tensor) -> torch.Tensor:
    """(B, NUM_CHANNELS) motion -> (B, len(TERMS)) coefficients of the geometry basis."""
    c = {name: m[:, i] for name, i in CHANNEL_INDEX.items()}
    press = c["lips_press"]
    out = torch.zeros(m.shape[0], len(TERMS), dtype=m.dtype, device=m.device)
    out[:, TERM_INDEX["bias"]] = 1.0
    out[:, TERM_INDEX["jaw_eff"]] = c["jaw_open"] * (1 - press)
    out[:, TERM_INDEX["round_open"]] = c["mouth_round"] * (1 - press) * (1 - c["jaw_open"]).clamp_min(0)
    for name in ("mouth_round", "mouth_spread", "lips_press", "smile", "frown", "upper_lip_raise", "brow_up",
                 "brow_inner_up", "brow_down", "blink_l", "blink_r", "eye_wide", "squint", "nose_wrinkle"):
        out[:, TERM_INDEX[name]] = c[name]
    for side in ("l", "r"):
        b = c[f"blink_{side}"]
        out[:, TERM_INDEX[f"blink_{side}_squint"]] = b * c["squint"]
        out[:, TERM_INDEX[f"blink_{side}_wide"]] = b * c["eye_wide"]
        out[:, TERM_INDEX[f"smile_blink_{side}"]] = b * c["smile"]
    return out


def rotation_matrices(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations in image axes (x right, y down, z away from the camera); angles in degrees."""
    y, p, r = (torch.deg2rad(a) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = torch.cos(y), torch.sin(y), torch.cos(p), torch.sin(p), torch.cos(r), torch.sin(r)
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    # yaw > 0: points in front of the pivot (z < 0) move right
    Ry = torch.stack([cy, zero, -sy, zero, one, zero, sy, zero, cy], -1).view(-1, 3, 3)
    # pitch > 0: points in front move down
    Rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    # roll > 0: clockwise on screen
    Rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return Rz @ Ry @ Rx


class TorchRenderer:
    """The torch implementation of `Renderer` (CPU or CUDA)."""

    def __init__(self, device: str = "cpu", grid_size: int = 128):
        self.device = torch.device(device)
        self.grid_size = int(grid_size)
        self.name = f"torch-{self.device.type}"
        self._grids: dict[tuple[int, int, int, str], torch.Tensor] = {}

    # ------------------------------------------------------------------ prepare
    def prepare(self, rig: CharacterRig) -> PreparedRig:
        g = rig.geometry
        dev = self.device
        S = rig.size
        G = int(g.grid_size)
        if G != self.grid_size:
            log.debug("rig grid %d differs from renderer grid %d; using the rig's", G, self.grid_size)
        rgba = np.concatenate([rig.image.astype(np.float32), rig.matte.astype(np.float32)[..., None]], -1)
        tex = torch.from_numpy(rgba).permute(2, 0, 1)[None].contiguous().to(dev)
        levels = [tex]
        while levels[-1].shape[-1] >= 2 * MIN_SIDE * 4 and levels[-1].shape[-1] // 2 >= 64:
            levels.append(F.avg_pool2d(levels[-1], 2))
        plate, iris_a = build_eye_textures(rig.image, rig.landmarks, g.eye_upper, g.eye_lower, g.iris)
        plate_t = torch.from_numpy(plate).permute(2, 0, 1)[None].contiguous().to(dev)
        iris_rgba = torch.cat([torch.from_numpy(rig.image.astype(np.float32)).permute(2, 0, 1),
                               torch.from_numpy(iris_a)[None]], 0)[None].contiguous().to(dev)
        t = torch.linspace(0, S - 1, G)
        gy, gx = torch.meshgrid(t, t, indexing="ij")
        eye_h = []
        for row in range(2):
            up = rig.landmarks[g.eye_upper[row], 1]
            lo = rig.landmarks[g.eye_lower[row], 1]
            eye_h.append(float(np.max(lo - up)))
        f32 = dict(dtype=torch.float32, device=dev)
        return PreparedRig(
            size=S, device=dev, textures=levels, plate=plate_t, iris_rgba=iris_rgba,
            rest=torch.as_tensor(g.vertices, **f32),
            basis=torch.as_tensor(g.basis.reshape(g.basis.shape[0], -1), **f32),
            head_weight=torch.as_tensor(g.head_weight, **f32)[:, None],
            pivot=torch.as_tensor(g.pivot, **f32), grid_size=G,
            grid_vertex=torch.as_tensor(g.grid_vertex.reshape(-1), dtype=torch.long, device=dev),
            grid_bary=torch.as_tensor(g.grid_bary, **f32)[..., None],
            base_grid=torch.stack([gx, gy], -1)[None].to(dev),
            mouth_upper=torch.as_tensor(g.mouth_upper, dtype=torch.long, device=dev),
            mouth_lower=torch.as_tensor(g.mouth_lower, dtype=torch.long, device=dev),
            eye_upper=torch.as_tensor(g.eye_upper, dtype=torch.long, device=dev),
            eye_lower=torch.as_tensor(g.eye_lower, dtype=torch.long, device=dev),
            iris=torch.as_tensor(g.iris, **f32), eye_heights=(eye_h[0], eye_h[1]),
            colours=torch.as_tensor(g.mouth_colours, **f32),
            lid_colours=torch.as_tensor(lid_colours(rig.image, rig.landmarks, g.eye_upper), **f32),
            mouth_width=float(g.scales[0]))

    # ------------------------------------------------------------------ per frame
    def vertex_positions(self, p: PreparedRig, motion: torch.Tensor,
                         terms: torch.Tensor | None = None) -> torch.Tensor:
        """Deformed 2D vertex positions (B, V, 2) in crop px."""
        B = motion.shape[0]
        if terms is None:
            terms = motion_to_terms(motion)
        disp = (terms @ p.basis).view(B, -1, 2)
        pe = p.rest[None].expand(B, -1, -1).clone()
        pe[..., :2] += disp
        R = rotation_matrices(motion[:, CHANNEL_INDEX["head_yaw"]], motion[:, CHANNEL_INDEX["head_pitch"]],
                              motion[:, CHANNEL_INDEX["head_roll"]])
        rel = pe - p.pivot
        pr = rel @ R.transpose(1, 2) + p.pivot
        return pe[..., :2] + p.head_weight * (pr[..., :2] - pe[..., :2])

    def backward_map(self, p: PreparedRig, pos: torch.Tensor) -> torch.Tensor:
        """Coarse backward map (B, 2, G, G) in normalised texture coordinates."""
        B = pos.shape[0]
        G = p.grid_size
        disp = pos - p.rest[None, :, :2]
        field = (disp.index_select(1, p.grid_vertex).view(B, G * G, 3, 2) * p.grid_bary).sum(2)
        field = field.view(B, G, G, 2)
        norm = 2.0 / (p.size - 1)
        field_img = field.permute(0, 3, 1, 2)
        x = p.base_grid - field
        for _ in range(FIXED_POINT_STEPS - 1):
            d = F.grid_sample(field_img, x * norm - 1, mode="bilinear", padding_mode="border", align_corners=True)
            x = p.base_grid - d.permute(0, 2, 3, 1)
        return (x * norm - 1).permute(0, 3, 1, 2)

    def render(self, prepared: PreparedRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray:
        """Render (B, height, width, 4) uint8 RGBA frames for motion (B, NUM_CHANNELS)."""
        width, height = int(width), int(height)
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise InvalidInputError(f"frame size {width}x{height} out of range {MIN_SIDE}..{MAX_SIDE}")
        m = np.asarray(motion, np.float32)
        if m.ndim == 1:
            m = m[None]
        if m.ndim != 2 or m.shape[1] != NUM_CHANNELS:
            raise InvalidInputError(f"motion must be (B, {NUM_CHANNELS}), got {m.shape}")
        m = clip_motion(np.nan_to_num(m))
        with torch.inference_mode():
            out = self._render(prepared, torch.from_numpy(m).to(prepared.device), width, height, alpha_matte)
            return out.cpu().numpy()

    def _render(self, p: PreparedRig, motion: torch.Tensor, width: int, height: int,
                alpha_matte: bool) -> torch.Tensor:
        B = motion.shape[0]
        N = max(width, height)
        ox, oy = (N - width) // 2, (N - height) // 2
        terms = motion_to_terms(motion)
        pos = self.vertex_positions(p, motion, terms)
        bmap = self.backward_map(p, pos)
        # upsample the coarse map to the output pixels (one small grid_sample; F.interpolate is slow on CPU)
        grid = F.grid_sample(bmap, self._output_grid(N, width, height, p.device).expand(B, -1, -1, -1),
                             mode="bilinear", padding_mode="border", align_corners=True).permute(0, 2, 3, 1)
        tex = p.textures[0]
        for level in p.textures[1:]:
            if level.shape[-1] >= N:
                tex = level
        out = F.grid_sample(tex.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
        # layers work in output px; crop px -> output px
        s = (p.size - 1) / (N - 1)
        off = torch.tensor([ox, oy], dtype=torch.float32, device=p.device)
        pos_out = pos / s - off
        # helper poses: teeth hang from the inner upper lip without expression (bias + head only);
        # lids cover the eye from where the upper lid would be without blinking
        neutral = motion.clone()
        neutral[:, :CHANNEL_INDEX["gaze_x"]] = 0.0
        no_blink = motion.clone()
        no_blink[:, CHANNEL_INDEX["blink_l"]] = 0.0
        no_blink[:, CHANNEL_INDEX["blink_r"]] = 0.0
        helper = self.vertex_positions(p, torch.cat([neutral, no_blink], 0)) / s - off
        teeth_pos, open_pos = helper[:B], helper[B:]
        for row in range(2):
            gaze = torch.stack([motion[:, CHANNEL_INDEX["gaze_x"]] * GAZE_RANGE[0],
                                motion[:, CHANNEL_INDEX["gaze_y"]] * GAZE_RANGE[1]], -1) * p.iris[row, 2]
            rest_a = p.rest[p.eye_upper[row, 0], :2]
            rest_b = p.rest[p.eye_upper[row, -1], :2]
            composite_eye(out, EyeInputs(
                upper=pos_out[:, p.eye_upper[row]], upper_open=open_pos[:, p.eye_upper[row]],
                lower=pos_out[:, p.eye_lower[row]], rest_a=rest_a, rest_b=rest_b, gaze_offset=gaze,
                to_crop_scale=s, to_crop_offset=(float(ox), float(oy)), eye_height=p.eye_heights[row] / s,
                lid_colour=p.lid_colours[row]), p.plate, p.iris_rgba, p.size)
        composite_mouth(out, MouthInputs(
            upper=pos_out[:, p.mouth_upper], lower=pos_out[:, p.mouth_lower], teeth_line=teeth_pos[:, p.mouth_upper],
            mouth_width=p.mouth_width / s, colours=p.colours))
        if not alpha_matte:
            out[:, 3] = 255.0
        return out.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def _output_grid(self, N: int, width: int, height: int, device: torch.device) -> torch.Tensor:
        """(1, height, width, 2) normalised positions of the output pixels in the N x N square (cached)."""
        key = (N, width, height, str(device))
        grid = self._grids.get(key)
        if grid is None:
            ox, oy = (N - width) // 2, (N - height) // 2
            xs = (torch.arange(width, dtype=torch.float32) + ox) * (2.0 / (N - 1)) - 1
            ys = (torch.arange(height, dtype=torch.float32) + oy) * (2.0 / (N - 1)) - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx, gy], -1)[None].to(device)
            if len(self._grids) > 32:
                self._grids.clear()
            self._grids[key] = grid
        return grid
