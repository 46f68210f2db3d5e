"""Text-informed lip-sync: align a line's expected visemes to the network's posteriors as they stream.

eSpeak NG gives the phonemes of the text (and their rough durations); they become a left-to-right
chain of viseme states (silence between phrases, a skip for phonemes the voice drops). Each
final row's posterior advances a forward (filtering) pass over that chain: causal and monotonic.
The chain's class marginal sharpens the posterior toward the visemes the text says come next,
weighted by how well the chain explains the audio so far (a line that does not match its audio
falls back to the audio alone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lpm_npc.performance.lipsync_model import NUM_VISEMES, V, phoneme_viseme

log = logging.getLogger(__name__)

DEFAULT_TEXT_VOICE = "en-us"
_FLOOR = 1e-3


@dataclass
class AlignConfig:
    skip: float = 0.08          # probability of skipping a state when leaving one
    min_hops: float = 2.0       # shortest expected state duration (hops)
    weight: float = 1.0         # how strongly the text sharpens the posterior (0 = off)
    floor: float = 0.03         # posterior kept for classes the text does not expect now
    conf_rate: float = 0.05     # running agreement between chain and audio (per hop)


def expected_visemes(text: str, voice: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Viseme chain of `text` (classes, expected durations in hops), from eSpeak NG."""
    from lpm_npc.audio.tts import synthesize

    clip = synthesize(text, voice=voice or DEFAULT_TEXT_VOICE)
    classes, starts = [V["sil"]], [0.0]
    for p in clip.phonemes:
        c = phoneme_viseme(p.symbol)
        if c is None or c == classes[-1]:
            continue
        classes.append(c)
        starts.append(p.t)
    if classes[-1] != V["sil"]:
        classes.append(V["sil"])
        starts.append(clip.duration_s)
    ends = starts[1:] + [starts[-1] + 0.3]
    dur = np.maximum((np.asarray(ends) - np.asarray(starts)) * 100.0, 1.0)
    return np.asarray(classes, np.int64), dur


class LineAligner:
    """Online monotonic alignment of one line's viseme chain (state per NPC session)."""

    def __init__(self, classes: np.ndarray, durations: np.ndarray, text: str = "", cfg: AlignConfig | None = None):
        self.cfg = cfg or AlignConfig()
        self.text = text
        self.classes = np.asarray(classes, np.int64)
        n = self.classes.size
        d = np.maximum(np.asarray(durations, np.float64), self.cfg.min_hops)
        self.stay = 1.0 - 1.0 / d
        self.stay[-1] = 1.0                       # the final silence absorbs
        self.alpha = np.zeros(n)
        self.alpha[0] = 1.0
        self.conf = 0.5
        self._onehot = np.zeros((n, NUM_VISEMES))
        self._onehot[np.arange(n), self.classes] = 1.0

    @classmethod
    def for_text(cls, text: str, voice: str | None = None, cfg: AlignConfig | None = None) -> LineAligner:
        classes, dur = expected_visemes(text, voice)
        return cls(classes, dur, text, cfg)

    def _step(self, alpha: np.ndarray, conf: float, o: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        leave = alpha * (1.0 - self.stay)
        pred = alpha * self.stay
        pred[1:] += leave[:-1] * (1.0 - self.cfg.skip)
        pred[2:] += leave[:-2] * self.cfg.skip
        pred[-1] += leave[-2] * self.cfg.skip if alpha.size >= 2 else 0.0
        e = o[self.classes] + _FLOOR
        agree = float(pred @ o[self.classes])
        conf += self.cfg.conf_rate * (agree - conf)
        a = pred * e
        s = a.sum()
        alpha = a / s if s > 0 else pred
        q = alpha @ self._onehot
        w = self.cfg.weight * float(np.clip((conf - 0.25) / 0.25, 0.0, 1.0))
        out = o * ((1.0 - w) + w * (q + self.cfg.floor))
        return alpha, conf, out / max(out.sum(), 1e-9)

    def update(self, post: np.ndarray) -> np.ndarray:
        """Advance over final rows (n, NUM_VISEMES); returns the sharpened posteriors."""
        out = np.empty_like(post)
        for i in range(post.shape[0]):
            self.alpha, self.conf, out[i] = self._step(self.alpha, self.conf, post[i])
        return out

    def peek(self, post: np.ndarray) -> np.ndarray:
        """Like update() for provisional rows, without moving the alignment."""
        alpha, conf = self.alpha.copy(), self.conf
        out = np.empty_like(post)
        for i in range(post.shape[0]):
            alpha, conf, out[i] = self._step(alpha, conf, post[i])
        return out
