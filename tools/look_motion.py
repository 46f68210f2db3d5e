"""Plot motion channels over time against the waveform (and eSpeak phonemes) to a PNG.

    python tools/look_motion.py --text "Bring me the big map, please." --out /tmp/motion.png
    python tools/look_motion.py --wav ../shared/data/speech/imagine.wav --seconds 8 --out /tmp/m.png
    python tools/look_motion.py --player --text "..."   # the same audio on the player channel
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lpm_npc.audio.pcm import INTERNAL_RATE, resample  # noqa: E402
from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, synthesize  # noqa: E402
from lpm_npc.audio.wav import load_audio  # noqa: E402
from lpm_npc.performance.model import PerformanceModel  # noqa: E402
from lpm_npc.types import Emotion  # noqa: E402

log = logging.getLogger("look_motion")
PANELS = (
    ("mouth", ("jaw_open", "lips_press", "mouth_round", "mouth_spread")),
    ("face", ("brow_up", "brow_inner_up", "brow_down", "smile", "blink_l")),
    ("head (deg)", ("head_yaw", "head_pitch", "head_roll")),
    ("gaze", ("gaze_x", "gaze_y")),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default="Hello there, my friend. Would you bring me the big map, please?")
    ap.add_argument("--voice", default=DEFAULT_NPC_VOICE)
    ap.add_argument("--wav", type=Path, help="use this audio file instead of eSpeak")
    ap.add_argument("--seconds", type=float, default=0.0, help="cut the audio to this length")
    ap.add_argument("--player", action="store_true", help="push the audio on the player channel")
    ap.add_argument("--emotion", default="neutral", choices=[e.value for e in Emotion])
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--lead", type=float, default=0.5, help="silence before the speech (s)")
    ap.add_argument("--out", type=Path, default=Path("motion.png"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    phonemes: list[tuple[float, str]] = []
    if args.wav:
        x = load_audio(args.wav)
        title = args.wav.name
    else:
        clip = synthesize(args.text, voice=args.voice)
        x = resample(clip.samples, clip.sample_rate, INTERNAL_RATE)
        phonemes = [(p.t, p.symbol) for p in clip.phonemes]
        title = f"{args.voice}: {args.text}"
    if args.seconds > 0:
        x = x[: int(args.seconds * INTERNAL_RATE)]
    model = PerformanceModel(seed=0)
    model.set_dialogue_state(0.0, emotion=Emotion(args.emotion), transition_s=0.0)
    duration = args.lead + x.size / INTERNAL_RATE + 1.0
    if args.player:
        for i in range(0, x.size, 320):
            model.push_player_audio(x[i:i + 320], args.lead + i / INTERNAL_RATE)
    else:
        model.push_npc_audio(x, 0.0, start_s=args.lead)
    times = np.arange(int(duration * args.fps)) / args.fps
    frames, events = [], []
    for t in times:
        f, ev = model.step(float(t))
        frames.append(f.as_dict())
        events += ev

    fig, axes = plt.subplots(len(PANELS) + 1, 1, figsize=(max(12, duration * 2.2), 11), sharex=True)
    ta = args.lead + np.arange(x.size) / INTERNAL_RATE
    axes[0].plot(ta, x, lw=0.4, color="0.3")
    axes[0].set_title(title[:140], fontsize=9)
    for t, sym in phonemes:
        color = "red" if sym in ("p", "b", "m") else "0.6"
        for ax in axes:
            ax.axvline(args.lead + t, color=color, lw=0.5 if color == "red" else 0.3, alpha=0.6)
        axes[0].text(args.lead + t, 0.9 * max(np.abs(x).max(), 1e-3), sym, fontsize=6, color=color)
    for e in events:
        axes[0].annotate(e.type.value, (e.t_s, -0.9 * max(np.abs(x).max(), 1e-3)), fontsize=6, color="blue")
    for ax, (name, chans) in zip(axes[1:], PANELS):
        for ch in chans:
            ax.plot(times, [f[ch] for f in frames], marker=".", ms=2, lw=0.8, label=ch)
        ax.set_ylabel(name)
        ax.legend(loc="upper right", fontsize=7, ncol=len(chans))
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    log.info("wrote %s (%d frames, %d events)", args.out, len(frames), len(events))


if __name__ == "__main__":
    main()
