"""Train the causal audio -> viseme network and export it to lpm_npc/assets/lipsync_v1.onnx.

    python tools/make_lipsync_data.py --out out/lipsync_data --n 3000 --seed 0
    python tools/train_lipsync.py --data out/lipsync_data --steps 2500 --seed 0

Network: dilated 1-D convolutions with valid padding over log-mel rows; the output for input frame
j is the viseme of row j - lookahead (the lookahead bound is built into the labels). Seeded and
single-process; ~10 min on 2 CPU cores. Writes the ONNX file and a JSON with its config,
checksum and validation metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lpm_npc.performance.lipsync_model import (
    CONFIG_PATH,
    MODEL_PATH,
    N_MELS,
    NUM_VISEMES,
    VISEMES,
    MelFrontEnd,
    file_sha256,
)


class LipSyncTCN(nn.Module):
    """Valid-padded dilated conv stack; receptive field = 1 + (k - 1) * sum(dilations)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, width: int = 64, dilations=(1, 2, 4, 8, 1), k: int = 3):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("inv_std", torch.tensor(1.0 / std, dtype=torch.float32).view(1, -1, 1))
        self.inp = nn.Conv1d(N_MELS, width, 1)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, k, dilation=d) for d in dilations)
        self.crops = [(k - 1) * d for d in dilations]
        self.out = nn.Conv1d(width, NUM_VISEMES, 1)
        self.receptive = 1 + sum(self.crops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, N_MELS, T) -> logits (B, V, T - R + 1)
        h = torch.relu(self.inp((x - self.mean) * self.inv_std))
        for conv, c in zip(self.convs, self.crops):
            h = h[:, :, c:] + torch.relu(conv(h))
        return self.out(h)


class Probs(nn.Module):
    def __init__(self, net: LipSyncTCN):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def load(path: Path, pad: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(path)
    mels = d["mels"].astype(np.float32)
    labels = d["labels"].astype(np.int64)
    sil = np.tile(MelFrontEnd.silent_row(), (pad, 1))
    return np.concatenate([sil, mels]), np.concatenate([np.zeros(pad, np.int64), labels])


def batches(mels: np.ndarray, labels: np.ndarray, rng: np.random.Generator, bs: int, t_out: int, r: int, la: int):
    t_in = t_out + r - 1
    while True:
        s = rng.integers(0, mels.shape[0] - t_in, bs)
        idx = s[:, None] + np.arange(t_in)[None]
        x = mels[idx].transpose(0, 2, 1)
        y = labels[idx[:, r - 1:] - la]
        yield torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


@torch.no_grad()
def evaluate(net: LipSyncTCN, mels: np.ndarray, labels: np.ndarray, la: int) -> dict:
    net.eval()
    r = net.receptive
    logits = net(torch.from_numpy(mels.T[None].copy()))[0].numpy().T   # rows: last frame = j + r - 1
    y = labels[r - 1 - la: r - 1 - la + logits.shape[0]]
    pred = logits.argmax(1)
    net.train()
    per = {v: float((pred[y == i] == i).mean()) if np.any(y == i) else None for i, v in enumerate(VISEMES)}
    return {"acc": float((pred == y).mean()), "recall": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="out/lipsync_data")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--lookahead", type=int, default=4, help="hops of audio after a row it may use (<= 6)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(MODEL_PATH))
    args = ap.parse_args()
    if not 0 <= args.lookahead <= 6:
        raise SystemExit("--lookahead must be 0..6 hops (the session lookahead is 80 ms)")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = Path(args.data)
    probe = LipSyncTCN(np.zeros(N_MELS), np.ones(N_MELS), args.width)
    r, la = probe.receptive, args.lookahead
    mels, labels = load(data / "train.npz", r + la)
    vmels, vlabels = load(data / "val.npz", r + la)
    speech = labels != 0
    mean = mels[speech].mean(0)
    std = mels[speech].std(0) + 1e-3
    net = LipSyncTCN(mean, std, args.width)
    counts = np.bincount(labels, minlength=NUM_VISEMES).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** 0.5
    w = torch.tensor(w / w.mean(), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=w, label_smoothing=0.05)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    gen = batches(mels, labels, rng, args.batch, args.frames, r, la)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"train {labels.size / 6000:.0f} min, receptive {r} hops, lookahead {la} hops, {n_params} params")
    t0 = time.time()
    run = 0.0
    for step in range(1, args.steps + 1):
        x, y = next(gen)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run = loss.item() if step == 1 else 0.98 * run + 0.02 * loss.item()
        if step % 250 == 0 or step == args.steps:
            ev = evaluate(net, vmels, vlabels, la)
            print(f"step {step} loss {run:.3f} val acc {ev['acc']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    ev = evaluate(net, vmels, vlabels, la)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.eval()
    dummy = torch.zeros(1, N_MELS, r + 9)
    torch.onnx.export(Probs(net), (dummy,), str(out), input_names=["mels"], output_names=["posteriors"],
                      dynamic_axes={"mels": {2: "frames"}, "posteriors": {2: "rows"}}, opset_version=17,
                      dynamo=False)
    cfg = {"receptive": r, "lookahead": la, "n_mels": N_MELS, "visemes": list(VISEMES), "sha256": file_sha256(out),
           "params": n_params, "width": args.width, "steps": args.steps, "seed": args.seed,
           "train_minutes": round(labels.size / 6000, 1), "val": ev}
    cfg_path = out.with_suffix(".json") if out != MODEL_PATH else CONFIG_PATH
    cfg_path.write_text(json.dumps(cfg, indent=1))
    print(f"val acc {ev['acc']:.3f}; wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {cfg_path}")


if __name__ == "__main__":
    main()
