"""ONNX export of the renderer's numeric core (the part that is the same for every frame and character).

Two graphs, both with every per-rig tensor as an input (one file serves every character of the same
mesh topology (V, K, G, M); nothing about a portrait is baked in):

* geometry  motion (B, 20), rest (V, 3), basis (K, 2V), head_weight (V, 1), pivot (3,), helper_ids (M,),
            helper_basis (K, 2M), grid_vertex (3, G, G), grid_bary (3, G, G), base (1, 2, G, G), params (2,)
            -> pos (B, V, 2), helper (2B, M, 2), x (B, 2, G, G)
            = motion -> coefficient terms -> deformed vertices (+ head pose) -> forward field on the coarse
            grid -> Newton-inverted coarse backward map (`renderer.geometry_core`).
* sample    x (B, 2, G, G), texture (1, C, s, s), ogrid (1, h, w, 2), norm (1,) -> crop (B, C, h, w) float
            = dense sampling grid (bilinear upsample of the coarse map) -> one GridSample of the texture
            (`renderer.sample_core`).

What stays on the host (numpy / torch around the graphs): choosing the crop box, planning the eye and
mouth layers from the deformed contours, compositing them, float -> uint8 and pasting the crop into
the cached still frame. Opset 17 (GridSample needs >= 16); legacy TorchScript exporter.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from lpm_npc.performance.motion import NUM_CHANNELS
from lpm_npc.render.renderer import HEAD_CAP, PreparedRig, geometry_core, sample_core

log = logging.getLogger(__name__)

OPSET = 17
EXPORT_VERSION = 1  # bump when the exported functions change (invalidates cached files and engines)

GEOMETRY_INPUTS = ("motion", "rest", "basis", "head_weight", "pivot", "helper_ids", "helper_basis",
                   "grid_vertex", "grid_bary", "base", "params")
GEOMETRY_OUTPUTS = ("pos", "helper", "x")
SAMPLE_INPUTS = ("x", "texture", "ogrid", "norm")
SAMPLE_OUTPUTS = ("crop",)


class GeometryModule(torch.nn.Module):
    def forward(self, *args):
        return geometry_core(*args)


class SampleModule(torch.nn.Module):
    def forward(self, x, texture, ogrid, norm):
        return sample_core(x, texture, ogrid, norm)


def rig_inputs(p: PreparedRig) -> dict[str, torch.Tensor]:
    """The geometry graph's per-rig inputs (tensors on the rig's device)."""
    cell = (p.size - 1) / (p.grid_size - 1)
    params = torch.tensor([HEAD_CAP * p.face_width, cell], dtype=torch.float32, device=p.device)
    return {"rest": p.rest, "basis": p.basis, "head_weight": p.head_weight, "pivot": p.pivot,
            "helper_ids": p.helper_ids, "helper_basis": p.helper_basis, "grid_vertex": p.grid_vertex,
            "grid_bary": p.grid_bary, "base": p.base_grid_cf, "params": params}


def _export(module: torch.nn.Module, args: tuple, names_in, names_out, dynamic: dict) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=list(names_in), output_names=list(names_out),
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def export_geometry(p: PreparedRig) -> bytes:
    """ONNX bytes of the geometry graph for the topology of `p` (batch dimension dynamic)."""
    cpu = {k: v.detach().cpu() for k, v in rig_inputs(p).items()}
    motion = torch.zeros(2, NUM_CHANNELS)
    args = (motion,) + tuple(cpu[k] for k in GEOMETRY_INPUTS[1:])
    dyn = {"motion": {0: "B"}, "pos": {0: "B"}, "helper": {0: "B2"}, "x": {0: "B"}}
    return _export(GeometryModule(), args, GEOMETRY_INPUTS, GEOMETRY_OUTPUTS, dyn)


def export_sample(grid_size: int) -> bytes:
    """ONNX bytes of the sampling graph (batch, texture size and channels, crop size all dynamic)."""
    G = int(grid_size)
    args = (torch.zeros(2, 2, G, G), torch.zeros(1, 4, 64, 64), torch.zeros(1, 8, 9, 2), torch.ones(1))
    dyn = {"x": {0: "B"}, "texture": {1: "C", 2: "S", 3: "S"}, "ogrid": {1: "h", 2: "w"},
           "crop": {0: "B", 1: "C", 2: "h", 3: "w"}}
    return _export(SampleModule(), args, SAMPLE_INPUTS, SAMPLE_OUTPUTS, dyn)


def topology_name(p: PreparedRig) -> str:
    V, K, G, M = p.topology
    return f"v{EXPORT_VERSION}_V{V}_K{K}_G{G}_M{M}"


def cached_onnx(kind: str, p: PreparedRig, cache_dir: Path | None) -> bytes:
    """The ONNX bytes of graph `kind` ('geometry' or 'sample') for p's topology, from cache_dir when there."""
    name = f"{kind}_{topology_name(p)}.onnx"
    path = Path(cache_dir) / "onnx" / name if cache_dir is not None else None
    if path is not None and path.exists():
        return path.read_bytes()
    data = export_geometry(p) if kind == "geometry" else export_sample(p.grid_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        log.info("exported %s (%d kB)", path, len(data) // 1024)
    return data


def onnx_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def numpy_inputs(p: PreparedRig) -> dict[str, np.ndarray]:
    """Host copies of the geometry graph's rig inputs (cached on the rig)."""
    got = p.host.get("onnx_inputs")
    if got is None:
        got = p.host["onnx_inputs"] = {k: np.ascontiguousarray(v.detach().cpu().numpy())
                                       for k, v in rig_inputs(p).items()}
    return got
