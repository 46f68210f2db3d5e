"""Fused CPU kernels (numba) for the torch-cpu renderer's per-point and per-pixel stages.

The torch versions of these stages (`renderer.backward_core`, `eyes.composite_eyes`,
`mouth.composite_mouth`) stay the reference: they serve CUDA and the ONNX export, and the tests hold
these kernels to them. On a CPU the torch versions are a few dozen tensor ops over small arrays, each a
full pass through memory with its own dispatch cost; here each stage is one loop that keeps a point's
or a pixel's intermediate values in registers. Same float32 formulas; fastmath lets LLVM reorder
them, which moves results by far less than the tests' tolerances (0.01 px, 2 levels).

The kernels are compiled by `warm_up` (8-15 s in all, once per machine) and cached on disk (numba's
cache, next to this file or in NUMBA_CACHE_DIR); they release the GIL, so render threads run them side
by side.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from lpm_npc.jit import NUMBA_USABLE, njit

log = logging.getLogger(__name__)

AVAILABLE = NUMBA_USABLE  # False after a failed warm_up too: the renderer then keeps its torch path

_JIT = dict(cache=True, nogil=True, fastmath=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _bilinear6(f6, b, fx, fy, h, w):
    """grid_sample(align_corners=True, padding border) of the 6 channels of f6[b] (h, w, 8) at (fx, fy) px."""
    fx = min(max(fx, np.float32(0.0)), np.float32(w - 1))
    fy = min(max(fy, np.float32(0.0)), np.float32(h - 1))
    x0 = int(fx)
    y0 = int(fy)
    tx = fx - np.float32(x0)
    ty = fy - np.float32(y0)
    x1 = min(x0 + 1, w - 1)
    y1 = min(y0 + 1, h - 1)
    one = np.float32(1.0)
    w00 = (one - tx) * (one - ty)
    w01 = tx * (one - ty)
    w10 = (one - tx) * ty
    w11 = tx * ty
    a = f6[b, y0, x0]
    c = f6[b, y0, x1]
    d = f6[b, y1, x0]
    e = f6[b, y1, x1]
    return ((a[0] * w00 + c[0] * w01 + d[0] * w10 + e[0] * w11),
            (a[1] * w00 + c[1] * w01 + d[1] * w10 + e[1] * w11),
            (a[2] * w00 + c[2] * w01 + d[2] * w10 + e[2] * w11),
            (a[3] * w00 + c[3] * w01 + d[3] * w10 + e[3] * w11),
            (a[4] * w00 + c[4] * w01 + d[4] * w10 + e[4] * w11),
            (a[5] * w00 + c[5] * w01 + d[5] * w10 + e[5] * w11))


@njit(**_JIT)
def backward_map(pos, rest2, grid_vertex, grid_bary, base, y0, y1, x0, x1, cell, steps):
    """Coarse backward map (B, 2, G, G) float32: `renderer.backward_core` on the subgrid rows y0:y1,
    columns x0:x1 (the part that moves), the identity (`base`) elsewhere.

    pos (B, V, 2), rest2 (V, 2), grid_vertex (3, G, G) int64, grid_bary (3, G, G), base (2, G, G) crop
    px of the grid points, cell the grid spacing (crop px), steps the Newton steps. Like backward_core
    on a sliced subgrid, differences and samples are clamped to the subgrid's own edges.
    """
    B = pos.shape[0]
    h, w = y1 - y0, x1 - x0
    fld = np.empty((B, 2, h, w), np.float32)
    for b in range(B):
        for i in range(h):
            for j in range(w):
                fx = np.float32(0.0)
                fy = np.float32(0.0)
                for k in range(3):
                    v = grid_vertex[k, y0 + i, x0 + j]
                    g = grid_bary[k, y0 + i, x0 + j]
                    fx += (pos[b, v, 0] - rest2[v, 0]) * g
                    fy += (pos[b, v, 1] - rest2[v, 1]) * g
                fld[b, 0, i, j] = fx
                fld[b, 1, i, j] = fy
    inv2h = np.float32(0.5 / cell)
    f6 = np.zeros((B, h, w, 8), np.float32)  # interleaved: a corner's channels share a cache line
    for b in range(B):
        for i in range(h):
            im, ip = max(i - 1, 0), min(i + 1, h - 1)
            for j in range(w):
                jm, jp = max(j - 1, 0), min(j + 1, w - 1)
                a = (fld[b, 0, i, jp] - fld[b, 0, i, jm]) * inv2h + np.float32(1.0)
                bb = (fld[b, 0, ip, j] - fld[b, 0, im, j]) * inv2h
                c = (fld[b, 1, i, jp] - fld[b, 1, i, jm]) * inv2h
                d = (fld[b, 1, ip, j] - fld[b, 1, im, j]) * inv2h + np.float32(1.0)
                det = a * d - bb * c
                if det < 0.1:
                    det = np.float32(0.1)
                rdet = np.float32(1.0) / det
                f6[b, i, j, 0] = fld[b, 0, i, j]
                f6[b, i, j, 1] = fld[b, 1, i, j]
                f6[b, i, j, 2] = d * rdet
                f6[b, i, j, 3] = a * rdet
                f6[b, i, j, 4] = bb * rdet
                f6[b, i, j, 5] = c * rdet
    lox, loy = base[0, y0, x0], base[1, y0, x0]
    sx = np.float32(2.0) / (base[0, y1 - 1, x1 - 1] - lox)
    sy = np.float32(2.0) / (base[1, y1 - 1, x1 - 1] - loy)
    lim = np.float32(4.0 * cell)
    half_w = np.float32(0.5 * (w - 1))
    half_h = np.float32(0.5 * (h - 1))
    out = np.empty((B,) + base.shape, np.float32)
    for b in range(B):
        out[b] = base
        for i in range(h):
            for j in range(w):
                bx, by = base[0, y0 + i, x0 + j], base[1, y0 + i, x0 + j]
                x = bx - fld[b, 0, i, j]
                y = by - fld[b, 1, i, j]
                for _ in range(steps):
                    # normalised as backward_core does, then unnormalised as grid_sample does
                    gx = (x - lox) * sx - np.float32(1.0)
                    gy = (y - loy) * sy - np.float32(1.0)
                    s0, s1, s2, s3, s4, s5 = _bilinear6(f6, b, (gx + np.float32(1.0)) * half_w,
                                                        (gy + np.float32(1.0)) * half_h, h, w)
                    rx = x + s0 - bx
                    ry = y + s1 - by
                    stx = s2 * rx - s4 * ry
                    sty = s3 * ry - s5 * rx
                    x -= min(max(stx, -lim), lim)
                    y -= min(max(sty, -lim), lim)
                out[b, 0, y0 + i, x0 + j] = x
                out[b, 1, y0 + i, x0 + j] = y
    return out


@njit(**_JIT)
def upsample_map(x, scale, yi0, yi1, fy, xi0, xi1, fx):
    """(B, 2, h, w) float32: the coarse map x (B, 2, G, G) bilinearly upsampled at the output pixels whose
    coarse rows (yi0, yi1, weight fy of yi1) and columns (xi0, xi1, fx) are given, times `scale`."""
    B = x.shape[0]
    h, w = yi0.shape[0], xi0.shape[0]
    G = x.shape[3]
    out = np.empty((B, 2, h, w), np.float32)
    row = np.empty(G, np.float32)
    one = np.float32(1.0)
    for b in range(B):
        for c in range(2):
            for r in range(h):
                t = fy[r]
                row0 = x[b, c, yi0[r]]
                row1 = x[b, c, yi1[r]]
                for j in range(G):  # the coarse row at this output row (rows first, then columns)
                    row[j] = (row0[j] * (one - t) + row1[j] * t) * scale
                for k in range(w):
                    s = fx[k]
                    out[b, c, r, k] = row[xi0[k]] * (one - s) + row[xi1[k]] * s
    return out


# ---------------------------------------------------------------- layer helpers (per pixel, float32)
@njit(inline="always", **_JIT)
def _ramp(x, width):
    """contour.ramp: 0 below -width/2, 1 above +width/2."""
    return min(max(x * (np.float32(1.0) / width) + np.float32(0.5), np.float32(0.0)), np.float32(1.0))


@njit(inline="always", **_JIT)
def _smoothstep(x):
    x = min(max(x, np.float32(0.0)), np.float32(1.0))
    return x * x * (np.float32(3.0) - np.float32(2.0) * x)


@njit(inline="always", **_JIT)
def _lerp(a, b, t):
    return a + t * (b - a)


@njit(inline="always", **_JIT)
def _table_at(table, n, c, u):
    """contour.lookup: table (N, C, T) row (n, c) at u in [-1, 1] (align_corners, clamped ends)."""
    T = table.shape[2]
    f = (u + np.float32(1.0)) * np.float32(0.5) * np.float32(T - 1)
    f = min(max(f, np.float32(0.0)), np.float32(T - 1))
    i0 = int(f)
    i1 = min(i0 + 1, T - 1)
    t = f - np.float32(i0)
    return table[n, c, i0] * (np.float32(1.0) - t) + table[n, c, i1] * t


@njit(inline="always", **_JIT)
def _sample3(img, fx, fy, border):
    """Bilinear sample of img (C, H, W) channels 0..2 at pixel (fx, fy): grid_sample(align_corners) with
    padding 'border' (coordinates clamped) or 'zeros' (corners outside count 0). Returns 4 values
    (channel 3 when img has it, else 0)."""
    H, W = img.shape[1], img.shape[2]
    if border:
        fx = min(max(fx, np.float32(0.0)), np.float32(W - 1))
        fy = min(max(fy, np.float32(0.0)), np.float32(H - 1))
    x0f = np.floor(fx)
    y0f = np.floor(fy)
    x0, y0 = int(x0f), int(y0f)
    tx, ty = fx - x0f, fy - y0f
    one = np.float32(1.0)
    r = np.float32(0.0)
    g = np.float32(0.0)
    bl = np.float32(0.0)
    a = np.float32(0.0)
    C = img.shape[0]
    for dy in range(2):
        yy = y0 + dy
        wy = ty if dy == 1 else one - ty
        if yy < 0 or yy >= H:
            continue
        for dx in range(2):
            xx = x0 + dx
            if xx < 0 or xx >= W:
                continue
            wgt = wy * (tx if dx == 1 else one - tx)
            r += img[0, yy, xx] * wgt
            g += img[1, yy, xx] * wgt
            bl += img[2, yy, xx] * wgt
            if C > 3:
                a += img[3, yy, xx] * wgt
    return r, g, bl, a


@njit(inline="always", **_JIT)
def _store(frames, b, y, x, r, g, bl):
    """Round to nearest and saturate to uint8, as the torch path's add(0.5).clamp(0, 255).to(uint8)."""
    frames[b, y, x, 0] = np.uint8(min(max(np.floor(r + np.float32(0.5)), np.float32(0.0)), np.float32(255.0)))
    frames[b, y, x, 1] = np.uint8(min(max(np.floor(g + np.float32(0.5)), np.float32(0.0)), np.float32(255.0)))
    frames[b, y, x, 2] = np.uint8(min(max(np.floor(bl + np.float32(0.5)), np.float32(0.0)), np.float32(255.0)))


