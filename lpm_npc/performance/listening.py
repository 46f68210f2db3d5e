"""Player channel: energy VAD with an adaptive noise floor, turn events and backchannel cues.

Player audio is placed on the player clock at its arrival time. Each 10 ms hop is classified as
speech when it rises a margin above a noise floor that follows the quiet hops (fast down, slowly
up). Start needs a short run of speech hops, end needs a longer run of silence, and a pause in the
middle of a turn (long enough, after enough speech, not too soon after the previous one) is a
backchannel opportunity: the NPC nods or raises its brows. The player's audio never moves the mouth.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from lpm_npc.audio.features import F, HOP, RATE, FeatureExtractor, row_time
from lpm_npc.types import EventType


@dataclass
class VadConfig:
    margin_db: float = 12.0          # above the noise floor
    min_level_db: float = -52.0      # never speech below this (dBFS)
    start_s: float = 0.06            # speech run to start a turn
    end_s: float = 0.6               # silence run to end a turn
    pause_s: float = 0.18            # silence run that is a backchannel opportunity
    min_speech_for_backchannel_s: float = 1.0
    backchannel_gap_s: float = 2.2
    floor_rise_db_per_s: float = 1.5


class PlayerListener:
    """Streaming VAD over player audio; produces timed events for the model to emit at step()."""

    def __init__(self, cfg: VadConfig | None = None) -> None:
        self.cfg = cfg or VadConfig()
        self.extractor = FeatureExtractor()
        self.floor_db = -60.0
        self.speaking = False
        self._clock_end: float | None = None   # player-clock time where fed audio ends
        self._ext_t0 = 0.0                      # time of the extractor's first sample
        self._speech_run = 0
        self._silence_run = 0
        self._speech_since_bc = 0.0
        self._last_bc = -1e9
        self._bc_armed = True
        self.pending: deque[tuple[float, EventType, str]] = deque(maxlen=256)
        self.level_db = -100.0   # last hop level (for listening intensity)

    def push(self, samples: np.ndarray, now_s: float) -> None:
        dur = samples.size / RATE
        if self._clock_end is None or self._clock_end < now_s - 0.05 or self._clock_end > now_s + 1.0:
            # first chunk, a gap in the mic stream, or a client running far ahead: restart at arrival
            self.extractor.reset()
            self._ext_t0 = now_s
            self._clock_end = now_s
        self._clock_end += dur
        k0 = self.extractor.rows_emitted
        feats = self.extractor.push(samples)
        if feats.shape[0]:
            times = self._ext_t0 + row_time(np.arange(k0, k0 + feats.shape[0])) + (0.5 * 512 - HOP) / RATE
            self._classify(feats, times)

    def _classify(self, feats: np.ndarray, times: np.ndarray) -> None:
        c = self.cfg
        hop_s = HOP / RATE
        rise = c.floor_rise_db_per_s * hop_s
        for row, t in zip(feats, times):
            level = float(row[F["rms_db"]])
            self.level_db = level
            is_speech = level > max(self.floor_db + c.margin_db, c.min_level_db)
            if not is_speech:
                if level < self.floor_db:
                    self.floor_db += 0.3 * (level - self.floor_db)
                else:
                    self.floor_db += min(rise, level - self.floor_db)
                self.floor_db = max(self.floor_db, -90.0)
            else:
                self.floor_db += rise * 0.2
            if is_speech:
                self._speech_run += 1
                self._silence_run = 0
                if self.speaking:
                    self._speech_since_bc += hop_s
                    self._bc_armed = True
            else:
                self._silence_run += 1
                self._speech_run = 0
            t = float(t)
            if not self.speaking and self._speech_run * hop_s >= c.start_s:
                self.speaking = True
                self._speech_since_bc = self._speech_run * hop_s
                self.pending.append((t, EventType.PLAYER_SPEECH_STARTED, ""))
            elif self.speaking:
                quiet = self._silence_run * hop_s
                if quiet >= c.end_s:
                    self.speaking = False
                    self.pending.append((t, EventType.PLAYER_SPEECH_ENDED, ""))
                elif (quiet >= c.pause_s and self._bc_armed
                      and self._speech_since_bc >= c.min_speech_for_backchannel_s
                      and t - self._last_bc >= c.backchannel_gap_s):
                    self._last_bc = t
                    self._speech_since_bc = 0.0
                    self._bc_armed = False
                    self.pending.append((t, EventType.BACKCHANNEL, "pause"))

    def tick(self, t: float) -> None:
        """End a turn whose audio simply stopped arriving (push-to-talk, muted mic)."""
        if self.speaking and self._clock_end is not None and t - self._clock_end >= self.cfg.end_s:
            self.speaking = False
            self._speech_run = self._silence_run = 0
            self.pending.append((self._clock_end + self.cfg.end_s, EventType.PLAYER_SPEECH_ENDED, "no audio"))

    def pop_until(self, t: float) -> list[tuple[float, EventType, str]]:
        out = []
        while self.pending and self.pending[0][0] <= t:
            out.append(self.pending.popleft())
        return out

    def speaking_at(self, t: float) -> bool:
        """VAD state at time t given the events already popped (pending ones are in the future)."""
        state = self.speaking
        # undo transitions that lie after t
        for te, etype, _ in reversed(self.pending):
            if te > t:
                if etype == EventType.PLAYER_SPEECH_STARTED:
                    state = False
                elif etype == EventType.PLAYER_SPEECH_ENDED:
                    state = True
        return state
