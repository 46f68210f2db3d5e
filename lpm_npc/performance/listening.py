"""Player channel: voice activity (Silero VAD), turn events, backchannel cues and reactions.

Player audio is placed on the player clock at its arrival time. Voice activity comes from Silero
VAD (`lpm_npc.audio.vad`, ONNX Runtime, one probability per 32 ms chunk) with hysteresis: a chunk
enters speech at `threshold` and stays in speech down to `neg_threshold`. When Silero is not
available (no wheel, no onnxruntime) a logged warning is given and the energy VAD with an adaptive
noise floor (10 ms hops) takes over; both feed the same turn logic:

  * a turn starts after `start_s` of speech; PLAYER_SPEECH_STARTED carries the onset time (the
    start of the first speech chunk), and is released when it is detected;
  * a turn ends after `end_s` of non-speech (the hangover: short gaps inside a sentence do not end
    it); PLAYER_SPEECH_ENDED carries the end of the last speech chunk;
  * a pause of `pause_s` inside a turn, after enough speech and not too soon after the previous
    one, is a backchannel opportunity (BACKCHANNEL, stamped at the pause): the NPC nods or raises
    its brows in the player's pauses, never mid-word;
  * a loud or high-pitched burst (short-term level / pitch well above the player's own running
    speech level / pitch, or very loud in absolute terms) is a PLAYER_REACTION ("loud",
    "high_pitch" or "loud+high_pitch").

Every event is queued with the time it becomes known (`emit_at`), so the model never shows an
event before its audio has arrived. The player's audio never moves the mouth.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from lpm_npc.audio import vad as _vad
from lpm_npc.audio.features import HOP, RATE, F, FeatureExtractor
from lpm_npc.types import EventType

log = logging.getLogger(__name__)

_HOP_S = HOP / RATE
_WARNED = False


@dataclass
class VadConfig:
    backend: str = "silero"          # "silero" (falls back to "energy" when unavailable) or "energy"
    threshold: float = 0.5           # Silero: speech probability to enter speech
    neg_threshold: float = 0.35      # Silero: probability to stay in speech (hysteresis)
    margin_db: float = 12.0          # energy VAD: above the noise floor
    min_level_db: float = -52.0      # energy VAD: never speech below this (dBFS)
    floor_rise_db_per_s: float = 1.5
    start_s: float = 0.06            # speech run to start a turn
    end_s: float = 0.6               # hangover: silence run that ends a turn
    pause_s: float = 0.2             # silence run that is a backchannel opportunity
    min_speech_for_backchannel_s: float = 1.0
    backchannel_gap_s: float = 2.2
    long_pause_s: float = 0.45       # a longer pause is an opportunity sooner after the previous one
    long_pause_min_speech_s: float = 0.6
    long_pause_gap_s: float = 1.2
    # reactions to loud / high-pitched speech
    edge_below_speech_db: float = 22.0  # boundary refinement: energy edge this far below the speech level
    reaction_window_s: float = 0.25  # short-term level / pitch window
    loud_db: float = 8.0             # short-term level above the running speech level (power mean)
    loud_abs_db: float = -9.0        # or above this (dBFS rms) whatever the running level
    high_pitch_ratio: float = 1.6    # short-term median pitch over the running speech pitch ...
    high_pitch_level_db: float = 3.0  # ... with the voice this much louder than usual (excited)
    very_high_pitch_ratio: float = 1.9  # or this high at any level (a squeal)
    reference_s: float = 1.0         # speech needed before relative reactions are judged
    reaction_gap_s: float = 2.0
    # thinking look between the player's turn and the NPC's answer
    thinking_min_turn_s: float = 0.4  # a shorter utterance ("hm") does not make the NPC think
    thinking_max_s: float = 3.0       # back to the designer's phase if the NPC does not answer


@dataclass
class ListenerEvent:
    emit_at: float      # when it is known (player clock)
    t_s: float          # when it happened (onset / end of speech; = emit_at for cues)
    type: EventType
    detail: str = ""
    data: object | None = None


class PlayerListener:
    """Streaming VAD over player audio; produces timed events for the model to emit at step()."""

    def __init__(self, cfg: VadConfig | None = None) -> None:
        self.cfg = cfg or VadConfig()
        self.extractor = FeatureExtractor()
        self._silero = None
        if self.cfg.backend == "silero":
            self._silero = _make_silero()
        self.backend = "silero" if self._silero is not None else "energy"
        self.floor_db = -60.0
        self.speaking = False
        self._clock_end: float | None = None   # player-clock time where fed audio ends
        self._ext_t0 = 0.0                      # player-clock time of the extractor's / VAD's first sample
        self._vad_chunks = 0
        self._in_speech = False                 # per-frame hysteresis state
        self._speech_run = 0.0
        self._silence_run = 0.0
        self._run_start = 0.0
        self._last_speech_end = 0.0
        self._turn_speech = 0.0
        self._speech_since_bc = 0.0
        self._last_bc = -1e9
        self._bc_armed = True
        self.pending: deque[ListenerEvent] = deque(maxlen=256)
        self.level_db = -100.0   # last hop level (for listening intensity)
        self.prob = 0.0          # last Silero probability
        # reactions: the player's running speech level and pitch, and a short window of hops
        self.ref_level_db: float | None = None
        self.ref_log_pitch: float | None = None
        self._ref_speech_s = 0.0
        self._ref_voiced_s = 0.0
        n = max(int(round(self.cfg.reaction_window_s / _HOP_S)), 1)
        self._win_power: deque[float] = deque(maxlen=n)
        self._win_pitch: deque[float] = deque(maxlen=n)
        self._last_reaction = -1e9
        self._levels: deque[tuple[float, float]] = deque(maxlen=128)  # (hop centre time, dBFS), ~1.3 s

    # ------------------------------------------------------------------ input
    def push(self, samples: np.ndarray, now_s: float) -> None:
        dur = samples.size / RATE
        if self._clock_end is None or self._clock_end < now_s - 0.05 or self._clock_end > now_s + 1.0:
            # first chunk, a gap in the mic stream, or a client running far ahead: restart at arrival
            self.extractor.reset()
            if self._silero is not None:
                self._silero.reset()
            self._vad_chunks = 0
            self._ext_t0 = now_s
            self._clock_end = now_s
        self._clock_end += dur
        k0 = self.extractor.rows_emitted
        feats = self.extractor.push(samples)
        for i, row in enumerate(feats):
            ta = self._ext_t0 + (k0 + i) * _HOP_S
            # the hop's 32 ms analysis window ends at ta + HOP: its centre is 16 ms earlier
            self._levels.append((ta + _HOP_S - 0.016, float(row[F["rms_db"]])))
            if self._silero is None:
                self._frame(ta, ta + _HOP_S, self._energy_speech(row))
            else:
                self._track_floor(float(row[F["rms_db"]]))
            self._react(row, ta + _HOP_S)
        if self._silero is not None:
            c = self.cfg
            for p in self._silero.push(samples):
                ta = self._ext_t0 + self._vad_chunks * _vad.CHUNK_S
                self._vad_chunks += 1
                self.prob = float(p)
                self._in_speech = p >= (c.neg_threshold if self._in_speech else c.threshold)
                self._frame(ta, ta + _vad.CHUNK_S, self._in_speech)

    def _energy_speech(self, row: np.ndarray) -> bool:
        c = self.cfg
        rise = c.floor_rise_db_per_s * _HOP_S
        level = float(row[F["rms_db"]])
        is_speech = level > max(self.floor_db + c.margin_db, c.min_level_db)
        if not is_speech:
            if level < self.floor_db:
                self.floor_db += 0.3 * (level - self.floor_db)
            else:
                self.floor_db += min(rise, level - self.floor_db)
            self.floor_db = max(self.floor_db, -90.0)
        else:
            self.floor_db += rise * 0.2
        return is_speech

    def _track_floor(self, level: float) -> None:
        """Noise floor under Silero: follows the level of non-speech audio (fast down, slower up)."""
        if self._in_speech:
            return
        a = 0.3 if level < self.floor_db else 0.05
        self.floor_db = max(self.floor_db + a * (level - self.floor_db), -90.0)

    def _edge_db(self) -> float:
        thr = self.floor_db + 10.0
        if self.ref_level_db is not None:
            thr = max(thr, self.ref_level_db - self.cfg.edge_below_speech_db)
        return max(thr, -70.0)

    def _refine_onset(self, ts: float) -> float:
        """Silero fires ~50 ms into a word: walk back over the energy to where the voice rose."""
        thr = self._edge_db()
        hops = [(tc, lv) for tc, lv in self._levels if ts - 0.2 <= tc <= ts + 0.032]
        if not hops or hops[-1][1] <= thr:
            return ts
        onset = hops[-1][0]
        for tc, lv in reversed(hops):
            if lv <= thr:
                break
            onset = tc
        return onset - 0.005

    def _refine_end(self, te: float) -> float:
        """Silero's probability trails ~100 ms after the voice stops: the last hop above the edge."""
        thr = self._edge_db()
        hops = [(tc, lv) for tc, lv in self._levels if te - 0.3 <= tc <= te]
        loud = [tc for tc, lv in hops if lv > thr]
        if not loud or loud[-1] >= te - 0.005:
            return te
        return loud[-1] + 0.005

    def _quiet_now(self, tb: float) -> bool:
        """The voice is really off (Silero trails the energy; never nod as the next word starts)."""
        if self._silero is None:
            return True
        thr = self._edge_db()
        recent = [lv for tc, lv in self._levels if tc >= tb - 0.06]
        return bool(recent) and max(recent) <= thr

    def _is_pause(self, tb: float) -> bool:
        """A backchannel opportunity: the voice has been off long enough (measured from where the
        energy fell, since Silero trails it by ~100 ms), after enough speech, not too soon again."""
        c = self.cfg
        end = self._last_speech_end
        if self._silero is not None:
            end = self._refine_end(end)
        pause = tb - end + 1e-6
        ok = ((pause >= c.pause_s and self._speech_since_bc >= c.min_speech_for_backchannel_s
               and tb - self._last_bc >= c.backchannel_gap_s)
              or (pause >= c.long_pause_s and self._speech_since_bc >= c.long_pause_min_speech_s
                  and tb - self._last_bc >= c.long_pause_gap_s))
        return ok and self._quiet_now(tb)

    # ------------------------------------------------------------------ turns
    def _frame(self, ta: float, tb: float, is_speech: bool) -> None:
        """One VAD frame [ta, tb] (32 ms Silero chunk or 10 ms energy hop) through the turn logic."""
        c = self.cfg
        d = tb - ta
        if is_speech:
            if self._speech_run == 0.0:
                self._run_start = ta
            self._speech_run += d
            self._silence_run = 0.0
            self._last_speech_end = tb
            if self.speaking:
                self._turn_speech += d
                self._speech_since_bc += d
                self._bc_armed = True
        else:
            self._silence_run += d
            self._speech_run = 0.0
        eps = 1e-6
        if not self.speaking:
            if self._speech_run >= c.start_s - eps:
                self.speaking = True
                self._turn_speech = self._speech_since_bc = self._speech_run
                self._bc_armed = True
                onset = self._refine_onset(self._run_start) if self._silero is not None else self._run_start
                self.pending.append(ListenerEvent(tb, onset, EventType.PLAYER_SPEECH_STARTED,
                                                  "", {"backend": self.backend}))
            return
        if self._silence_run >= c.end_s - eps:
            self.speaking = False
            end = self._refine_end(self._last_speech_end) if self._silero is not None else self._last_speech_end
            self.pending.append(ListenerEvent(tb, end, EventType.PLAYER_SPEECH_ENDED, "",
                                              {"turn_speech_s": round(self._turn_speech, 3),
                                               "backend": self.backend}))
        elif self._bc_armed and self._silence_run > 0.0 and self._is_pause(tb):
            self._last_bc = tb
            self._speech_since_bc = 0.0
            self._bc_armed = False
            self.pending.append(ListenerEvent(tb, tb, EventType.BACKCHANNEL, "pause"))

    # ------------------------------------------------------------------ reactions
    def _react(self, row: np.ndarray, t: float) -> None:
        c = self.cfg
        level = float(row[F["rms_db"]])
        self.level_db = level
        if not self.speaking:
            self._win_power.clear()
            self._win_pitch.clear()
            return
        self._win_power.append(10.0 ** (level / 10.0))
        pitch = float(row[F["pitch_hz"]])
        voiced = pitch > 0 and float(row[F["voicing"]]) > 0.6
        self._win_pitch.append(math.log(pitch) if voiced else float("nan"))
        short_db = 10.0 * math.log10(sum(self._win_power) / len(self._win_power) + 1e-12)
        pitches = [p for p in self._win_pitch if not math.isnan(p)]
        short_lp = _median(pitches) if len(pitches) >= 0.5 * self._win_pitch.maxlen else None
        # judge against the running references before this hop updates them
        reasons = []
        ratio = None if short_lp is None or self.ref_log_pitch is None else math.exp(short_lp - self.ref_log_pitch)
        if len(self._win_power) == self._win_power.maxlen:
            ref_ok = self.ref_level_db is not None and self._ref_speech_s >= c.reference_s
            above = short_db - self.ref_level_db if ref_ok else 0.0
            if short_db >= c.loud_abs_db or (ref_ok and above >= c.loud_db):
                reasons.append("loud")
            if ratio is not None and ref_ok and self._ref_voiced_s >= c.reference_s and (
                    (ratio >= c.high_pitch_ratio and above >= c.high_pitch_level_db)
                    or (ratio >= c.very_high_pitch_ratio and above >= -6.0)):
                reasons.append("high_pitch")
        if reasons and t - self._last_reaction >= c.reaction_gap_s:
            self._last_reaction = t
            data = {"level_db": round(short_db, 1),
                    "ref_level_db": None if self.ref_level_db is None else round(self.ref_level_db, 1),
                    "pitch_ratio": None if ratio is None else round(ratio, 2)}
            self.pending.append(ListenerEvent(t, t, EventType.PLAYER_REACTION, "+".join(reasons), data))
        # running references over speech hops (a burst moves them slowly): the level as a power
        # mean (dominated by the vowels, like the short-term window), the pitch in log Hz
        if level > -60.0 and (self.ref_level_db is None or level > self.ref_level_db - 20.0):
            if self.ref_level_db is None:
                self.ref_level_db = level
            a = _HOP_S / (0.5 if self._ref_speech_s < c.reference_s else 4.0)
            if level > self.ref_level_db + 6.0 and self._ref_speech_s >= c.reference_s:
                a *= 0.25
            ref_p = 10.0 ** (self.ref_level_db / 10.0)
            ref_p += a * (10.0 ** (level / 10.0) - ref_p)
            self.ref_level_db = 10.0 * math.log10(max(ref_p, 1e-12))
            self._ref_speech_s += _HOP_S
        if voiced:
            lp = math.log(pitch)
            if self.ref_log_pitch is None:
                self.ref_log_pitch = lp
            a = _HOP_S / (0.5 if self._ref_voiced_s < c.reference_s else 4.0)
            if lp > self.ref_log_pitch + math.log(1.25) and self._ref_voiced_s >= c.reference_s:
                a *= 0.25
            self.ref_log_pitch += a * (lp - self.ref_log_pitch)
            self._ref_voiced_s += _HOP_S

    # ------------------------------------------------------------------ output
    def tick(self, t: float) -> None:
        """End a turn whose audio simply stopped arriving (push-to-talk, muted mic)."""
        if self.speaking and self._clock_end is not None and t - self._clock_end >= self.cfg.end_s:
            self.speaking = False
            self._in_speech = False
            self._speech_run = self._silence_run = 0.0
            self.pending.append(ListenerEvent(self._clock_end + self.cfg.end_s, min(self._last_speech_end, self._clock_end),
                                              EventType.PLAYER_SPEECH_ENDED, "no audio",
                                              {"turn_speech_s": round(self._turn_speech, 3),
                                               "backend": self.backend}))

    def pop_until(self, t: float) -> list[ListenerEvent]:
        """Events known by time t, in order."""
        out = []
        while self.pending and self.pending[0].emit_at <= t:
            out.append(self.pending.popleft())
        return out

    def state(self) -> dict:
        return {"floor_db": float(self.floor_db), "ref_level_db": self.ref_level_db,
                "ref_log_pitch": self.ref_log_pitch, "ref_speech_s": float(self._ref_speech_s),
                "ref_voiced_s": float(self._ref_voiced_s)}

    def load(self, d: dict) -> None:
        self.floor_db = float(d.get("floor_db", self.floor_db))
        for key in ("ref_level_db", "ref_log_pitch"):
            v = d.get(key)
            setattr(self, key, None if v is None else float(v))
        self._ref_speech_s = float(d.get("ref_speech_s", 0.0))
        self._ref_voiced_s = float(d.get("ref_voiced_s", 0.0))


def _make_silero():
    """A SileroVad for one stream, or None (energy VAD) with a warning logged once per process."""
    global _WARNED
    try:
        return _vad.SileroVad()
    except _vad.VadUnavailableError as exc:
        reason = str(exc)
    if not _WARNED:
        _WARNED = True
        log.warning("Silero VAD unavailable (%s); the player channel uses the energy VAD", reason)
    return None


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