# ---------------------------------------------------------------- eye layer
@njit(**_JIT)
def eye_layer(frames, origins, crop_w, crop_h, affine, table, gate, blinking, eye_height, plate, iris, lid_colour):
    """`eyes.composite_eyes` on uint8 frames (B, H, W, 4) in place, RGB only.

    origins (2, 2) int output px of each eye crop; affine (2B, 3, 7); table (2B, 5, T); gate, eye_height
    (2B,); plate (3, S, S) and iris (4, S, S) float32 0..255 (iris alpha 0..1); lid_colour (2, 2, 3).
    Both crops' changes are computed from the frame as it was and added, as the torch version does.
    """
    B = frames.shape[0]
    ux0 = min(origins[0, 0], origins[1, 0])
    uy0 = min(origins[0, 1], origins[1, 1])
    ux1 = max(origins[0, 0], origins[1, 0]) + crop_w
    uy1 = max(origins[0, 1], origins[1, 1]) + crop_h
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for b in range(B):
        if gate[b] <= zero and gate[B + b] <= zero:  # both eyes of this frame: nothing to do
            continue
        for y in range(uy0, uy1):
            for x in range(ux0, ux1):
                c0 = np.float32(frames[b, y, x, 0])
                c1 = np.float32(frames[b, y, x, 1])
                c2 = np.float32(frames[b, y, x, 2])
                d0 = zero
                d1 = zero
                d2 = zero
                hit = False
                for e in range(2):
                    col = x - origins[e, 0]
                    row = y - origins[e, 1]
                    if col < 0 or col >= crop_w or row < 0 or row >= crop_h:
                        continue
                    n = e * B + b
                    gt = gate[n]
                    if gt <= zero:
                        continue
                    hit = True
                    M = affine[n]
                    fc, fr = np.float32(col), np.float32(row)
                    u = fc * M[0, 0] + fr * M[1, 0] + M[2, 0]
                    v = fc * M[0, 2] + fr * M[1, 2] + M[2, 2]
                    px = fc * M[0, 3] + fr * M[1, 3] + M[2, 3]
                    py = fc * M[0, 4] + fr * M[1, 4] + M[2, 4]
                    ix = fc * M[0, 5] + fr * M[1, 5] + M[2, 5]
                    iy = fc * M[0, 6] + fr * M[1, 6] + M[2, 6]
                    vu = _table_at(table, n, 0, u)
                    vl = _table_at(table, n, 1, u)
                    opening = _ramp(v - vu, np.float32(0.9)) * _ramp(vl - v, np.float32(0.9)) * _table_at(table, n, 3, u)
                    S1 = np.float32(plate.shape[2] - 1)
                    p0, p1, p2, _ = _sample3(plate, (px + one) * np.float32(0.5) * S1,
                                             (py + one) * np.float32(0.5) * np.float32(plate.shape[1] - 1), True)
                    i0, i1, i2, ia = _sample3(iris, (ix + one) * np.float32(0.5) * np.float32(iris.shape[2] - 1),
                                              (iy + one) * np.float32(0.5) * np.float32(iris.shape[1] - 1), False)
                    k0 = _lerp(p0, i0, ia)
                    k1 = _lerp(p1, i1, ia)
                    k2 = _lerp(p2, i2, ia)
                    b0, b1, b2 = c0, c1, c2
                    if blinking:
                        eh = eye_height[n]
                        vo = _table_at(table, n, 2, u)
                        closing = min(max((vu - vo) / (np.float32(0.35) * eh + np.float32(0.5)), zero), one)
                        lid_top = vo - np.float32(0.3) * eh
                        depth = min(max((v - lid_top) / max(vu - lid_top, one), zero), one)
                        edge_in = _ramp(vu - v + np.float32(0.5) + np.float32(0.12) * eh * closing, one)
                        side = _table_at(table, n, 4, u) * closing
                        skin_w = (np.float32(0.8) * side * edge_in) * _smoothstep(depth)
                        q = (vu - v) / (np.float32(0.06) * eh + np.float32(0.5))
                        lash_w = (np.float32(0.35) * side) * np.exp(-(q * q))
                        b0 = _lerp(b0, lid_colour[e, 0, 0], skin_w)
                        b1 = _lerp(b1, lid_colour[e, 0, 1], skin_w)
                        b2 = _lerp(b2, lid_colour[e, 0, 2], skin_w)
                        b0 = _lerp(b0, lid_colour[e, 1, 0], lash_w)
                        b1 = _lerp(b1, lid_colour[e, 1, 1], lash_w)
                        b2 = _lerp(b2, lid_colour[e, 1, 2], lash_w)
                        sh = one - np.float32(0.25) * closing * np.exp(-max(v - vu, zero) / (np.float32(0.18) * eh + np.float32(0.5)))
                        k0 *= sh
                        k1 *= sh
                        k2 *= sh
                    d0 += (_lerp(b0, k0, opening) - c0) * gt
                    d1 += (_lerp(b1, k1, opening) - c1) * gt
                    d2 += (_lerp(b2, k2, opening) - c2) * gt
                if hit:
                    _store(frames, b, y, x, c0 + d0, c1 + d1, c2 + d2)


