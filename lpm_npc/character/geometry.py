"""Rig geometry: the mesh, the per-channel displacement basis and the coarse backward-map tables.

Everything here is computed once per character (numpy/scipy); the renderer only does matmul,
gather and sampling with it. Coordinates are pixels of the square rig crop (x right, y down);
z is mediapipe depth in the same pixel scale (negative = toward the camera).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
from scipy.spatial import Delaunay

log = logging.getLogger(__name__)

# --- mediapipe face-mesh indices -----------------------------------------------------------------
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# image-left eye = the character's RIGHT eye (ARKit convention: *_r)
EYE_R_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_R_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_L_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
EYE_L_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)  # outer..inner (upper), outer..inner (lower)
BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
BROW_INNER = (107, 66, 55, 65, 336, 296, 285, 295)
IRIS_CENTRES = (468, 473)
IRIS_RINGS = ((469, 470, 471, 472), (474, 475, 476, 477))
CHIN = 152
NOSE_TIP = 1
NOSE_WINGS = (129, 49, 48, 64, 98, 358, 279, 278, 294, 327)
CHEEKS = (50, 101, 118, 117, 123, 205, 36, 280, 330, 347, 346, 352, 425, 266, 187, 411)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NUM_MESH_LANDMARKS = 468  # landmarks 0..467 are mesh vertices 0..467 (irises are handled by the eye layer)

# --- coefficient terms (see `TERMS`); the renderer maps a motion vector onto these ---------------
TERMS: tuple[str, ...] = (
    "bias",                # always 1: closes the portrait's own lip gap
    "jaw_eff",             # jaw_open * (1 - lips_press)
    "mouth_round",
    "round_open",          # mouth_round * (1 - lips_press)
    "mouth_spread",
    "lips_press",
    "smile",
    "frown",
    "upper_lip_raise",
    "brow_up",
    "brow_inner_up",
    "brow_down",
    "blink_l",
    "blink_r",
    "eye_wide",
    "squint",
    "nose_wrinkle",
    "blink_l_squint",      # blink_l * squint: the closing lid follows the raised lower lid
    "blink_r_squint",
    "blink_l_wide",        # blink_l * eye_wide: a closing lid starts from the raised position
    "blink_r_wide",
    "smile_blink_l",       # smile * blink_l (smile lifts the lower lid)
    "smile_blink_r",
)
TERM_INDEX = {n: i for i, n in enumerate(TERMS)}


@dataclass
class RigGeometry:
    """Precomputed mesh data of one character (all arrays; saved field by field into the rig npz)."""

    vertices: np.ndarray        # (V, 3) float32 rest positions (crop px)
    triangles: np.ndarray       # (T, 3) int32
    basis: np.ndarray           # (K, V, 2) float32 displacement per coefficient term (crop px)
    head_weight: np.ndarray     # (V,) float32 share of head rotation each vertex follows
    pivot: np.ndarray           # (3,) float32 head-rotation pivot (near the neck, behind the face)
    grid_size: np.ndarray       # () int32 coarse grid side G
    grid_vertex: np.ndarray     # (G*G, 3) int32 vertex ids of the rest triangle holding each grid point
    grid_bary: np.ndarray       # (G*G, 3) float32 barycentric weights
    mouth_upper: np.ndarray     # (11,) int32 inner upper lip vertex ids, corner to corner
    mouth_lower: np.ndarray     # (11,) int32 inner lower lip vertex ids
    eye_upper: np.ndarray       # (2, 9) int32 upper lid ids; row 0 = character's left eye, 1 = right
    eye_lower: np.ndarray       # (2, 9) int32 lower lid ids
    iris: np.ndarray            # (2, 3) float32 iris centre x, y and radius (row 0 = left eye)
    mouth_colours: np.ndarray   # (5, 3) float32 lip, skin, teeth, cavity, tongue (0..255)
    scales: np.ndarray          # (4,) float32 mouth width, inter-ocular distance, face width, face height

    @property
    def mouth_width(self) -> float:
        return float(self.scales[0])

    @property
    def iod(self) -> float:
        return float(self.scales[1])

    def to_arrays(self, prefix: str = "geom_") -> dict[str, np.ndarray]:
        return {prefix + f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "geom_") -> "RigGeometry":
        return cls(**{f.name: np.asarray(arrays[prefix + f.name]) for f in fields(cls)})


# --- helpers -------------------------------------------------------------------------------------
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _spread(pos: np.ndarray, drivers: dict[int, np.ndarray], sigma: float, fixed: set[int]) -> np.ndarray:
    """Displacements (V,2): drivers keep theirs; other vertices get a Gaussian-weighted share.

    Normalised with a unit 'stay' weight so that vertices far from every driver stay put.
    """
    V = pos.shape[0]
    out = np.zeros((V, 2), np.float32)
    if not drivers:
        return out
    ids = np.array(list(drivers.keys()))
    d = np.stack([drivers[i] for i in ids]).astype(np.float32)
    dist2 = ((pos[:, None, :2] - pos[None, ids, :2]) ** 2).sum(-1)
    g = np.exp(-dist2 / (sigma * sigma))
    w = g / (g.sum(1, keepdims=True) + 0.35)
    out = w @ d
    out[ids] = d
    for i in fixed:
        if i not in drivers:
            out[i] = 0.0
    return out.astype(np.float32)


class _Frame:
    """A local 2D frame: origin, unit axis u (corner to corner) and its normal v (pointing down)."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        self.o = (a + b) / 2
        ax = b - a
        self.half = float(np.linalg.norm(ax)) / 2 + 1e-6
        self.ex = ax / (2 * self.half)
        self.ey = np.array([-self.ex[1], self.ex[0]])
        if self.ey[1] < 0:
            self.ey = -self.ey

    def uv(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = p[..., :2] - self.o
        return d @ self.ex / self.half, d @ self.ey

    def vec(self, du: float | np.ndarray, dv: float | np.ndarray) -> np.ndarray:
        return np.outer(np.atleast_1d(du), self.ex).squeeze() + np.outer(np.atleast_1d(dv), self.ey).squeeze()


DEPTH_SCALE = 0.6   # face relief used for head-rotation parallax (a 2D warp cannot occlude: keep it gentle)
PIVOT_DEPTH = 0.45  # head pivot behind the face outline, in face widths
JAW_RING = (0.55, 0.2)  # share of the jaw drop that the two anchor rings follow under the chin


def _anchors(lm: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchor points (N,3), their head-rotation weights (N,) and their share of the jaw drop (N,).

    Two rings around the face outline carry the hair and the jaw skin (fading to still below the
    jaw and toward the image border), a row of neck/shoulder points and the image border are still.
    """
    oval = lm[list(FACE_OVAL)]
    c = oval[:, :2].mean(0)
    pts: list[np.ndarray] = []
    wts: list[float] = []
    jaw: list[float] = []
    chin_y = lm[CHIN, 1]
    face_h = oval[:, 1].max() - oval[:, 1].min()
    mouth_y = lm[[13, 14], 1].mean()
    fw = oval[:, 0].max() - oval[:, 0].min()
    for (scale, base), jw in zip(((1.18, 0.8), (1.45, 0.45)), JAW_RING):
        for p in oval:
            q = c + scale * (p[:2] - c)
            # below the jaw: fade to a still neck
            below = _smoothstep((q[1] - (chin_y - 0.35 * face_h)) / (0.45 * face_h))
            # near the image border: fade to still, so the border never moves
            edge = min(q[0], q[1], size - 1 - q[0], size - 1 - q[1])
            border = _smoothstep(edge / (0.08 * size))
            pts.append(np.array([q[0], q[1], p[2]]))
            wts.append(base * (1 - below) * border)
            # under the chin the rings follow the jaw a little, so the drop is not one stretched band
            under = _smoothstep((q[1] - mouth_y) / (0.25 * face_h)) * _smoothstep(
                1.0 - abs(q[0] - c[0]) / (0.45 * fw))
            jaw.append(jw * under * border)
    # neck / shoulder points, fixed
    for dx in (-0.9, -0.45, 0.0, 0.45, 0.9):
        for dy in (0.55, 0.9):
            pts.append(np.array([c[0] + dx * fw, chin_y + dy * face_h, 0.0]))
            wts.append(0.0)
            jaw.append(0.0)
    # image border, fixed
    n = 9
    t = np.linspace(0, size - 1, n)
    for v in t:
        for q in ((v, 0.0), (v, size - 1.0), (0.0, v), (size - 1.0, v)):
            pts.append(np.array([q[0], q[1], 0.0]))
            wts.append(0.0)
            jaw.append(0.0)
    arr = np.array(pts, np.float32)
    arr[:, :2] = np.clip(arr[:, :2], 0, size - 1)
    # drop anchors that fall on top of each other (border corners) or onto the face
    keep: list[int] = []
    for i, p in enumerate(arr):
        if all(np.linalg.norm(p[:2] - arr[j, :2]) > 2.0 for j in keep):
            keep.append(i)
    return arr[keep], np.asarray(wts, np.float32)[keep], np.asarray(jaw, np.float32)[keep]


# --- basis ---------------------------------------------------------------------------------------
def _mouth_basis(pos: np.ndarray, lm: np.ndarray, basis: np.ndarray, fixed: set[int], fw: float,
                 anchor_jaw: np.ndarray) -> None:
    V = pos.shape[0]
    up, lo = list(LIPS_INNER_UPPER), list(LIPS_INNER_LOWER)
    oup, olo = list(LIPS_OUTER_UPPER), list(LIPS_OUTER_LOWER)
    fr = _Frame(lm[61, :2], lm[291, :2])
    mw = 2 * fr.half
    u_all, v_all = fr.uv(pos)

    # rest gap between inner lips, closed by the bias term
    _, vu = fr.uv(lm[up])
    _, vl = fr.uv(lm[lo])
    gap = np.maximum(vl - vu, 0.0)
    mid = (vu + vl) / 2
    drv: dict[int, np.ndarray] = {}
    for k in range(1, 10):
        drv[up[k]] = fr.vec(0.0, gap[k] / 2)
        drv[lo[k]] = fr.vec(0.0, -gap[k] / 2)
        drv[oup[k]] = fr.vec(0.0, gap[k] / 4)
        drv[olo[k]] = fr.vec(0.0, -gap[k] / 4)
    basis[TERM_INDEX["bias"]] = _spread(pos, drv, 0.08 * mw, fixed)

    # jaw: rigid drop of everything below the mouth line, graded toward the corners and the jaw angle
    u_in, _ = fr.uv(lm[up])
    order = np.argsort(u_in)
    line_u, line_v = u_in[order], mid[order]
    t = v_all - np.interp(u_all, line_u, line_v)
    au = np.abs(u_all)
    ell = 0.22 + 0.78 * np.clip(1 - au ** 2, 0, 1) ** 0.7
    depth = np.clip(t / (0.7 * mw), 0, 1)
    w_in = np.where(t > 0, ell + (1 - ell) * depth, 0.0)
    ramp = np.maximum((au - 1.0) * 0.9 * mw, 1.0)
    w_out = np.clip(t / ramp, 0, 1) * depth ** 0.5
    c = lm[list(FACE_OVAL)][:, :2].mean(0)
    lat = np.abs((pos[:, :2] - c) @ fr.ex) / (fw / 2)
    w_out *= 1 - 0.75 * _smoothstep((lat - 0.35) / 0.65)
    w = np.where(au <= 1.0, w_in, w_out)
    # the lower lip opens as a lens: full drop in the middle, tapering to the corners' share
    uc = float(np.mean(np.abs(fr.uv(lm[[78, 308]])[0])))
    # (the lips are classified explicitly: with a closed mouth at rest the inner upper and lower lip
    # points lie on the mid line, where the sign of t is noise)
    # The drop tapers strongly toward the corners (a talking mouth opens mostly in the middle), and the
    # inner and outer lower lip points of one column share one weight (taken at the inner point's u), so
    # the red of the lower lip keeps its thickness and moves down with the jaw instead of being
    # swallowed by the opening near the corners.
    # Near the corners the upper lip goes down with the corners (0.22 of the drop), so the lips still
    # meet there and the opening is a rounded lens in the middle, not a slit from corner to corner.
    for k in range(1, 10):
        e = float(_smoothstep((0.85 - abs(u_all[lo[k]]) / uc) / 0.6))
        w[lo[k]] = w[olo[k]] = 0.22 + 0.78 * e
        e = float(_smoothstep((0.85 - abs(u_all[up[k]]) / uc) / 0.6))
        w[up[k]] = w[oup[k]] = 0.22 * (1 - e)
    w[NUM_MESH_LANDMARKS:] = 0.0
    for i in (61, 291, 78, 308):
        w[i] = 0.22
    drop = 0.36 * mw
    jaw = np.zeros((V, 2), np.float32)
    jaw += np.outer(w * drop, fr.ey)
    # the corners come in a little as the mouth opens; the upper lip lifts a hair
    inward = -np.sign(u_all) * np.clip(1 - np.abs(au - 1) / 0.4, 0, 1) * 0.05 * mw
    jaw += np.outer(inward * (w > 0), fr.ex)
    # anchors under the chin follow part of the drop (see _anchors)
    jaw[NUM_MESH_LANDMARKS:] = np.outer(anchor_jaw * drop, fr.ey)
    # the upper lip lifts in the middle (an arch, not a flat lid over a D-shaped opening)
    for k in range(1, 10):
        e = float(np.clip(1 - (u_in[k] / uc) ** 2, 0, 1))
        jaw[up[k]] += fr.vec(0.0, -0.07 * mw * e)
        jaw[oup[k]] += fr.vec(0.0, -0.04 * mw * e)
    basis[TERM_INDEX["jaw_eff"]] = jaw

    corners = ((61, -1), (291, 1), (78, -1), (308, 1))

    def lip_follow(corner_du: float, corner_dv: float, sigma: float, centre_dv_up: float = 0.0,
                   centre_dv_lo: float = 0.0, thin: float = 0.0) -> np.ndarray:
        d: dict[int, np.ndarray] = {}
        for i, s in corners:
            d[i] = fr.vec(s * corner_du, corner_dv)
        for ring, sign_v, cdv in ((up, 1, centre_dv_up), (oup, 1, centre_dv_up), (lo, -1, centre_dv_lo),
                                  (olo, -1, centre_dv_lo)):
            uu, _ = fr.uv(lm[ring])
            for k in range(1, 10):
                f = abs(uu[k]) ** 1.5
                du = np.sign(uu[k]) * corner_du * f
                dv = corner_dv * f + cdv * (1 - f)
                if ring in (oup, olo):
                    dv += sign_v * thin * (1 - f)
                d[ring[k]] = fr.vec(du, dv)
        return _spread(pos, d, sigma, fixed)

    basis[TERM_INDEX["mouth_spread"]] = lip_follow(0.13 * mw, -0.01 * mw, 0.22 * mw, thin=0.025 * mw)
    # round: corners in, lips pushed forward (outer lips away from the mouth line)
    rnd = lip_follow(-0.17 * mw, 0.0, 0.22 * mw)
    for k in range(1, 10):
        uu = fr.uv(lm[oup[k]])[0]
        e = np.sqrt(max(0.0, 1 - uu ** 2))
        rnd[oup[k]] += fr.vec(0.0, -0.03 * mw * e)
        rnd[olo[k]] += fr.vec(0.0, 0.03 * mw * e)
    basis[TERM_INDEX["mouth_round"]] = rnd
    ro = np.zeros((V, 2), np.float32)
    for k in range(1, 10):
        uu = fr.uv(lm[up[k]])[0]
        e = np.sqrt(max(0.0, 1 - (uu / 0.75) ** 2)) if abs(uu) < 0.75 else 0.0
        ro[up[k]] = fr.vec(0.0, -0.06 * mw * e)
        ro[lo[k]] = fr.vec(0.0, 0.09 * mw * e)
    basis[TERM_INDEX["round_open"]] = ro
    # press: the inner lips meet (overlap a hair), the red of the lips rolls in
    pr: dict[int, np.ndarray] = {}
    for k in range(1, 10):
        pr[up[k]] = fr.vec(0.0, 0.006 * mw)
        pr[lo[k]] = fr.vec(0.0, -0.006 * mw)
        pr[oup[k]] = fr.vec(0.0, 0.035 * mw)
        pr[olo[k]] = fr.vec(0.0, -0.04 * mw)
    basis[TERM_INDEX["lips_press"]] = _spread(pos, pr, 0.07 * mw, fixed)

    # smile: corners up and out, cheeks up
    sm = lip_follow(0.09 * mw, -0.13 * mw, 0.3 * mw, centre_dv_up=-0.01 * mw, centre_dv_lo=-0.015 * mw)
    ch: dict[int, np.ndarray] = {i: np.array([0.0, -0.06 * mw]) for i in CHEEKS}
    sm += _spread(pos, ch, 0.25 * mw, fixed)
    basis[TERM_INDEX["smile"]] = sm
    # frown: corners down (strong enough to turn a portrait's resting smile)
    basis[TERM_INDEX["frown"]] = lip_follow(0.02 * mw, 0.15 * mw, 0.3 * mw, centre_dv_lo=-0.025 * mw)
    # upper lip raise
    ul: dict[int, np.ndarray] = {}
    for ring in (up, oup):
        uu, _ = fr.uv(lm[ring])
        for k in range(1, 10):
            ul[ring[k]] = fr.vec(0.0, -0.09 * mw * np.sqrt(max(0.0, 1 - uu[k] ** 2)))
    for i in NOSE_WINGS:
        ul[i] = np.array([0.0, -0.03 * mw])
    basis[TERM_INDEX["upper_lip_raise"]] = _spread(pos, ul, 0.15 * mw, fixed)
    nw: dict[int, np.ndarray] = {i: np.array([0.0, -0.06 * mw]) for i in NOSE_WINGS}
    for ring in (up, oup):
        for k in range(1, 10):
            nw[ring[k]] = np.array([0.0, -0.025 * mw])
    basis[TERM_INDEX["nose_wrinkle"]] = _spread(pos, nw, 0.18 * mw, fixed)


def _eye_brow_basis(pos: np.ndarray, lm: np.ndarray, basis: np.ndarray, fixed: set[int], iod: float) -> None:
    eyes = ((EYE_L_UPPER, EYE_L_LOWER, "l", BROW_L), (EYE_R_UPPER, EYE_R_LOWER, "r", BROW_R))
    brow_up: dict[int, np.ndarray] = {}
    brow_in: dict[int, np.ndarray] = {}
    brow_dn: dict[int, np.ndarray] = {}
    wide: dict[int, np.ndarray] = {}
    sq: dict[int, np.ndarray] = {}
    face_cx = lm[list(FACE_OVAL)][:, 0].mean()
    for upper, lower, side, brow in eyes:
        fr = _Frame(lm[upper[0], :2], lm[upper[-1], :2])
        eye_h = max(float(np.max(fr.uv(lm[list(lower)])[1] - fr.uv(lm[list(upper)])[1])), 0.05 * iod)
        blink: dict[int, np.ndarray] = {}
        b_sq: dict[int, np.ndarray] = {}
        b_wd: dict[int, np.ndarray] = {}
        b_sm: dict[int, np.ndarray] = {}
        for k in range(1, 8):
            gap = lm[lower[k], :2] - lm[upper[k], :2]
            blink[upper[k]] = gap * 1.0
            prof = np.sin(np.pi * k / 8)
            lift = fr.vec(0.0, -0.28 * eye_h * prof)
            sq[lower[k]] = lift
            b_sq[upper[k]] = lift
            raise_ = fr.vec(0.0, -0.22 * eye_h * prof)
            wide[upper[k]] = raise_
            b_wd[upper[k]] = -raise_
            b_sm[upper[k]] = fr.vec(0.0, -0.12 * eye_h * prof)
        # lid skin above the lid follows half-way
        sig = 0.35 * eye_h + 0.08 * iod
        basis[TERM_INDEX[f"blink_{side}"]] = _spread(pos, blink, sig, fixed | set(lower))
        basis[TERM_INDEX[f"blink_{side}_squint"]] = _spread(pos, b_sq, sig, fixed | set(lower))
        basis[TERM_INDEX[f"blink_{side}_wide"]] = _spread(pos, b_wd, sig, fixed | set(lower))
        basis[TERM_INDEX[f"smile_blink_{side}"]] = _spread(pos, b_sm, sig, fixed | set(lower))
        for i in brow:
            inner = abs(lm[i, 0] - face_cx) / (0.5 * iod + 1e-6)
            inner_w = float(np.clip(1.4 - inner, 0.0, 1.0))
            brow_up[i] = np.array([0.0, -0.13 * iod])
            brow_in[i] = np.array([0.0, -0.11 * iod * inner_w])
            toward = np.sign(face_cx - lm[i, 0])
            brow_dn[i] = np.array([toward * 0.05 * iod * inner_w, 0.08 * iod * (0.5 + 0.5 * inner_w)])
    sig_b = 0.45 * iod
    eye_ids = set(EYE_L_UPPER + EYE_L_LOWER + EYE_R_UPPER + EYE_R_LOWER)
    basis[TERM_INDEX["brow_up"]] = _spread(pos, brow_up, sig_b, fixed | eye_ids)
    basis[TERM_INDEX["brow_inner_up"]] = _spread(pos, brow_in, 0.35 * iod, fixed | eye_ids)
    basis[TERM_INDEX["brow_down"]] = _spread(pos, brow_dn, 0.35 * iod, fixed | eye_ids)
    basis[TERM_INDEX["eye_wide"]] = _spread(pos, wide, 0.12 * iod, fixed | eye_ids - set(wide))
    basis[TERM_INDEX["squint"]] = _spread(pos, sq, 0.12 * iod, fixed | eye_ids - set(sq))


def _grid_tables(points2d: np.ndarray, tri: Delaunay, size: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, size - 1, g)
    gx, gy = np.meshgrid(t, t)
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    q = np.clip(q, 1e-3, size - 1 - 1e-3)
    simp = tri.find_simplex(q)
    bad = simp < 0
    if bad.any():  # numerically on the hull: nudge toward the centre
        qc = q[bad] + (size / 2 - q[bad]) * 1e-3
        simp[bad] = tri.find_simplex(qc)
        simp[simp < 0] = 0
    T = tri.transform[simp]
    b = np.einsum("nij,nj->ni", T[:, :2], q - T[:, 2])
    bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)
    bary = np.clip(bary, 0, 1)
    bary /= bary.sum(1, keepdims=True)
    return tri.simplices[simp].astype(np.int32), bary.astype(np.float32)


def build_geometry(lm: np.ndarray, image: np.ndarray, size: int, grid_size: int = 96) -> RigGeometry:
    """Build the mesh, basis and grid tables for landmarks `lm` (478,3) of a square crop of side `size`."""
    lm = np.asarray(lm, np.float32)
    oval = lm[list(FACE_OVAL)]
    fw = float(oval[:, 0].max() - oval[:, 0].min())
    fh = float(oval[:, 1].max() - oval[:, 1].min())
    mw = float(np.linalg.norm(lm[291, :2] - lm[61, :2]))
    iod = float(np.linalg.norm(lm[IRIS_CENTRES[0], :2] - lm[IRIS_CENTRES[1], :2]))
    anchors, anchor_w, anchor_jaw = _anchors(lm, size)
    pos = np.concatenate([lm[:NUM_MESH_LANDMARKS], anchors], 0).astype(np.float32)
    # gentler relief for the rotation parallax
    zc = float(np.median(oval[:, 2]))
    pos[:, 2] = zc + DEPTH_SCALE * (pos[:, 2] - zc)
    V = pos.shape[0]
    anchor_ids = set(range(NUM_MESH_LANDMARKS, V))
    tri = Delaunay(pos[:, :2].astype(np.float64))
    basis = np.zeros((len(TERMS), V, 2), np.float32)
    _mouth_basis(pos, lm, basis, anchor_ids, fw, anchor_jaw)
    _eye_brow_basis(pos, lm, basis, anchor_ids, iod)
    jaw_anchor = basis[TERM_INDEX["jaw_eff"], NUM_MESH_LANDMARKS:].copy()
    basis[:, NUM_MESH_LANDMARKS:] = 0.0
    basis[TERM_INDEX["jaw_eff"], NUM_MESH_LANDMARKS:] = jaw_anchor  # only the jaw moves anchors
    head_w = np.concatenate([np.ones(NUM_MESH_LANDMARKS, np.float32), anchor_w]).astype(np.float32)
    pivot = np.array([oval[:, 0].mean(), lm[CHIN, 1] + 0.15 * fh, zc + PIVOT_DEPTH * fw],
                     np.float32)
    gv, gb = _grid_tables(pos[:, :2], tri, size, grid_size)

    # eyes: row 0 = character's left (image right, landmarks 263..), row 1 = right
    eye_upper = np.array([EYE_L_UPPER, EYE_R_UPPER], np.int32)
    eye_lower = np.array([EYE_L_LOWER, EYE_R_LOWER], np.int32)
    iris = np.zeros((2, 3), np.float32)
    for row in range(2):
        ec = lm[list(eye_upper[row]) + list(eye_lower[row]), :2].mean(0)
        best = min(range(2), key=lambda j: np.linalg.norm(lm[IRIS_CENTRES[j], :2] - ec))
        cidx, ring = IRIS_CENTRES[best], IRIS_RINGS[best]
        iris[row, :2] = lm[cidx, :2]
        iris[row, 2] = float(np.mean(np.linalg.norm(lm[list(ring), :2] - lm[cidx, :2], axis=1)))
    colours = _mouth_colours(image, lm)
    return RigGeometry(
        vertices=pos, triangles=tri.simplices.astype(np.int32), basis=basis, head_weight=head_w,
        pivot=pivot, grid_size=np.array(grid_size, np.int32), grid_vertex=gv, grid_bary=gb,
        mouth_upper=np.array(LIPS_INNER_UPPER, np.int32), mouth_lower=np.array(LIPS_INNER_LOWER, np.int32),
        eye_upper=eye_upper, eye_lower=eye_lower, iris=iris, mouth_colours=colours,
        scales=np.array([mw, iod, fw, fh], np.float32))


def _poly_mask(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly[:, :2]).astype(np.int32)], 1)
    return m.astype(bool)


def _mouth_colours(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Lip, skin, teeth, cavity and tongue colours derived from the portrait."""
    h, w = image.shape[:2]
    outer = lm[list(LIPS_OUTER_UPPER) + list(LIPS_OUTER_LOWER[::-1])]
    inner = lm[list(LIPS_INNER_UPPER) + list(LIPS_INNER_LOWER[::-1])]
    lips = _poly_mask((h, w), outer) & ~_poly_mask((h, w), inner)
    img = image.astype(np.float32)
    lip = np.median(img[lips], 0) if lips.sum() > 10 else np.array([170, 90, 90], np.float32)
    cheek = np.concatenate([lm[[205, 425, 50, 280], :2]])
    samples = []
    for c in cheek:
        x, y = int(np.clip(c[0], 0, w - 1)), int(np.clip(c[1], 0, h - 1))
        r = max(2, int(0.02 * w))
        samples.append(img[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3))
    skin = np.median(np.concatenate(samples), 0)
    lum = float(skin @ np.array([0.299, 0.587, 0.114]))
    bright = float(np.clip(lum / 170.0, 0.55, 1.05))
    teeth = (np.array([228, 222, 206], np.float32) * 0.85 + skin * 0.15) * bright
    cavity = lip * 0.22 + np.array([8, 2, 2], np.float32)
    tongue = lip * 0.62 + np.array([18, 4, 4], np.float32)
    return np.clip(np.stack([lip, skin, teeth, cavity, tongue]), 0, 255).astype(np.float32)
