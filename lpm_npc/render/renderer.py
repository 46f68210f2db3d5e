"""Warp renderer: motion vector -> RGBA frames from the character's reference image.

Per frame (all matmul / gather / grid_sample, batchable):
  motion -> coefficient terms (one small matmul) -> vertex displacements (basis matmul) + head
  rotation of the 3D landmarks (yaw/pitch parallax softly capped, then roll) -> coarse forward
  displacement field (sparse pixels x vertices matmul) -> backward map by Newton inversion at
  coarse resolution -> upsample -> one grid_sample of RGB+matte -> eye layer (lids over a still
  eye, gaze) -> mouth interior layer.

Only the part of the frame that moves is resampled: every output size has a cached still frame
(the reference resampled once), and per frame the renderer warps the bounding box of the pixels
whose backward map differs from the identity plus the boxes of active layers, then pastes that
box into a copy of the still frame. Pixels outside the box are exactly what the full warp would
give there (the identity map).

Batching: `render_many` takes any mix of rigs and output sizes, groups the requests by output size
and matte, then by rig, and renders each group in one batched call. The numeric core (motion ->
deformed vertices -> coarse backward map -> sampled crop) is written once, in export-friendly torch
(`geometry_core`, `sample_core`): the eager renderer runs it directly and
`lpm_npc.render.backends` exports the same functions to ONNX (onnxruntime / TensorRT backends).
On CPU the coarse backward map is only computed on the part of the coarse grid that moves (the
rest is the identity, as it is in the full computation up to displacements below ACTIVE_EPS).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.character.geometry import TERM_INDEX, TERMS
from lpm_npc.character.rig import CharacterRig
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.motion import (
    CHANNEL_INDEX,
    MOTION_CHANNELS,
    NUM_CHANNELS,
    clip_motion,
)
from lpm_npc.render import cpu_kernels
from lpm_npc.render.eyes import (
    build_eye_textures,
    composite_eyes,
    lid_colours,
    plan_eyes,
)
from lpm_npc.render.mouth import InteriorTexture, composite_mouth, plan_mouth, prepare_interior

log = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_SIDE = 1024
NEWTON_STEPS = 2
GAZE_RANGE = (0.75, 0.45)  # iris travel at |gaze| = 1, in iris radii (x, y)
# yaw/pitch parallax per vertex is softly capped at this share of the face width: realistic head
# motion (|yaw| <= 8, |pitch| <= 6 degrees) stays nearly linear, large angles degrade gracefully
HEAD_CAP = 0.15
_DEG = math.pi / 180.0
ACTIVE_EPS = 0.02  # px of backward displacement below which a coarse grid point counts as still


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
    field_matrix: torch.Tensor       # sparse CSR (G*G, V): barycentric weights of the coarse grid points
    base_grid_cf: torch.Tensor       # (1, 2, G, G) crop px of the coarse grid points
    ring_box: torch.Tensor           # (V, 4) x0, y0, -x1, -y1 (crop px) of the triangles around each vertex
    helper_ids: torch.Tensor         # (M,) long: inner upper lip + upper lids (posed without expression/blink)
    helper_basis: torch.Tensor       # (K, M*2)
    mouth_upper: torch.Tensor        # (11,) long
    mouth_lower: torch.Tensor        # (11,) long
    eye_upper: torch.Tensor          # (2, 9) long
    eye_lower: torch.Tensor          # (2, 9) long
    iris: torch.Tensor               # (2, 3)
    eye_heights: tuple[float, float]
    colours: torch.Tensor            # (5, 3)
    lid_colours: torch.Tensor        # (2, 2, 3) per eye: lid skin, lash line
    mouth_width: float
    face_width: float
    iris_radii: np.ndarray           # (2,) crop px
    rest_corners: np.ndarray         # (2, 2, 2) crop px: per eye, the upper lid's two corners
    still: dict = field(default_factory=dict)  # (N, width, height, alpha) -> cached still frame
    grid_vertex: torch.Tensor | None = None   # (3, G, G) long vertex ids of the triangle of each grid point
    grid_bary: torch.Tensor | None = None     # (3, G, G) float32 barycentric weights
    rest_np: np.ndarray | None = None         # (V, 2) float32 rest positions (host copy)
    ring_box_np: np.ndarray | None = None     # (V, 4) host copy of ring_box
    host: dict = field(default_factory=dict)  # backend-specific host copies (e.g. numpy inputs of an ONNX graph)
    mouth_interior: InteriorTexture | None = None  # from an open-mouth reference image, else drawn

    @property
    def topology(self) -> tuple[int, int, int, int]:
        """(V, K, G, M): shapes shared by every rig that one exported graph can serve."""
        return (int(self.rest.shape[0]), int(self.basis.shape[0]), int(self.grid_size), int(self.helper_ids.shape[0]))


@dataclass
class RenderRequest:
    """One frame to render in a `Renderer.render_many` call."""

    prepared: PreparedRig
    motion: np.ndarray      # (NUM_CHANNELS,) float32
    width: int
    height: int
    alpha_matte: bool = False
    # optional output conversions done by the renderer (on the GPU on the torch CUDA path):
    bgra: bool = False      # swap R and B (RGBA -> BGRA)
    flip_y: bool = False    # first row = bottom of the image
    # > 0: a renderer that can (`encodes_jpeg`) returns this frame as a JPEG file of that quality, a
    # 1-D uint8 array, instead of (H, W, 4) pixels; one that cannot returns the pixels
    jpeg_quality: int = 0


class Renderer(Protocol):
    name: str

    def prepare(self, rig: CharacterRig) -> PreparedRig: ...

    def render(self, prepared: PreparedRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray: ...

    def render_many(self, requests: list[RenderRequest]) -> list[np.ndarray]: ...


def renderer_encodes_jpeg(renderer) -> bool:
    """Whether `renderer` honours `RenderRequest.jpeg_quality` (encodes JPEG frames itself, on its GPU)."""
    return bool(getattr(renderer, "encodes_jpeg", False))


# ---------------------------------------------------------------- motion -> terms
_PRODUCTS: tuple[tuple[str, ...], ...] = (
    ("jaw_open", "lips_press"), ("mouth_round", "lips_press"), ("mouth_round", "jaw_open"),
    ("mouth_round", "lips_press", "jaw_open"),
    ("blink_l", "squint"), ("blink_r", "squint"), ("blink_l", "eye_wide"), ("blink_r", "eye_wide"),
    ("smile", "blink_l"), ("smile", "blink_r"),
)


def _term_tables() -> tuple[np.ndarray, np.ndarray]:
    """Index table (P, 3) into [1, motion] for the product features and the (1+C+P, K) mixing matrix."""
    C, K = NUM_CHANNELS, len(TERMS)
    idx = np.zeros((len(_PRODUCTS), 3), np.int64)
    for i, names in enumerate(_PRODUCTS):
        for j, n in enumerate(names):
            idx[i, j] = CHANNEL_INDEX[n] + 1
    M = np.zeros((1 + C + len(_PRODUCTS), K), np.float32)
    ch = lambda n: 1 + CHANNEL_INDEX[n]
    pr = lambda *n: 1 + C + _PRODUCTS.index(tuple(n))
    M[0, TERM_INDEX["bias"]] = 1.0
    M[ch("jaw_open"), TERM_INDEX["jaw_eff"]] = 1.0
    M[pr("jaw_open", "lips_press"), TERM_INDEX["jaw_eff"]] = -1.0
    # round * (1 - press) * (1 - jaw)
    M[ch("mouth_round"), TERM_INDEX["round_open"]] = 1.0
    M[pr("mouth_round", "lips_press"), TERM_INDEX["round_open"]] = -1.0
    M[pr("mouth_round", "jaw_open"), TERM_INDEX["round_open"]] = -1.0
    M[pr("mouth_round", "lips_press", "jaw_open"), TERM_INDEX["round_open"]] = 1.0
    for name in ("mouth_round", "mouth_spread", "lips_press", "smile", "frown", "upper_lip_raise", "brow_up",
                 "brow_inner_up", "brow_down", "blink_l", "blink_r", "eye_wide", "squint", "nose_wrinkle"):
        M[ch(name), TERM_INDEX[name]] = 1.0
    for side in ("l", "r"):
        M[pr(f"blink_{side}", "squint"), TERM_INDEX[f"blink_{side}_squint"]] = 1.0
        M[pr(f"blink_{side}", "eye_wide"), TERM_INDEX[f"blink_{side}_wide"]] = 1.0
        M[pr("smile", f"blink_{side}"), TERM_INDEX[f"smile_blink_{side}"]] = 1.0
    return idx, M


_PROD_IDX, _TERM_MATRIX = _term_tables()
_TERM_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
# terms that vanish when both lids are up (the 'open lid' helper pose)
_BLINK_TERMS = [TERM_INDEX[n] for n in TERMS if n.startswith("blink_") or n.startswith("smile_blink_")]
assert MOTION_CHANNELS[-5:] == ("gaze_x", "gaze_y", "head_yaw", "head_pitch", "head_roll")


def motion_to_terms(m: torch.Tensor) -> torch.Tensor:
    """(B, NUM_CHANNELS) motion -> (B, len(TERMS)) coefficients of the geometry basis."""
    key = str(m.device)
    tabs = _TERM_CACHE.get(key)
    if tabs is None:
        tabs = (torch.as_tensor(_PROD_IDX, device=m.device).view(-1),
                torch.as_tensor(_TERM_MATRIX, device=m.device))
        _TERM_CACHE[key] = tabs
    idx, M = tabs
    ext = torch.cat([torch.ones_like(m[:, :1]), m], 1)
    prods = ext.index_select(1, idx).view(m.shape[0], -1, 3).prod(-1)
    return torch.cat([ext, prods], 1) @ M


def rotation_matrices(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations in image axes (x right, y down, z away from the camera); angles in degrees."""
    y, p, r = (a * _DEG for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = torch.cos(y), torch.sin(y), torch.cos(p), torch.sin(p), torch.cos(r), torch.sin(r)
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    # yaw > 0: points in front of the pivot (z < 0) move right
    Ry = torch.stack([cy, zero, -sy, zero, one, zero, sy, zero, cy], -1).view(-1, 3, 3)
    # pitch > 0: points in front move down
    Rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    # roll > 0: clockwise on screen
    Rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return Rz @ Ry @ Rx


class _Pose:
    """Per-frame head pose terms shared by every deformation of the frame."""

    def __init__(self, motion: torch.Tensor, cap: float):
        ang = motion[:, -3:] * _DEG                   # yaw, pitch, roll
        c, s = torch.cos(ang), torch.sin(ang)
        cy, cp, cr = c.unbind(1)
        sy, sp, sr = s.unbind(1)
        zero = torch.zeros_like(cy)
        # parallax of (Ry @ Rx - I), rows x, y only: rel (V, 3) @ A (3, 2)
        self.A = torch.stack([cy - 1, zero, -sy * sp, cp - 1, -sy * cp, -sp], -1).view(-1, 3, 2)
        self.roll = torch.stack([cr - 1, sr, -sr, cr - 1], -1).view(-1, 2, 2)  # row-vector form of Rz - I
        self.cap = cap

    def repeat(self, n: int) -> _Pose:
        out = _Pose.__new__(_Pose)
        out.A, out.roll, out.cap = self.A.repeat(n, 1, 1), self.roll.repeat(n, 1, 1), self.cap
        return out


def _deform(terms: torch.Tensor, basis: torch.Tensor, rest: torch.Tensor, hw: torch.Tensor, pivot: torch.Tensor,
            pose: _Pose) -> torch.Tensor:
    """Posed 2D positions (B, V, 2) of vertices `rest` (V, 3) under `terms` and the head pose."""
    B = terms.shape[0]
    pe = rest[None, :, :2] + (terms @ basis).view(B, -1, 2)
    rel = torch.cat([pe, rest[None, :, 2:].expand(B, -1, -1)], 2) - pivot
    par = (rel @ pose.A) * hw
    # soft cap: |d| / (1 + (|d| / cap)^4)^(1/4)
    mag2 = (par * par).sum(-1, keepdim=True) * (1.0 / (pose.cap * pose.cap))
    par = par * (1.0 + mag2 * mag2).pow(-0.25)
    p1 = pe + par
    return p1 + ((p1 - pivot[:2]) @ pose.roll) * hw


# ---------------------------------------------------------------- the numeric core (export-friendly)
def _validate_motion(motion: np.ndarray) -> np.ndarray:
    m = np.asarray(motion, np.float32)
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2 or m.shape[1] != NUM_CHANNELS:
        raise InvalidInputError(f"motion must be (B, {NUM_CHANNELS}), got {m.shape}")
    return clip_motion(np.nan_to_num(m)).astype(np.float32, copy=False)


def _validate_size(width: int, height: int) -> tuple[int, int]:
    width, height = int(width), int(height)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidInputError(f"frame size {width}x{height} out of range {MIN_SIDE}..{MAX_SIDE}")
    return width, height


_MASKS: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _term_masks(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) one-hot of the bias term and (K,) mask that zeroes the blink terms (cached per device)."""
    key = str(device)
    t = _MASKS.get(key)
    if t is None:
        bias = torch.zeros(len(TERMS))
        bias[TERM_INDEX["bias"]] = 1.0
        keep = torch.ones(len(TERMS))
        keep[_BLINK_TERMS] = 0.0
        t = _MASKS[key] = (bias.to(device), keep.to(device))
    return t


def deform_core(motion: torch.Tensor, rest: torch.Tensor, basis: torch.Tensor, head_weight: torch.Tensor,
                pivot: torch.Tensor, helper_ids: torch.Tensor, helper_basis: torch.Tensor,
                cap: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """motion (B, C) -> posed vertices (B, V, 2) and helper vertices (2B, M, 2), crop px.

    Helper poses: teeth hang from the inner upper lip without expression (bias + head only); lids
    cover the eye from where the upper lid would be without blinking.
    """
    pose = _Pose(motion, cap)
    terms = motion_to_terms(motion)
    pos = _deform(terms, basis, rest, head_weight, pivot, pose)
    bias, keep = _term_masks(motion.device)
    neutral = torch.zeros_like(terms) + bias
    no_blink = terms * keep
    helper = _deform(torch.cat([neutral, no_blink]), helper_basis, rest[helper_ids], head_weight[helper_ids], pivot,
                     pose.repeat(2))
    return pos, helper


def backward_core(pos: torch.Tensor, rest2: torch.Tensor, grid_vertex: torch.Tensor, grid_bary: torch.Tensor,
                  base: torch.Tensor, cell: torch.Tensor | float) -> torch.Tensor:
    """Coarse backward map (B, 2, h, w), crop px, on a (sub)grid of the coarse grid.

    grid_vertex / grid_bary (3, h, w) and base (1, 2, h, w) are that (sub)grid's part of the rig's
    tables; `cell` is the grid spacing in crop px. The forward field is gathered from the vertex
    displacements (barycentric weights); it is inverted by Newton steps with its finite-difference
    Jacobian (a fixed-point iteration stalls where the face slides over still anchors). Folds
    (det <= 0.1) are damped rather than followed. A subgrid must keep >= 3 still points on every
    side that is not the border of the full grid (its edge values then equal the full grid's).
    """
    B = pos.shape[0]
    h, w = grid_vertex.shape[1], grid_vertex.shape[2]
    n = h * w
    disp = (pos - rest2).transpose(1, 2).reshape(B * 2, -1)                   # (2B, V): x rows, y rows
    gv = grid_vertex.reshape(3, n)
    gb = grid_bary.reshape(3, n)
    fld = (disp.index_select(1, gv[0]) * gb[0] + disp.index_select(1, gv[1]) * gb[1]
           + disp.index_select(1, gv[2]) * gb[2]).view(B, 2, h, w)
    inv2h = 0.5 / cell
    px = F.pad(fld, (1, 1, 1, 1), mode="replicate")
    gx = (px[:, :, 1:-1, 2:] - px[:, :, 1:-1, :-2]) * inv2h                 # d field / dx
    gy = (px[:, :, 2:, 1:-1] - px[:, :, :-2, 1:-1]) * inv2h                 # d field / dy
    # inverse Jacobian of x -> x + field(x): [[a, b], [c, d]]^-1 = [[d, -b], [-c, a]] / det; the
    # sampled channels are fld, (d, a, b, c) / det and a step is (d rx - b ry, a ry - c rx)
    a, b, c, d = gx[:, 0:1] + 1, gy[:, 0:1], gx[:, 1:2], gy[:, 1:2] + 1
    rdet = 1.0 / (a * d - b * c).clamp_min(0.1)
    f6 = torch.cat([fld, torch.cat([d, a, b, c], 1) * rdet], 1)               # (B, 6, h, w)
    lo = base[:, :, :1, :1]
    scale = 2.0 / (base[:, :, -1:, -1:] - lo)
    x = base - fld
    lim = 4.0 * cell
    for _ in range(NEWTON_STEPS):
        smp = F.grid_sample(f6, ((x - lo) * scale - 1).permute(0, 2, 3, 1), mode="bilinear",
                            padding_mode="border", align_corners=True)
        r = x + smp[:, :2] - base
        # both components at once: (d, a) * (rx, ry) - (b, c) * (ry, rx)
        step = smp[:, 2:4] * r - smp[:, 4:6] * torch.cat([r[:, 1:2], r[:, 0:1]], 1)
        x = x - step.clamp(-lim, lim)
    return x


def geometry_core(motion: torch.Tensor, rest: torch.Tensor, basis: torch.Tensor, head_weight: torch.Tensor,
                  pivot: torch.Tensor, helper_ids: torch.Tensor, helper_basis: torch.Tensor,
                  grid_vertex: torch.Tensor, grid_bary: torch.Tensor, base: torch.Tensor,
                  params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-frame geometry on the full coarse grid: (pos (B, V, 2), helper (2B, M, 2), x (B, 2, G, G)).

    params (2,) float32: head-parallax cap (crop px), coarse grid spacing (crop px). Every rig tensor
    is an input, so one traced / exported graph serves every character of the same topology.
    """
    pos, helper = deform_core(motion, rest, basis, head_weight, pivot, helper_ids, helper_basis, params[0])
    x = backward_core(pos, rest[:, :2], grid_vertex, grid_bary, base, params[1])
    return pos, helper, x


def sample_core(x: torch.Tensor, texture: torch.Tensor, ogrid: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Coarse backward map x (B, 2, G, G) crop px -> sampled crop (B, C, h, w) float 0..255.

    texture (1, C, s, s) float 0..255; ogrid (1, h, w, 2) normalised positions of the crop's output
    pixels on the coarse grid; norm (1,) = 2 / (crop size - 1).
    """
    B = x.shape[0]
    grid = F.grid_sample(x * norm - 1, ogrid.expand(B, -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(texture.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


@dataclass
class _Group:
    """Host-side plan of one batched call (one rig, one output size)."""

    B: int
    N: int
    width: int
    height: int
    alpha: bool
    region: tuple[int, int, int, int] | None   # output px x0, y0, x1, y1 of the warped box (None: still frame)
    grid_box: tuple[int, int, int, int] | None  # coarse rows y0:y1, cols x0:x1 that move (None: nothing moves)
    eye_plan: object
    mouth_plan: object


def _cv2_threads() -> None:
    """Keep OpenCV's thread pool at torch's thread budget (the process's CPU budget for rendering)."""
    import cv2

    n = torch.get_num_threads()
    if cv2.getNumThreads() != n:
        cv2.setNumThreads(n)


def _ring_boxes(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 4) bounding box x0, y0, -x1, -y1 of the triangles around each vertex (where its motion reaches)."""
    V = vertices.shape[0]
    lo = np.full((V, 2), np.inf, np.float32)
    hi = np.full((V, 2), -np.inf, np.float32)
    tri_lo = vertices[triangles, :2].min(1)
    tri_hi = vertices[triangles, :2].max(1)
    for k in range(3):
        np.minimum.at(lo, triangles[:, k], tri_lo)
        np.maximum.at(hi, triangles[:, k], tri_hi)
    return np.concatenate([lo, -hi], 1)


class TorchRenderer:
    """The torch implementation of `Renderer` (CPU or CUDA)."""

    def __init__(self, device: str = "cpu", grid_size: int = 96):
        self.device = torch.device(device)
        self.grid_size = int(grid_size)
        self.name = f"torch-{self.device.type}"
        self._grids: dict[tuple[int, int, int, str], torch.Tensor] = {}
        self.cpu_remap = True
        # compute the coarse backward map only where the mesh moves (a host decision: CPU only, where
        # reading the moving box costs nothing; on a GPU the full grid is cheaper than a sync)
        self.subgrid = self.device.type == "cpu"
        # CPU cv2 path: the backward map and the eye / mouth layers as fused numba kernels (cpu_kernels),
        # where they compiled (cpu_kernels.AVAILABLE); False keeps the torch stages (tests compare the two)
        self.fused = True

    @property
    def encodes_jpeg(self) -> bool:
        """True on a CUDA device with torchvision's nvJPEG encoder: requests with `jpeg_quality` then come
        back as JPEG files made on the GPU (render/gpu_jpeg.py)."""
        from lpm_npc.render import gpu_jpeg

        return gpu_jpeg.available(str(self.device))

    # The CPU path warps with cv2.remap on a uint8 texture; the torch path (grid_sample) serves CUDA and
    # can be forced on CPU (tests compare the two).
    cpu_remap: bool = True

    def _cv2_path(self, p: PreparedRig) -> bool:
        return p.device.type == "cpu" and self.cpu_remap

    # ------------------------------------------------------------------ prepare
    def prepare(self, rig: CharacterRig) -> PreparedRig:
        if self.fused:
            # compiled (or loaded from numba's cache) before the first frame, not during it; the planning
            # kernels (contour tables, lip splines) run on the host for every device, the rest on the CPU path
            cpu_kernels.warm_up()
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
        V = g.vertices.shape[0]
        rows = np.repeat(np.arange(G * G), 3)
        with warnings.catch_warnings():  # sparse CSR is 'beta' in torch; the matmul used here is stable
            warnings.simplefilter("ignore")
            W = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, g.grid_vertex.reshape(-1)]), dtype=torch.long),
                                        torch.as_tensor(g.grid_bary.reshape(-1), dtype=torch.float32),
                                        (G * G, V)).coalesce().to_sparse_csr().to(dev)
        helper = np.concatenate([g.mouth_upper, g.eye_upper.reshape(-1)]).astype(np.int64)
        K = g.basis.shape[0]
        f32 = dict(dtype=torch.float32, device=dev)
        ring = _ring_boxes(g.vertices, g.triangles)
        prepared = PreparedRig(
            size=S, device=dev, textures=levels, plate=plate_t, iris_rgba=iris_rgba,
            rest=torch.as_tensor(g.vertices, **f32),
            basis=torch.as_tensor(g.basis.reshape(K, -1), **f32),
            head_weight=torch.as_tensor(g.head_weight, **f32)[:, None],
            pivot=torch.as_tensor(g.pivot, **f32), grid_size=G, field_matrix=W,
            base_grid_cf=torch.stack([gx, gy], 0)[None].contiguous().to(dev),
            ring_box=torch.as_tensor(ring, **f32),
            helper_ids=torch.as_tensor(helper, device=dev),
            helper_basis=torch.as_tensor(g.basis[:, helper].reshape(K, -1), **f32),
            mouth_upper=torch.as_tensor(g.mouth_upper, dtype=torch.long, device=dev),
            mouth_lower=torch.as_tensor(g.mouth_lower, dtype=torch.long, device=dev),
            eye_upper=torch.as_tensor(g.eye_upper, dtype=torch.long, device=dev),
            eye_lower=torch.as_tensor(g.eye_lower, dtype=torch.long, device=dev),
            iris=torch.as_tensor(g.iris, **f32), eye_heights=(eye_h[0], eye_h[1]),
            colours=torch.as_tensor(g.mouth_colours, **f32),
            lid_colours=torch.as_tensor(lid_colours(rig.image, rig.landmarks, g.eye_upper), **f32),
            mouth_width=float(g.scales[0]), face_width=float(g.scales[2]),
            iris_radii=np.asarray(g.iris[:, 2], np.float64),
            rest_corners=np.asarray(g.vertices[g.eye_upper[:, [0, -1]], :2], np.float64),
            grid_vertex=torch.as_tensor(np.ascontiguousarray(g.grid_vertex.reshape(G, G, 3).transpose(2, 0, 1), np.int64),
                                        device=dev),
            grid_bary=torch.as_tensor(np.ascontiguousarray(g.grid_bary.reshape(G, G, 3).transpose(2, 0, 1)), **f32),
            rest_np=np.ascontiguousarray(g.vertices[:, :2], np.float32), ring_box_np=ring,
            mouth_interior=prepare_interior(getattr(rig, "mouth_interior", None), dev))
        prepared.host.update(
            eye_upper=np.asarray(g.eye_upper, np.int64).reshape(-1), eye_lower=np.asarray(g.eye_lower, np.int64).reshape(-1),
            mouth_upper=np.asarray(g.mouth_upper, np.int64), mouth_lower=np.asarray(g.mouth_lower, np.int64))
        if prepared.device.type == "cpu":  # the fused geometry kernel's tables (contiguous, its exact types)
            _, keep = _term_masks(torch.device("cpu"))
            prepared.host.update(
                rest=np.ascontiguousarray(g.vertices, np.float32),
                basis=np.ascontiguousarray(g.basis.reshape(K, -1), np.float32),
                head_weight=np.ascontiguousarray(g.head_weight, np.float32).reshape(-1),
                pivot=np.ascontiguousarray(g.pivot, np.float32).reshape(-1),
                all_rows=np.arange(V, dtype=np.int64), helper_ids=helper,
                helper_basis=np.ascontiguousarray(g.basis[:, helper].reshape(K, -1), np.float32),
                keep=np.ascontiguousarray(keep.numpy(), np.float32))
        return prepared

    # ------------------------------------------------------------------ per frame
    def vertex_positions(self, p: PreparedRig, motion: torch.Tensor,
                         terms: torch.Tensor | None = None) -> torch.Tensor:
        """Deformed 2D vertex positions (B, V, 2) in crop px."""
        if terms is None:
            terms = motion_to_terms(motion)
        return _deform(terms, p.basis, p.rest, p.head_weight, p.pivot, _Pose(motion, HEAD_CAP * p.face_width))

    def backward_map(self, p: PreparedRig, pos: torch.Tensor) -> torch.Tensor:
        """Coarse backward map (B, 2, G, G) in crop px on the full grid (see `backward_core`)."""
        return backward_core(pos, p.rest[:, :2], p.grid_vertex, p.grid_bary, p.base_grid_cf,
                             (p.size - 1) / (p.grid_size - 1))

    def render(self, prepared: PreparedRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray:
        """Render (B, height, width, 4) uint8 RGBA frames for motion (B, NUM_CHANNELS)."""
        width, height = _validate_size(width, height)
        m = _validate_motion(motion)
        with torch.inference_mode():
            return self._render_group(prepared, m, width, height, bool(alpha_matte))

    def render_many(self, requests: list[RenderRequest]) -> list[np.ndarray]:
        """One (H, W, 4) uint8 frame per request, any mix of rigs and sizes.

        Requests are grouped by (size, matte, conversions) and then by rig; each group is one batched call.
        """
        groups: dict[tuple, dict[int, list[int]]] = {}
        rigs: dict[int, PreparedRig] = {}
        motions = []
        for i, rq in enumerate(requests):
            w, h = _validate_size(rq.width, rq.height)
            m = _validate_motion(rq.motion)
            if m.shape[0] != 1:
                raise InvalidInputError(f"a RenderRequest holds one motion ({NUM_CHANNELS},), got {np.shape(rq.motion)}")
            motions.append(m[0])
            key = (w, h, bool(rq.alpha_matte), bool(getattr(rq, "bgra", False)), bool(getattr(rq, "flip_y", False)),
                   int(getattr(rq, "jpeg_quality", 0)))
            rigs[id(rq.prepared)] = rq.prepared
            groups.setdefault(key, {}).setdefault(id(rq.prepared), []).append(i)
        out: list[np.ndarray | None] = [None] * len(requests)
        with torch.inference_mode():
            for (w, h, alpha, bgra, flip, jpeg), by_rig in groups.items():
                for rid, idx in by_rig.items():
                    frames = self._render_group(rigs[rid], np.stack([motions[i] for i in idx]), w, h, alpha,
                                                bgra=bgra, flip_y=flip, jpeg_quality=jpeg)
                    for j, i in enumerate(idx):
                        out[i] = frames[j]
        return out  # type: ignore[return-value]

    def _texture(self, p: PreparedRig, N: int) -> torch.Tensor:
        tex = p.textures[0]
        for level in p.textures[1:]:
            if level.shape[-1] >= N:
                tex = level
        return tex

    def _still(self, p: PreparedRig, N: int, width: int, height: int, alpha: bool):
        """The reference resampled to the output (identity map): (H, W, 4) uint8, numpy on CPU."""
        key = (N, width, height, alpha, self._cv2_path(p), self.name)
        still = p.still.get(key)
        if still is None:
            tex = self._texture(p, N)
            if self._cv2_path(p):  # the same path as the per-frame warp, with the identity map
                import cv2

                _cv2_threads()
                side = tex.shape[-1]
                maps = self._maps_cpu(p, p.base_grid_cf, N, width, height, side, (0, 0, width, height))
                still = cv2.remap(self._texture_u8(p, side, alpha), maps[0, 0], maps[0, 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            else:
                img = self._sample(p, p.base_grid_cf, N, width, height, (0, 0, width, height), True)
                if not alpha:
                    img[:, 3] = 255.0
                still = img.add_(0.5).clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
            if len(p.still) > 24:
                for k in [k for k in p.still if k[0] != "tex8"]:
                    del p.still[k]
            p.still[key] = still
        return still

    # ------------------------------------------------------------------ stages (overridden by backends)
    def _geometry(self, p: PreparedRig, motion: torch.Tensor) -> tuple[np.ndarray, np.ndarray, object]:
        """Posed vertices (B, V, 2) and helper vertices (2B, M, 2) on the host, plus what `_backward` needs."""
        if self._fused(p) and "basis" in p.host:
            h = p.host
            pos_np, helper_np = cpu_kernels.deform(
                np.ascontiguousarray(motion.numpy(), np.float32), _PROD_IDX, _TERM_MATRIX, h["basis"], h["rest"],
                h["all_rows"], h["head_weight"], h["pivot"], h["helper_ids"], h["helper_basis"],
                np.float32(HEAD_CAP * p.face_width), TERM_INDEX["bias"], h["keep"])
            return pos_np, helper_np, torch.from_numpy(pos_np)
        pos, helper = deform_core(motion, p.rest, p.basis, p.head_weight, p.pivot, p.helper_ids, p.helper_basis,
                                  HEAD_CAP * p.face_width)
        host = torch.cat([pos.reshape(-1), helper.reshape(-1)]).cpu().numpy()   # the one host sync
        n = pos.numel()
        return host[:n].reshape(pos.shape), host[n:].reshape(helper.shape), pos

    def _backward(self, p: PreparedRig, ctx: object, grid_box: tuple[int, int, int, int] | None, B: int) -> torch.Tensor:
        """Coarse backward map (B, 2, G, G), crop px; the identity outside `grid_box` (rows y0:y1, cols x0:x1)."""
        base = p.base_grid_cf
        if grid_box is None:
            return base.expand(B, -1, -1, -1)
        G = p.grid_size
        cell = (p.size - 1) / (G - 1)
        y0, y1, x0, x1 = grid_box
        pos = ctx
        if self._fused(p):
            return self._backward_fused(p, pos, grid_box, cell)
        if not self.subgrid or (y1 - y0) * (x1 - x0) > 0.85 * G * G:
            return backward_core(pos, p.rest[:, :2], p.grid_vertex, p.grid_bary, base, cell)
        sub = backward_core(pos, p.rest[:, :2], p.grid_vertex[:, y0:y1, x0:x1], p.grid_bary[:, y0:y1, x0:x1],
                            base[:, :, y0:y1, x0:x1], cell)
        x = base.repeat(B, 1, 1, 1)
        x[:, :, y0:y1, x0:x1] = sub
        return x

    def _fused(self, p: PreparedRig) -> bool:
        """Whether this call's per-point / per-pixel stages run as the fused numba kernels (CPU cv2 path)."""
        return self.fused and cpu_kernels.AVAILABLE and self._cv2_path(p)

    def _backward_fused(self, p: PreparedRig, pos: torch.Tensor, grid_box: tuple[int, int, int, int],
                        cell: float) -> torch.Tensor:
        """`backward_core` on the moving subgrid as one numba kernel; the identity elsewhere (views of the
        rig's CPU tensors go in, no copies)."""
        y0, y1, x0, x1 = grid_box
        x = cpu_kernels.backward_map(pos.numpy(), p.rest_np, p.grid_vertex.numpy(), p.grid_bary.numpy(),
                                     p.base_grid_cf[0].numpy(), y0, y1, x0, x1, float(cell), NEWTON_STEPS)
        return torch.from_numpy(x)

    def _sample(self, p: PreparedRig, x: torch.Tensor, N: int, width: int, height: int,
                region: tuple[int, int, int, int], alpha: bool) -> torch.Tensor:
        """Float crop (B, C, h, w) 0..255 of the region (C = 4 with the matte, else 3)."""
        rx0, ry0, rx1, ry1 = region
        tex = self._texture(p, N)
        if not alpha:  # the matte is not needed: sample RGB only
            tex = tex[:, :3]
        ogrid = self._output_grid(N, width, height, x.device)[:, ry0:ry1, rx0:rx1]
        return sample_core(x, tex, ogrid, 2.0 / (p.size - 1))

    # ------------------------------------------------------------------ one batched call
    def _plan(self, p: PreparedRig, pos: np.ndarray, helper: np.ndarray, m_host: np.ndarray, width: int,
              height: int, alpha: bool) -> _Group:
        B = pos.shape[0]
        N = max(width, height)
        ox, oy = (N - width) // 2, (N - height) // 2
        S, G = p.size, p.grid_size
        s = (S - 1) / (N - 1)          # crop px per output px
        cell = (S - 1) / (G - 1)
        # the box (crop px) of the triangles around the vertices that move
        # (B, V, 2) -> (V,): reduced as 2-D arrays (numpy's reduce over axes (0, 2) took 1 ms for 55 frames,
        # 7.5 % of the GPU render service's thread at 64 NPCs; this takes 0.07 ms)
        moving = np.abs(pos - p.rest_np).reshape(B, -1).max(0).reshape(-1, 2).max(1) > ACTIVE_EPS
        grid_box = None
        boxes = []
        if moving.any():
            mb = p.ring_box_np[moving].min(0)
            mx0, my0, mx1, my1 = float(mb[0]), float(mb[1]), float(-mb[2]), float(-mb[3])
            # coarse grid: 3 still points of margin on each side (Newton's border samples stay exact)
            grid_box = (max(0, int(np.floor(my0 / cell)) - 3), min(G, int(np.ceil(my1 / cell)) + 4),
                        max(0, int(np.floor(mx0 / cell)) - 3), min(G, int(np.ceil(mx1 / cell)) + 4))
            # crop px -> output px, one coarse cell of margin for the bilinear upsample
            boxes.append(((mx0 - cell) / s - ox - 1, (my0 - cell) / s - oy - 1,
                          (mx1 + cell) / s - ox + 2, (my1 + cell) / s - oy + 2))
        off = np.array([ox, oy], np.float32)
        inv = np.float32(1.0 / s)
        pos_out = (pos * inv - off).astype(np.float64)
        helper = (helper * inv - off).astype(np.float64)
        h = p.host
        n_mouth = h["mouth_upper"].shape[0]
        lids = lambda a: a.reshape(B, 2, -1, 2).transpose(1, 0, 2, 3)
        eu, el = lids(pos_out[:, h["eye_upper"]]), lids(pos_out[:, h["eye_lower"]])
        eo = lids(helper[B:, n_mouth:])  # the no-blink half
        gaze = m_host[:, CHANNEL_INDEX["gaze_x"]:CHANNEL_INDEX["gaze_y"] + 1] * np.asarray(GAZE_RANGE)
        eye_plan = plan_eyes(
            eu, el, eo, m_host[:, [CHANNEL_INDEX["blink_l"], CHANNEL_INDEX["blink_r"]]].T.astype(np.float64),
            gaze[None] * p.iris_radii[:, None, None], (p.eye_heights[0] / s, p.eye_heights[1] / s),
            p.rest_corners, s, (float(ox), float(oy)), S, width, height)
        mouth_plan = plan_mouth(pos_out[:, h["mouth_upper"]], pos_out[:, h["mouth_lower"]], helper[:B, :n_mouth],
                                p.mouth_width / s, width, height)
        if eye_plan is not None:
            boxes.append(eye_plan.box)
        if mouth_plan is not None:
            boxes.append(mouth_plan.box)
        region = None
        if boxes:
            rx0 = max(0, int(np.floor(min(b[0] for b in boxes))))
            ry0 = max(0, int(np.floor(min(b[1] for b in boxes))))
            rx1 = min(width, int(np.ceil(max(b[2] for b in boxes))))
            ry1 = min(height, int(np.ceil(max(b[3] for b in boxes))))
            if rx1 > rx0 and ry1 > ry0:
                region = (rx0, ry0, rx1, ry1)
        return _Group(B=B, N=N, width=width, height=height, alpha=alpha, region=region, grid_box=grid_box,
                      eye_plan=eye_plan, mouth_plan=mouth_plan)

    def _render_group(self, p: PreparedRig, m_host: np.ndarray, width: int, height: int, alpha: bool,
                      bgra: bool = False, flip_y: bool = False, jpeg_quality: int = 0):
        """(B, H, W, 4) uint8 frames of one rig at one size; m_host (B, C) validated motion. With
        `jpeg_quality` on a device that encodes JPEG: a list of B JPEG files (1-D uint8 arrays)."""
        motion = torch.from_numpy(m_host).to(p.device, non_blocking=True)   # no wait for the GPU's queue
        pos, helper, ctx = self._geometry(p, motion)
        g = self._plan(p, pos, helper, m_host, width, height, alpha)
        B, N = g.B, g.N
        still = self._still(p, N, width, height, alpha)
        if isinstance(still, np.ndarray):
            frames = np.empty((B,) + still.shape, np.uint8)
            frames[:] = still
            if g.region is not None:
                x = self._backward(p, ctx, g.grid_box, B)
                self._warp_cpu(p, x, N, self._texture(p, N), frames, g.region, g.eye_plan, g.mouth_plan, alpha)
            return _convert_np(frames, bgra, flip_y)
        frames = still[None].repeat(B, 1, 1, 1)
        if g.region is not None:
            rx0, ry0, rx1, ry1 = g.region
            x = self._backward(p, ctx, g.grid_box, B)
            canvas = self._sample(p, x, N, width, height, g.region, alpha)
            if g.eye_plan is not None:
                composite_eyes(canvas, (rx0, ry0), g.eye_plan, p.plate, p.iris_rgba, p.lid_colours)
            if g.mouth_plan is not None:
                composite_mouth(canvas, (rx0, ry0), g.mouth_plan, p.colours, p.mouth_interior)
            C = canvas.shape[1]  # 3 (opaque: alpha stays 255 from the still frame) or 4
            frames[:, ry0:ry1, rx0:rx1, :C] = canvas.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        if jpeg_quality > 0 and frames.is_cuda and self.encodes_jpeg:
            from lpm_npc.render import gpu_jpeg

            return gpu_jpeg.encode_batch(frames, jpeg_quality, flip_y)
        if bgra:  # on the device: one gather, then one transfer
            frames = frames[..., [2, 1, 0, 3]]
        if flip_y:
            frames = frames.flip(1)
        return np.ascontiguousarray(frames.cpu().numpy())

    def _warp_cpu(self, p: PreparedRig, x: torch.Tensor, N: int, tex: torch.Tensor,
                  frames: np.ndarray, region: tuple[int, int, int, int], eye_plan, mouth_plan,
                  alpha: bool) -> np.ndarray:
        """CPU path: `cv2.remap` of a uint8 RGBA texture writes the warped region straight into the frames
        (no float image, no float -> uint8 pass); the layers then work on a float copy of their own box."""
        import cv2

        _cv2_threads()
        B = frames.shape[0]
        rx0, ry0, rx1, ry1 = region
        side = tex.shape[-1]
        tex8 = self._texture_u8(p, side, alpha)
        H, W = frames.shape[1:3]
        maps = self._maps_cpu(p, x, N, W, H, side, region)
        for b in range(B):  # separate x / y map planes: no interleaving copy
            frames[b, ry0:ry1, rx0:rx1] = cv2.remap(tex8, maps[b, 0], maps[b, 1], cv2.INTER_LINEAR,
                                                    borderMode=cv2.BORDER_REPLICATE)
        boxes = [pl.box for pl in (eye_plan, mouth_plan) if pl is not None]
        if not boxes:
            return frames
        if self._fused(p):
            self._layers_fused(p, frames, eye_plan, mouth_plan)
            return frames
        lx0 = max(rx0, min(b[0] for b in boxes))
        ly0 = max(ry0, min(b[1] for b in boxes))
        lx1 = min(rx1, max(b[2] for b in boxes))
        ly1 = min(ry1, max(b[3] for b in boxes))
        if lx1 <= lx0 or ly1 <= ly0:
            return frames
        sub = frames[:, ly0:ly1, lx0:lx1]
        canvas = torch.from_numpy(np.ascontiguousarray(sub[..., :3].transpose(0, 3, 1, 2))).float()
        if eye_plan is not None:
            composite_eyes(canvas, (lx0, ly0), eye_plan, p.plate, p.iris_rgba, p.lid_colours)
        if mouth_plan is not None:
            composite_mouth(canvas, (lx0, ly0), mouth_plan, p.colours, p.mouth_interior)
        r = canvas.numpy()
        for b in range(B):
            # convertScaleAbs rounds and saturates to uint8 in one pass (values are >= 0: convex blends of
            # 0..255 colours); merge interleaves planes far faster than a strided numpy copy
            planes = [cv2.convertScaleAbs(r[b, c]) for c in range(3)]
            sub[b] = cv2.merge(planes + [np.ascontiguousarray(sub[b, :, :, 3])])
        return frames

    def _layers_fused(self, p: PreparedRig, frames: np.ndarray, eye_plan, mouth_plan) -> None:
        """The eye and mouth layers as numba kernels, straight on the uint8 frames (no float canvas)."""
        # views of the device (= host) tensors, no copies; taken per call, as a PreparedRig copied with
        # dataclasses.replace (another interior, say) shares the `host` dict with the original
        if eye_plan is not None:
            (w, hh) = eye_plan.size
            cpu_kernels.eye_layer(frames, np.asarray(eye_plan.origins, np.int64), int(w), int(hh), eye_plan.affine,
                                  np.ascontiguousarray(eye_plan.table[:, :, 0]), eye_plan.gate, bool(eye_plan.blinking),
                                  eye_plan.eye_height, p.plate[0].numpy(), p.iris_rgba[0].numpy(), p.lid_colours.numpy())
        if mouth_plan is not None:
            mi = p.mouth_interior
            itex, igap = (mi.texture[0].numpy(), mi.gap[0].numpy()) if mi is not None else _NO_INTERIOR
            cpu_kernels.mouth_layer(frames, np.asarray(mouth_plan.box, np.int64), mouth_plan.affine,
                                    np.ascontiguousarray(mouth_plan.table[:, :, 0]), p.colours.numpy(),
                                    np.float32(mouth_plan.mouth_width), np.float32(mouth_plan.max_gap), mi is not None,
                                    itex, igap)

    def _maps_cpu(self, p: PreparedRig, x: torch.Tensor, N: int, width: int, height: int, side: int,
                  region: tuple[int, int, int, int]) -> np.ndarray:
        """(B, 2, h, w) float32 texture-level px (x plane, y plane) of the region's output pixels.

        The coarse backward map x (B, 2, G, G) in crop px is scaled to the texture level (align_corners:
        0..S-1 -> 0..side-1) and upsampled per pixel by grid_sample: each pixel's value depends only on its
        own position, never on the region box or the batch (the still frame is made the same way).
        """
        rx0, ry0, rx1, ry1 = region
        G = x.shape[-1]
        if self._fused(p):  # the same bilinear weights, one numba loop instead of two matmuls
            ry = self._interp_rows(N, height, (N - height) // 2, G, ry0, ry1, index=True)
            rx = self._interp_rows(N, width, (N - width) // 2, G, rx0, rx1, index=True)
            return cpu_kernels.upsample_map(np.ascontiguousarray(x.numpy()), np.float32((side - 1) / (p.size - 1)), *ry, *rx)
        wy, y0, y1 = self._interp_rows(N, height, (N - height) // 2, G, ry0, ry1)
        wx, x0, x1 = self._interp_rows(N, width, (N - width) // 2, G, rx0, rx1)
        # bilinear (align_corners, border) is separable: rows then columns, as two small matmuls
        # over the coarse cells the region touches (~4x cheaper than grid_sample's per-pixel gather)
        level = x[:, :, y0:y1, x0:x1] * ((side - 1) / (p.size - 1))
        (h, gh), (w, gw) = wy.shape, wx.shape
        if h * gw * (gh + w) <= w * gh * (gw + h):   # the cheaper order
            return torch.matmul(torch.matmul(wy, level), wx.T).numpy()
        return torch.matmul(wy, torch.matmul(level, wx.T)).numpy()

    def _interp_rows(self, N: int, n: int, offset: int, G: int, lo: int, hi: int, index: bool = False):
        """Linear interpolation weights (hi - lo, k1 - k0) of output px lo..hi-1 (of n, at `offset` in the
        N-px square) on coarse cells k0..k1-1 of G, exactly as grid_sample(align_corners, border) samples.

        index=True: the same as numpy (i0 int64, i1 int64, f float32) per output px: the coarse cells
        either side and the weight of i1."""
        key = ("interp", N, n, offset, G)
        table = self._grids.get(key)
        if table is None:
            g = (torch.arange(n, dtype=torch.float32) + offset) * (2.0 / (N - 1)) - 1  # as _output_grid
            src = ((g + 1) * 0.5 * (G - 1)).clamp_(0, G - 1)
            i0 = src.floor().long().clamp_(max=G - 1)
            i1 = (i0 + 1).clamp_(max=G - 1)
            f = src - i0.float()
            W = torch.zeros(n, G)
            W[torch.arange(n), i0] += 1 - f
            W[torch.arange(n), i1] += f
            table = self._grids[key] = (W, i0, i1, (i0.numpy(), i1.numpy(), f.numpy()))
        W, i0, i1, idx = table
        if index:
            return tuple(a[lo:hi] for a in idx)
        k0, k1 = int(i0[lo]), int(i1[hi - 1]) + 1
        return W[lo:hi, k0:k1], k0, k1

    def _texture_u8(self, p: PreparedRig, side: int, alpha: bool) -> np.ndarray:
        """(side, side, 4) uint8 RGBA texture level for cv2 (alpha = matte, or 255 when opaque), cached."""
        key = ("tex8", side, alpha)
        t = p.still.get(key)
        if t is None:
            lvl = next(level for level in p.textures if level.shape[-1] == side)
            img = lvl[0].permute(1, 2, 0).numpy().copy()
            if not alpha:
                img[..., 3] = 255.0
            t = np.clip(img + 0.5, 0, 255).astype(np.uint8)
            p.still[key] = t
        return t

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


_NO_INTERIOR = (np.zeros((3, 2, 2), np.float32), np.zeros((1, 1, 2), np.float32))  # the mouth kernel's unused inputs


def _convert_np(frames: np.ndarray, bgra: bool, flip_y: bool) -> np.ndarray:
    if bgra:
        frames = frames[..., [2, 1, 0, 3]]
    if flip_y:
        frames = np.ascontiguousarray(frames[:, ::-1])
    return frames