# ---------------------------------------------------------------- mouth layer
# channels of the mouth table (mouth._CH)
_VU, _VL, _T_TOP, _T_BOT, _INSIDE, _LIP_SIDE, _CAV, _TONGUE_SIDE, _TONGUE_SHADE, _TONGUE_OFF, _LOW_SIDE, \
    _TEETH_SIDE, _TEETH_SHADE = range(13)


@njit(**_JIT)
def mouth_layer(frames, box, affine, table, colours, mw, max_gap, has_interior, itex, igap):
    """`mouth.composite_mouth` on uint8 frames (B, H, W, 4) in place, RGB only.

    box (4,) int output px x0, y0, x1, y1; affine (B, 3, 3); table (B, 13, T); colours (5, 3); mw the
    rest mouth width (output px); with has_interior, itex (3, Hi, Ti) float32 and igap (1, 1, Ti) the
    interior texture from a reference image, else the drawn interior.
    """
    B = frames.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    soft = max(one, np.float32(0.011) * mw)
    luma0, luma1, luma2 = np.float32(0.299), np.float32(0.587), np.float32(0.114)
    lip_lum = (colours[0, 0] * luma0 + colours[0, 1] * luma1) + colours[0, 2] * luma2 + np.float32(8.0)
    k_lo = one / (np.float32(0.035) * mw + np.float32(0.5))
    k_up = one / (np.float32(0.02) * mw + np.float32(0.5))
    k_rim = one / (np.float32(0.025) * mw + np.float32(0.5))
    lower_teeth = max_gap > np.float32(0.12) * mw
    T = table.shape[2]
    for b in range(B):
        # a closed mouth (no knot of the table with the lower lip below the upper one) is left exactly
        # as it is by every term below: skip it (a batch mixes talking and listening NPCs)
        closed = True
        for i in range(T):
            if table[b, _VL, i] > table[b, _VU, i]:
                closed = False
                break
        if closed:
            continue
        M = affine[b]
        for y in range(box[1], box[3]):
            fr = np.float32(y - box[1])
            for x in range(box[0], box[2]):
                fc = np.float32(x - box[0])
                u = fc * M[0, 0] + fr * M[1, 0] + M[2, 0]
                v = fc * M[0, 2] + fr * M[1, 2] + M[2, 2]
                vu = _table_at(table, b, _VU, u)
                vl = _table_at(table, b, _VL, u)
                inside = _table_at(table, b, _INSIDE, u)
                gap = max(vl - vu, zero)
                d_up = v - vu
                d_lo = vl - v
                opening = _ramp(d_up, soft) * _ramp(d_lo, soft) * inside * min(gap * (np.float32(0.5) / soft), one)
                r0 = np.float32(frames[b, y, x, 0])
                r1 = np.float32(frames[b, y, x, 1])
                r2 = np.float32(frames[b, y, x, 2])
                # lips: pale (baked-in teeth) pixels at the inner lip edge pulled toward the lip colour
                lum = (r0 * luma0 + r1 * luma1) + r2 * luma2
                pale = min(max((lum - lip_lum) * np.float32(1.0 / 40.0), zero), one)
                band = np.exp(min(d_lo, zero) * k_lo) * _ramp(-d_lo, one) + np.exp(min(d_up, zero) * k_up) * _ramp(-d_up, one)
                lip_w = band * pale * min(gap * (one / (np.float32(0.03) * mw + one)), one) \
                    * (np.float32(0.85) * _table_at(table, b, _LIP_SIDE, u))
                r0 = _lerp(r0, colours[0, 0] * np.float32(0.9), lip_w)
                r1 = _lerp(r1, colours[0, 1] * np.float32(0.9), lip_w)
                r2 = _lerp(r2, colours[0, 2] * np.float32(0.9), lip_w)
                if has_interior:
                    k0, k1, k2 = _interior(itex, igap, u, d_up, d_lo, gap, mw, colours)
                else:
                    k0, k1, k2 = _drawn(table, b, u, v, d_up, d_lo, gap, mw, lower_teeth, colours)
                out_d = max(max(-d_up, -d_lo), zero)
                rim = np.exp(out_d * -k_rim) * inside * min(gap * (one / (np.float32(0.04) * mw + one)), one)
                dim = rim * np.float32(-0.28) + one
                _store(frames, b, y, x, _lerp(r0 * dim, k0, opening), _lerp(r1 * dim, k1, opening),
                       _lerp(r2 * dim, k2, opening))


