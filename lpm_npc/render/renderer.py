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
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from lpm_npc.character.geometry import TERM_INDEX, TERMS
from lpm_npc.character.rig import CharacterRig
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.motion import CHANNEL_INDEX, MOTION_CHANNELS, NUM_CHANNELS, clip_motion
from lpm_npc.render.eyes import build_eye_textures, composite_eyes, lid_colours, plan_eyes
from lpm_npc.render.mouth import composite_mouth, plan_mouth

log = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_SIDE = 1024
NEWTON_STEPS = 2
GAZE_RANGE = (0.75, 0.45)  # iris travel at |gaze| = 1, in iris radii (x, y)
# yaw/pitch parallax per vertex is softly capped at this share of the face width: realistic head
# motion (|yaw| <= 8, |pitch| <= 6 degrees) stays nearly linear, large angles degrade gracefully
HEAD_CAP = 0.15
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


class Renderer(Protocol):
    name: str

    def prepare(self, rig: CharacterRig) -> PreparedRig: ...

    def render(self, prepared: PreparedRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray: ...


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
    ch = lambda n: 1 + CHANNEL_INDEX[n]  # noqa: E731
    pr = lambda *n: 1 + C + _PRODUCTS.index(tuple(n))  # noqa: E731
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


class _Pose:
    """Per-frame head pose terms shared by every deformation of the frame."""

    def __init__(self, motion: torch.Tensor, cap: float):
        ang = torch.deg2rad(motion[:, -3:])           # yaw, pitch, roll
        c, s = torch.cos(ang), torch.sin(ang)
        cy, cp, cr = c.unbind(1)
        sy, sp, sr = s.unbind(1)
        zero = torch.zeros_like(cy)
        # parallax of (Ry @ Rx - I), rows x, y only: rel (V, 3) @ A (3, 2)
        self.A = torch.stack([cy - 1, zero, -sy * sp, cp - 1, -sy * cp, -sp], -1).view(-1, 3, 2)
        self.roll = torch.stack([cr - 1, sr, -sr, cr - 1], -1).view(-1, 2, 2)  # row-vector form of Rz - I
        self.cap = cap

    def repeat(self, n: int) -> "_Pose":
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

    # The CPU path warps with cv2.remap on a uint8 texture; the torch path (grid_sample) serves CUDA and
    # can be forced on CPU (tests compare the two).
    cpu_remap: bool = True

    def _cv2_path(self, p: PreparedRig) -> bool:
        return p.device.type == "cpu" and self.cpu_remap

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
        return PreparedRig(
            size=S, device=dev, textures=levels, plate=plate_t, iris_rgba=iris_rgba,
            rest=torch.as_tensor(g.vertices, **f32),
            basis=torch.as_tensor(g.basis.reshape(K, -1), **f32),
            head_weight=torch.as_tensor(g.head_weight, **f32)[:, None],
            pivot=torch.as_tensor(g.pivot, **f32), grid_size=G, field_matrix=W,
            base_grid_cf=torch.stack([gx, gy], 0)[None].contiguous().to(dev),
            ring_box=torch.as_tensor(_ring_boxes(g.vertices, g.triangles), **f32),
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
            rest_corners=np.asarray(g.vertices[g.eye_upper[:, [0, -1]], :2], np.float64))

    # ------------------------------------------------------------------ per frame
    def vertex_positions(self, p: PreparedRig, motion: torch.Tensor,
                         terms: torch.Tensor | None = None) -> torch.Tensor:
        """Deformed 2D vertex positions (B, V, 2) in crop px."""
        if terms is None:
            terms = motion_to_terms(motion)
        return _deform(terms, p.basis, p.rest, p.head_weight, p.pivot, _Pose(motion, HEAD_CAP * p.face_width))

    def backward_map(self, p: PreparedRig, pos: torch.Tensor) -> torch.Tensor:
        """Coarse backward map (B, 2, G, G) in crop px: the source point of every coarse grid point.

        The forward field lives on the grid (sparse barycentric matmul); it is inverted by Newton
        steps with its finite-difference Jacobian (a fixed-point iteration stalls where the face
        slides over still anchors). Folds (det <= 0.1) are damped rather than followed.
        """
        B = pos.shape[0]
        G = p.grid_size
        disp = (pos - p.rest[None, :, :2]).permute(1, 2, 0).reshape(-1, 2 * B)   # (V, 2B)
        fld = (p.field_matrix @ disp).view(G, G, 2, B).permute(3, 2, 0, 1)        # (B, 2, G, G)
        inv2h = 0.5 * (G - 1) / (p.size - 1)
        px = F.pad(fld, (1, 1, 1, 1), mode="replicate")
        gx = (px[:, :, 1:-1, 2:] - px[:, :, 1:-1, :-2]) * inv2h                 # d field / dx
        gy = (px[:, :, 2:, 1:-1] - px[:, :, :-2, 1:-1]) * inv2h                 # d field / dy
        # inverse Jacobian of x -> x + field(x): [[a, b], [c, d]]^-1 = [[d, -b], [-c, a]] / det, stored by
        # columns (first column, then second) so that a step is col0 * rx + col1 * ry
        a, b, c, d = gx[:, 0:1] + 1, gy[:, 0:1], gx[:, 1:2], gy[:, 1:2] + 1
        det = (a * d - b * c).clamp_min_(0.1)
        f6 = torch.cat([fld, torch.cat([d, -c, -b, a], 1) / det], 1)           # (B, 6, G, G)
        y = p.base_grid_cf
        x = y - fld
        norm = 2.0 / (p.size - 1)
        lim = 2.0 / inv2h
        for _ in range(NEWTON_STEPS):
            smp = F.grid_sample(f6, (x * norm - 1).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                                align_corners=True)
            r = x + smp[:, :2] - y
            step = smp[:, 2:4] * r[:, 0:1] + smp[:, 4:6] * r[:, 1:2]
            x = x - step.clamp_(-lim, lim)
        return x

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
            return self._render(prepared, torch.from_numpy(m).to(prepared.device), m, width, height, alpha_matte)

    def _texture(self, p: PreparedRig, N: int) -> torch.Tensor:
        tex = p.textures[0]
        for level in p.textures[1:]:
            if level.shape[-1] >= N:
                tex = level
        return tex

    def _still(self, p: PreparedRig, N: int, width: int, height: int, alpha: bool):
        """The reference resampled to the output (identity map): (H, W, 4) uint8, numpy on CPU."""
        key = (N, width, height, alpha, self._cv2_path(p))
        still = p.still.get(key)
        if still is None:
            grid = self._output_grid(N, width, height, p.device)
            tex = self._texture(p, N)
            if self._cv2_path(p):  # the same path as the per-frame warp, with the identity map
                import cv2

                _cv2_threads()
                side = tex.shape[-1]
                maps = self._maps_cpu(p, p.base_grid_cf, N, width, height, side, (0, 0, width, height))
                still = cv2.remap(self._texture_u8(p, side, alpha), maps[0, 0], maps[0, 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            else:
                img = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=True)
                if not alpha:
                    img[:, 3] = 255.0
                still = img.add_(0.5).clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
            if len(p.still) > 24:
                for k in [k for k in p.still if k[0] != "tex8"]:
                    del p.still[k]
            p.still[key] = still
        return still

    def _render(self, p: PreparedRig, motion: torch.Tensor, m_host: np.ndarray, width: int, height: int,
                alpha: bool):
        B = motion.shape[0]
        dev = p.device
        N = max(width, height)
        ox, oy = (N - width) // 2, (N - height) // 2
        S, G = p.size, p.grid_size
        s = (S - 1) / (N - 1)          # crop px per output px
        pose = _Pose(motion, HEAD_CAP * p.face_width)
        terms = motion_to_terms(motion)
        pos = _deform(terms, p.basis, p.rest, p.head_weight, p.pivot, pose)
        # helper poses: teeth hang from the inner upper lip without expression (bias + head only);
        # lids cover the eye from where the upper lid would be without blinking
        neutral = torch.zeros_like(terms)
        neutral[:, TERM_INDEX["bias"]] = 1.0
        no_blink = terms.clone()
        no_blink[:, _BLINK_TERMS] = 0.0
        hid = p.helper_ids
        hpose = pose.repeat(2)
        helper = _deform(torch.cat([neutral, no_blink]), p.helper_basis, p.rest[hid], p.head_weight[hid], p.pivot,
                         hpose)
        off = torch.tensor([ox, oy], dtype=torch.float32, device=dev)
        pos_out = pos * (1.0 / s) - off
        helper = helper * (1.0 / s) - off
        n_mouth = p.mouth_upper.shape[0]

        # coarse backward map, and the box (crop px) of the triangles around the vertices that move
        x = self.backward_map(p, pos)
        moving = ((pos - p.rest[:, :2]).abs().amax(dim=(0, 2)) > ACTIVE_EPS)    # (V,)
        move_box = torch.where(moving[:, None], p.ring_box, float(4 * S)).amin(0)
        # one host sync: the moving box and the layer contours (layers plan per item on the host)
        parts = [move_box, pos_out[:, p.eye_upper.reshape(-1)], pos_out[:, p.eye_lower.reshape(-1)],
                 helper[:, n_mouth:], pos_out[:, p.mouth_upper], pos_out[:, p.mouth_lower], helper[:B, :n_mouth]]
        host = torch.cat([t.reshape(-1) for t in parts]).cpu().numpy().astype(np.float64)
        sizes = [t.numel() for t in parts]
        mb, eu, el, eo, mu, ml, mt = np.split(host, np.cumsum(sizes)[:-1])
        lids = lambda a: a.reshape(B, 2, -1, 2).transpose(1, 0, 2, 3)  # noqa: E731  (2, B, 9, 2)
        eu, el = lids(eu), lids(el)
        eo = eo.reshape(2, B, -1, 2)[1].reshape(B, 2, -1, 2).transpose(1, 0, 2, 3)  # the no-blink half
        gaze = m_host[:, CHANNEL_INDEX["gaze_x"]:CHANNEL_INDEX["gaze_y"] + 1] * np.asarray(GAZE_RANGE)
        eye_plan = plan_eyes(
            eu, el, eo, m_host[:, [CHANNEL_INDEX["blink_l"], CHANNEL_INDEX["blink_r"]]].T.astype(np.float64),
            gaze[None] * p.iris_radii[:, None, None], (p.eye_heights[0] / s, p.eye_heights[1] / s),
            p.rest_corners, s, (float(ox), float(oy)), S, width, height)
        mouth_plan = plan_mouth(mu.reshape(B, -1, 2), ml.reshape(B, -1, 2), mt.reshape(B, -1, 2),
                                p.mouth_width / s, width, height)

        boxes = []
        mx0, my0, mx1, my1 = mb[0], mb[1], -mb[2], -mb[3]
        if mx1 >= mx0:  # crop px -> output px, one coarse cell of margin for the bilinear upsample
            cell = (S - 1) / (G - 1)
            boxes.append(((mx0 - cell) / s - ox - 1, (my0 - cell) / s - oy - 1,
                          (mx1 + cell) / s - ox + 2, (my1 + cell) / s - oy + 2))
        if eye_plan is not None:
            boxes.append(eye_plan.box)
        if mouth_plan is not None:
            boxes.append(mouth_plan.box)
        still = self._still(p, N, width, height, alpha)
        if self._cv2_path(p):
            frames = np.empty((B,) + still.shape, np.uint8)
            frames[:] = still
        else:
            frames = still[None].repeat(B, 1, 1, 1)
        if not boxes:
            return frames if isinstance(frames, np.ndarray) else frames.cpu().numpy()
        rx0 = max(0, int(np.floor(min(b[0] for b in boxes))))
        ry0 = max(0, int(np.floor(min(b[1] for b in boxes))))
        rx1 = min(width, int(np.ceil(max(b[2] for b in boxes))))
        ry1 = min(height, int(np.ceil(max(b[3] for b in boxes))))
        if rx1 <= rx0 or ry1 <= ry0:
            return frames if isinstance(frames, np.ndarray) else frames.cpu().numpy()

        origin = (rx0, ry0)
        tex = self._texture(p, N)
        if isinstance(frames, np.ndarray):
            return self._warp_cpu(p, x, N, tex, frames, (rx0, ry0, rx1, ry1), eye_plan, mouth_plan, alpha)
        ogrid = self._output_grid(N, width, height, dev)[:, ry0:ry1, rx0:rx1].expand(B, -1, -1, -1)
        norm = 2.0 / (S - 1)
        grid = F.grid_sample(x * norm - 1, ogrid, mode="bilinear", padding_mode="border",
                             align_corners=True).permute(0, 2, 3, 1)
        if not alpha:  # the matte is not needed: sample RGB only
            tex = tex[:, :3]
        canvas = F.grid_sample(tex.expand(B, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                               align_corners=True)
        if eye_plan is not None:
            composite_eyes(canvas, origin, eye_plan, p.plate, p.iris_rgba, p.lid_colours)
        if mouth_plan is not None:
            composite_mouth(canvas, origin, mouth_plan, p.colours)
        C = canvas.shape[1]  # 3 (opaque: alpha stays 255 from the still frame) or 4
        frames[:, ry0:ry1, rx0:rx1, :C] = canvas.add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return frames.cpu().numpy()

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
            composite_mouth(canvas, (lx0, ly0), mouth_plan, p.colours)
        r = canvas.numpy()
        for b in range(B):
            # convertScaleAbs rounds and saturates to uint8 in one pass (values are >= 0: convex blends of
            # 0..255 colours); merge interleaves planes far faster than a strided numpy copy
            planes = [cv2.convertScaleAbs(r[b, c]) for c in range(3)]
            sub[b] = cv2.merge(planes + [np.ascontiguousarray(sub[b, :, :, 3])])
        return frames

    def _maps_cpu(self, p: PreparedRig, x: torch.Tensor, N: int, width: int, height: int, side: int,
                  region: tuple[int, int, int, int]) -> np.ndarray:
        """(B, 2, h, w) float32 texture-level px (x plane, y plane) of the region's output pixels.

        The coarse backward map x (B, 2, G, G) in crop px is scaled to the texture level (align_corners:
        0..S-1 -> 0..side-1) and upsampled per pixel by grid_sample: each pixel's value depends only on its
        own position, never on the region box or the batch (the still frame is made the same way).
        """
        rx0, ry0, rx1, ry1 = region
        ogrid = self._output_grid(N, width, height, x.device)[:, ry0:ry1, rx0:rx1]
        level = x * ((side - 1) / (p.size - 1))
        return F.grid_sample(level, ogrid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border",
                             align_corners=True).numpy()

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
