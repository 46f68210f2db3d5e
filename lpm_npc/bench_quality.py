"""`lpm-npc bench --quality`: the performance's tables, each beside its baseline and its bar.

  * lip-sync on a held-out set (voices/languages not trained on): learned model vs the
    foundation's signal model (lpm_npc.performance.lipsync_eval);
  * listening: Silero VAD vs the energy VAD (lpm_npc.evaluation.listening_eval);
  * controllability: emotions and motion primitives measured on rendered pixels with MediaPipe
    landmarks (lpm_npc.evaluation.controllability);
  * motion statistics of a simulated session against human ranges, first vs last minute
    (lpm_npc.evaluation.motion_stats).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger(__name__)


def _lipsync(quick: bool) -> dict | None:
    try:
        from .performance.lipsync_eval import lipsync_report, print_lipsync_report
    except ImportError as exc:  # pragma: no cover - the learned model is optional in a partial install
        print(f"\nLip-sync: not available ({exc})")
        return None
    rep = lipsync_report(quick=quick)
    print_lipsync_report(rep)
    return rep


def _listening() -> dict:
    from .evaluation.listening_eval import listening_report, print_listening_report

    rep = listening_report()
    print_listening_report(rep)
    return rep


def _controllability(size: int) -> dict:
    from .evaluation.controllability import controllability_report, format_table

    rep = controllability_report(size)
    print(f"\nControllability: each emotion / primitive vs neutral, landmark measures on rendered {size} px frames "
          "(units: inter-ocular distances; head angles in degrees)")
    print(format_table(rep))
    return rep


def _motion(minutes: float) -> dict:
    from .evaluation.motion_stats import HUMAN_RANGES, motion_stats_report

    rep = motion_stats_report(minutes)
    print(f"\nMotion statistics: {minutes:g}-minute simulated session (speech, silence, interruptions, emotions)")
    print("| statistic | first minute | last minute | whole session | human range | in range |")
    print("|---|---|---|---|---|---|")
    for k, v in rep["overall"].items():
        rng = HUMAN_RANGES.get(k)
        ok = rep["overall_in_range"].get(k)
        print(f"| {k} | {rep['first_minute'][k]:.3f} | {rep['last_minute'][k]:.3f} | {v:.3f} | "
              f"{'-' if rng is None else f'{rng[0]:g}-{rng[1]:g}'} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    return rep


def run_quality(json_path: Path | None = None, quick: bool = True, minutes: float = 3.0, size: int = 256) -> dict:
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "kind": "quality"}
    report["lipsync"] = _lipsync(quick)
    report["listening"] = _listening()
    report["controllability"] = _controllability(size)
    report["motion"] = _motion(minutes)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1, default=float))
        print(f"\nwrote {json_path}")
    return report