@njit(inline="always", **_JIT)
def _drawn(table, b, u, v, d_up, d_lo, gap, mw, lower_teeth, col):
    """mouth._drawn_colour at one pixel."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    vl = v + d_lo
    depth = _smoothstep(d_up / (gap + np.float32(1e-3)))
    cav_u = _table_at(table, b, _CAV, u)
    k = (np.float32(0.4) + np.float32(0.9) * depth * cav_u) * cav_u
    c0, c1, c2 = col[3, 0] * k, col[3, 1] * k, col[3, 2] * k
    tongue_top = vl - np.float32(0.45) * min(gap, np.float32(0.2) * mw) - _table_at(table, b, _TONGUE_OFF, u)
    t_w = _ramp(v - tongue_top, np.float32(0.08) * mw + one) * _table_at(table, b, _TONGUE_SIDE, u) \
        * (np.float32(0.6) * _smoothstep(gap * (one / (np.float32(0.14) * mw + one))))
    ts = (np.float32(0.35) + np.float32(0.25) * depth) * _table_at(table, b, _TONGUE_SHADE, u)
    c0 = _lerp(c0, col[4, 0] * ts, t_w)
    c1 = _lerp(c1, col[4, 1] * ts, t_w)
    c2 = _lerp(c2, col[4, 2] * ts, t_w)
    if lower_teeth:
        lt_h = np.float32(0.04) * mw
        lt_w = _ramp(lt_h - d_lo, np.float32(0.4) * lt_h + one) * _table_at(table, b, _LOW_SIDE, u) \
            * (np.float32(0.3) * _smoothstep((gap - np.float32(0.12) * mw) * (one / (np.float32(0.1) * mw + one))))
        c0 = _lerp(c0, col[2, 0] * np.float32(0.5), lt_w)
        c1 = _lerp(c1, col[2, 1] * np.float32(0.5), lt_w)
        c2 = _lerp(c2, col[2, 2] * np.float32(0.5), lt_w)
    t_top = _table_at(table, b, _T_TOP, u)
    t_bot = _table_at(table, b, _T_BOT, u)
    ut_w = _ramp(t_bot - v, max(one, np.float32(0.02) * mw)) * _ramp(v - t_top, one) * _table_at(table, b, _TEETH_SIDE, u)
    lit = _table_at(table, b, _TEETH_SHADE, u) * (np.float32(0.72) + np.float32(0.28) * _smoothstep(
        d_up * (one / (np.float32(0.04) * mw + one))))
    c0 = _lerp(c0, col[3, 0] + (col[2, 0] - col[3, 0]) * lit, ut_w)
    c1 = _lerp(c1, col[3, 1] + (col[2, 1] - col[3, 1]) * lit, ut_w)
    c2 = _lerp(c2, col[3, 2] + (col[2, 2] - col[3, 2]) * lit, ut_w)
    sh = one - np.float32(0.3) * np.exp(max(d_up, zero) * (np.float32(-1.0) / (np.float32(0.02) * mw + np.float32(0.5)))) \
        - np.float32(0.3) * np.exp(max(d_lo, zero) * (np.float32(-1.0) / (np.float32(0.025) * mw + np.float32(0.5))))
    return c0 * sh, c1 * sh, c2 * sh


@njit(inline="always", **_JIT)
def _interior(itex, igap, u, d_up, d_lo, gap, mw, col):
    """mouth._interior_colour at one pixel."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    g_ref = _table_at(igap, 0, 0, u) * mw
    span = max(g_ref, np.float32(1e-3))
    t_top = min(max(d_up / span, zero), one)
    t_bot = min(max(one - d_lo / span, zero), one)
    Ti1 = np.float32(itex.shape[2] - 1)
    Hi1 = np.float32(itex.shape[1] - 1)
    fx = (u + one) * np.float32(0.5) * Ti1
    a0, a1, a2, _ = _sample3(itex, fx, t_top * Hi1, True)
    e0, e1, e2, _ = _sample3(itex, fx, t_bot * Hi1, True)
    w = _smoothstep(d_up / (gap + np.float32(1e-3)))
    lit = _smoothstep(gap / (g_ref + np.float32(1e-3)))
    shade = (np.float32(0.8) + np.float32(0.2) * lit) * (one - w) + (np.float32(0.45) + np.float32(0.55) * lit) * w
    c0 = (a0 + (e0 - a0) * w) * shade
    c1 = (a1 + (e1 - a1) * w) * shade
    c2 = (a2 + (e2 - a2) * w) * shade
    mid = _ramp(min(d_up, d_lo) - np.float32(0.5) * g_ref, np.float32(0.15) * g_ref + one) \
        * _ramp(gap - g_ref, np.float32(0.1) * g_ref + one)
    cw = np.float32(0.6) + np.float32(0.4) * w
    c0 = c0 + (col[3, 0] * cw - c0) * mid
    c1 = c1 + (col[3, 1] * cw - c1) * mid
    c2 = c2 + (col[3, 2] * cw - c2) * mid
    sh = one - np.float32(0.15) * np.exp(-max(d_up, zero) * (one / (np.float32(0.02) * mw + np.float32(0.5)))) \
        - np.float32(0.1) * np.exp(-max(d_lo, zero) * (one / (np.float32(0.025) * mw + np.float32(0.5))))
    return c0 * sh, c1 * sh, c2 * sh


