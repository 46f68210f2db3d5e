"""Held-out lip-sync report: learned (audio / audio + text) vs the signal baseline, same run.

    python tools/eval_lipsync.py [--quick] [--json out/lipsync_eval.json]

Prints the held-out table (clean, telephone band + noise, noisy, reverberant), the cost per
10 ms hop, and qualitative stats on the real recordings in ../shared/data/speech when present
(no labels there: silence-closed rate and how often the mouth is open while speaking).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lpm_npc.audio.features import HOP, RATE, FeatureExtractor
from lpm_npc.performance.lipsync import LipSyncConfig
from lpm_npc.performance.lipsync_data import Utterance
from lpm_npc.performance.lipsync_eval import CLOSED, lipsync_report, run_system
from lpm_npc.performance.lipsync_model import StreamingVisemes, shared_net

SPEECH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"


def cost_per_hop(seconds: float = 20.0, chunk_s: float = 0.04) -> dict:
    net = shared_net()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(int(seconds * RATE)) * 0.05).astype(np.float32)
    n = int(chunk_s * RATE)
    sv = StreamingVisemes(net)
    t0 = time.perf_counter()
    for i in range(0, x.size, n):
        sv.push_with_provisional(x[i:i + n])
    t_net = time.perf_counter() - t0
    fe = FeatureExtractor()
    t0 = time.perf_counter()
    for i in range(0, x.size, n):
        fe.push(x[i:i + n])
    t_fe = time.perf_counter() - t0
    hops = x.size / HOP
    return {"chunk_ms": chunk_s * 1000, "learned_ms_per_hop": round(t_net / hops * 1000, 4),
            "feature_extractor_ms_per_hop": round(t_fe / hops * 1000, 4)}


def real_speech(cfg: LipSyncConfig) -> dict:
    from lpm_npc.audio.wav import load_audio

    out = {}
    for wav in sorted(SPEECH_DIR.glob("*.wav")):
        x = load_audio(wav)[: 30 * RATE]
        fe = FeatureExtractor().push(x)
        rms = fe[:, 0]
        level = np.percentile(rms, 90)
        speech = rms > level - 30.0
        near = np.convolve(speech.astype(float), np.ones(21), mode="same") > 0
        quiet, loud = ~near, rms > level - 12.0
        u = Utterance(x, np.zeros(rms.size, np.int64), [], "real", "")
        row = {}
        for system in ("baseline", "learned"):
            tr = run_system(u, system, cfg)
            k = min(tr.opening.size, rms.size)
            op, q, ld = tr.opening[:k], quiet[:k], loud[:k]
            row[system] = {"silence_closed": round(float((op[q] < CLOSED).mean()), 3) if q.any() else None,
                           "open_while_loud": round(float((op[ld] >= CLOSED).mean()), 3),
                           "quiet_hops": int(q.sum())}
        out[wav.name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rep = lipsync_report(args.quick)
    cols = ("viseme_acc", "onset_p50_ms", "onset_p95_ms", "onset_matched", "bilabial_closed", "silence_closed")
    print(f"held-out: {rep['heldout_utterances']} utterances, voices {', '.join(rep['voices'])}")
    print(f"{'condition':9s} {'system':13s} " + " ".join(f"{c:>15s}" for c in cols))
    for cond, systems in rep["table"].items():
        for system, m in systems.items():
            print(f"{cond:9s} {system:13s} " + " ".join(f"{m[c]!s:>15s}" for c in cols))
    rep["cost"] = cost_per_hop()
    print("cost:", rep["cost"])
    if SPEECH_DIR.is_dir():
        rep["real_speech"] = real_speech(LipSyncConfig())
        for name, row in rep["real_speech"].items():
            print(f"real {name}: " + "; ".join(f"{s} {m}" for s, m in row.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
