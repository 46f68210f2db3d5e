"""Make the lip-sync training set: eSpeak NG speech (train voices/languages only), augmented.

    python tools/make_lipsync_data.py --out out/lipsync_data --n 2400 --seed 0

Writes train.npz / val.npz: log-mel rows (float16, the runtime front end), per-hop viseme labels
and utterance offsets. Not committed (regenerate it; ~2-4 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lpm_npc.performance.lipsync_data import (
    TRAIN_LANGS,
    TRAIN_VARIANTS,
    english_sentence,
    make_utterance,
    pseudo_sentence,
    voice_name,
)
from lpm_npc.performance.lipsync_model import NUM_VISEMES, VISEMES, MelFrontEnd


def build(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    mels, labels, offsets, voices = [], [], [0], []
    for i in range(n):
        rng.random()   # a spare draw, kept so the seed reproduces the shipped model's data
        lang = str(rng.choice(TRAIN_LANGS))
        if rng.random() < 0.45:
            lang = str(rng.choice(("en-us", "en")))
        var = str(rng.choice(TRAIN_VARIANTS))
        text = english_sentence(rng) if lang.startswith("en") else pseudo_sentence(rng)
        strength = 0.0 if rng.random() < 0.2 else 1.0
        u = make_utterance(text, voice_name(lang, var), rng, strength)
        m = MelFrontEnd().push(u.samples)
        k = min(m.shape[0], u.labels.size)
        mels.append(m[:k].astype(np.float16))
        labels.append(u.labels[:k].astype(np.int8))
        offsets.append(offsets[-1] + k)
        voices.append(u.voice)
    return {"mels": np.concatenate(mels), "labels": np.concatenate(labels), "offsets": np.asarray(offsets),
            "voices": np.asarray(voices)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/lipsync_data")
    ap.add_argument("--n", type=int, default=2400, help="training utterances")
    ap.add_argument("--n-val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for name, n, seed in (("train", args.n, args.seed), ("val", args.n_val, args.seed + 10_000)):
        d = build(n, seed)
        np.savez_compressed(out / f"{name}.npz", **d)
        counts = np.bincount(d["labels"], minlength=NUM_VISEMES)
        print(f"{name}: {n} utterances, {d['labels'].size / 100 / 60:.1f} min, classes "
              + ", ".join(f"{v}={c / counts.sum():.2f}" for v, c in zip(VISEMES, counts)))
    (out / "meta.json").write_text(json.dumps({"n": args.n, "n_val": args.n_val, "seed": args.seed}))
    print(f"done in {time.time() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