# ---------------------------------------------------------------- geometry (renderer.deform_core)
@njit(inline="always", **_JIT)
def _pose_vertices(terms, basis, rest, rows, head_weight, pivot, a00, a10, a20, a01, a11, a21,
                   r00, r01, r10, r11, inv_cap2, acc, out, ob):
    """`renderer._deform` for the vertices `rows` of `rest`, with their own `basis` columns (2 per row)."""
    n = rows.shape[0]
    K = terms.shape[0]
    for j in range(2 * n):
        acc[j] = 0.0
    for k in range(K):  # terms @ basis, skipping the (many) zero terms
        t = terms[k]
        if t != 0.0:
            for j in range(2 * n):
                acc[j] += t * basis[k, j]
    px, py, pz = pivot[0], pivot[1], pivot[2]
    for i in range(n):
        v = rows[i]
        hw = head_weight[v]
        ex = rest[v, 0] + acc[2 * i]
        ey = rest[v, 1] + acc[2 * i + 1]
        rx, ry, rz = ex - px, ey - py, rest[v, 2] - pz
        qx = (rx * a00 + ry * a10 + rz * a20) * hw
        qy = (rx * a01 + ry * a11 + rz * a21) * hw
        m2 = (qx * qx + qy * qy) * inv_cap2
        f = (1.0 + m2 * m2) ** -0.25   # soft cap of the parallax
        x1 = ex + qx * f
        y1 = ey + qy * f
        dx, dy = x1 - px, y1 - py
        out[ob, i, 0] = x1 + (dx * r00 + dy * r10) * hw
        out[ob, i, 1] = y1 + (dx * r01 + dy * r11) * hw


@njit(**_JIT)
def deform(motion, prod_idx, term_matrix, basis, rest, all_rows, head_weight, pivot, helper_ids, helper_basis,
           cap, bias_term, keep):
    """`renderer.deform_core` as one loop per frame: motion (B, C) -> posed vertices (B, V, 2) and helper
    vertices (2B, M, 2) (teeth without expression, lids without blinking), crop px."""
    B, C = motion.shape
    E, K = term_matrix.shape
    V = rest.shape[0]
    M = helper_ids.shape[0]
    pos = np.empty((B, V, 2), np.float32)
    helper = np.empty((2 * B, M, 2), np.float32)
    ext = np.empty(E, np.float32)
    terms = np.empty(K, np.float32)
    other = np.empty(K, np.float32)
    acc = np.empty(2 * max(V, M), np.float32)
    inv_cap2 = np.float32(1.0) / (cap * cap)
    deg = np.float32(np.pi / 180.0)
    for b in range(B):
        ext[0] = 1.0
        for c in range(C):
            ext[1 + c] = motion[b, c]
        for i in range(prod_idx.shape[0]):
            ext[1 + C + i] = ext[prod_idx[i, 0]] * ext[prod_idx[i, 1]] * ext[prod_idx[i, 2]]
        for k in range(K):
            t = np.float32(0.0)
            for e in range(E):
                t += ext[e] * term_matrix[e, k]
            terms[k] = t
        yaw, pitch, roll = motion[b, C - 3] * deg, motion[b, C - 2] * deg, motion[b, C - 1] * deg
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        # parallax of (Ry @ Rx - I), rows x, y (see renderer._Pose); roll as Rz - I in row-vector form
        a00, a10, a20 = cy - 1.0, -sy * sp, -sy * cp
        a01, a11, a21 = np.float32(0.0), cp - 1.0, -sp
        r00, r01, r10, r11 = cr - 1.0, sr, -sr, cr - 1.0
        _pose_vertices(terms, basis, rest, all_rows, head_weight, pivot, a00, a10, a20, a01, a11, a21,
                       r00, r01, r10, r11, inv_cap2, acc, pos, b)
        for k in range(K):
            other[k] = 1.0 if k == bias_term else 0.0
        _pose_vertices(other, helper_basis, rest, helper_ids, head_weight, pivot, a00, a10, a20, a01, a11, a21,
                       r00, r01, r10, r11, inv_cap2, acc, helper, b)
        for k in range(K):
            other[k] = terms[k] * keep[k]
        _pose_vertices(other, helper_basis, rest, helper_ids, head_weight, pivot, a00, a10, a20, a01, a11, a21,
                       r00, r01, r10, r11, inv_cap2, acc, helper, B + b)
    return pos, helper


# ---------------------------------------------------------------- layer planning (contour.py, mouth.py)
@njit(**_JIT)
def height_table(o, ex, ey, half, pts, table_u):
    """`contour.height_table`: heights v (N, C, 1, T) of contours pts (N, C, K, 2) at the uniform u of
    `table_u`, piecewise linear between the knots sorted by u, clamped at the ends; the frame of item i
    is origin o[i], axes ex[i], ey[i], half-length half[i]."""
    N, C, K, _ = pts.shape
    T = table_u.shape[0]
    out = np.empty((N, C, 1, T), np.float32)
    u = np.empty(K)
    v = np.empty(K)
    for i in range(N):
        for c in range(C):
            for k in range(K):
                dx, dy = pts[i, c, k, 0] - o[i, 0], pts[i, c, k, 1] - o[i, 1]
                u[k] = (dx * ex[i, 0] + dy * ex[i, 1]) / half[i]
                v[k] = dx * ey[i, 0] + dy * ey[i, 1]
            for k in range(1, K):  # insertion sort by u (K is a few dozen, nearly sorted)
                uk, vk = u[k], v[k]
                j = k - 1
                while j >= 0 and u[j] > uk:
                    u[j + 1], v[j + 1] = u[j], v[j]
                    j -= 1
                u[j + 1], v[j + 1] = uk, vk
            j = 1
            for t in range(T):  # table_u ascending: the upper knot only moves right
                tu = table_u[t]
                while j < K - 1 and u[j] <= tu:
                    j += 1
                u0, u1 = u[j - 1], u[j]
                f = min(max((tu - u0) / max(u1 - u0, 1e-6), 0.0), 1.0)
                out[i, c, 0, t] = v[j - 1] + f * (v[j] - v[j - 1])
    return out


@njit(**_JIT)
def catmull_rom(p, n):
    """`mouth.catmull_rom`: (B, K, 2) open polyline -> (B, (K - 1) * n + 1, 2) through the same points."""
    B, K, _ = p.shape
    out = np.empty((B, (K - 1) * n + 1, 2))
    for b in range(B):
        for d in range(2):
            for k in range(K - 1):
                p1, p2 = p[b, k, d], p[b, k + 1, d]
                p0 = p[b, k - 1, d] if k > 0 else 2.0 * p1 - p2
                p3 = p[b, k + 2, d] if k + 2 < K else 2.0 * p2 - p1
                for i in range(n):
                    s = i / n
                    out[b, k * n + i, d] = 0.5 * (2.0 * p1 + (p2 - p0) * s + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * s * s
                                                  + (3.0 * p1 - p0 - 3.0 * p2 + p3) * s * s * s)
            out[b, (K - 1) * n, d] = p[b, K - 1, d]
    return out


def ready() -> bool:
    """Whether the kernels are compiled and in use (after `warm_up` succeeded)."""
    return _warmed and AVAILABLE


# ---------------------------------------------------------------- compile before the first frame
_warm_lock = threading.Lock()
_warmed = False


def warm_up() -> bool:
    """Compile every kernel (or load it from numba's cache) for the argument types the renderer passes.

    A cold compile takes several seconds; it must not land on a session's first frame. Idempotent and
    thread-safe; the renderer calls it from `prepare`. Returns whether the kernels can be used: if
    compiling fails (say, no writable cache directory: set NUMBA_CACHE_DIR), the renderer keeps its
    torch path and says so once.
    """
    global _warmed, AVAILABLE
    if not AVAILABLE or _warmed:
        return AVAILABLE
    with _warm_lock:
        if _warmed or not AVAILABLE:
            return AVAILABLE
        try:
            _compile_all()
        except Exception as exc:  # noqa: BLE001 - any compile / cache failure: fall back, loudly
            AVAILABLE = False
            log.warning("the CPU render kernels could not be compiled (%s: %s); rendering on the slower torch "
                        "path. Set NUMBA_CACHE_DIR to a writable folder if the cache is the problem.",
                        type(exc).__name__, exc)
            return False
        _warmed = True
        return True


def _compile_all() -> None:
    """Run each kernel once on tiny inputs of the exact argument types the renderer passes."""
    t0 = time.perf_counter()
    f32 = np.float32
    g = np.arange(4, dtype=f32)
    base = np.stack([np.broadcast_to(g, (4, 4)), np.broadcast_to(g[:, None], (4, 4))]).astype(f32)
    backward_map(np.zeros((1, 3, 2), f32), np.zeros((3, 2), f32), np.zeros((3, 4, 4), np.int64),
                 np.full((3, 4, 4), 1.0 / 3.0, f32), base, 0, 4, 0, 4, 1.0, 2)
    idx = np.array([0, 1], np.int64)
    upsample_map(np.zeros((1, 2, 4, 4), f32), f32(1.0), idx, idx + 1, np.zeros(2, f32), idx, idx + 1, np.zeros(2, f32))
    frames = np.zeros((1, 8, 8, 4), np.uint8)
    tex = np.zeros((4, 4, 4), f32)
    eye_layer(frames, np.zeros((2, 2), np.int64), 2, 2, np.zeros((2, 3, 7), f32), np.zeros((2, 5, 4), f32),
              np.zeros(2, f32), False, np.ones(2, f32), np.ascontiguousarray(tex[:3]), tex, np.zeros((2, 2, 3), f32))
    mouth_layer(frames, np.array([0, 0, 2, 2], np.int64), np.zeros((1, 3, 3), f32), np.zeros((1, 13, 4), f32),
                np.zeros((5, 3), f32), f32(10.0), f32(0.0), False, np.zeros((3, 2, 2), f32), np.zeros((1, 1, 2), f32))
    rows = np.arange(3, dtype=np.int64)
    deform(np.zeros((1, 6), f32), np.zeros((1, 3), np.int64), np.zeros((8, 2), f32), np.zeros((2, 6), f32),
           np.zeros((3, 3), f32), rows, np.ones(3, f32), np.zeros(3, f32), rows[:2], np.zeros((2, 4), f32),
           f32(1.0), 0, np.ones(2, f32))
    f64 = np.float64
    one = np.ones((1, 2), f64)
    height_table(np.zeros((1, 2), f64), one, one, np.ones(1, f64), np.zeros((1, 1, 3, 2), f64), np.zeros(4, f64))
    catmull_rom(np.zeros((1, 3, 2), f64), 3)
    log.info("CPU render kernels ready in %.1f s (numba; compiled once, then loaded from its cache)",
             time.perf_counter() - t0)
