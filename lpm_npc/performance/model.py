"""The performance model: NPC audio, player audio and dialogue state in, one MotionFrame per frame out.

Causal and frame-level: `step(t)` uses NPC audio up to `t + lookahead_s` and everything else up to
`t`. Layers, summed per frame:

  emotion (eased transition) + phase pose (followed) + idle life (blinks, breathing, micro head,
  saccades) + speech mouth (lipsync from the NPC timeline) + prosody / backchannel gestures.

All state is bounded: target rows behind the playhead are trimmed, gestures expire, the player
channel keeps only a VAD state.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from lpm_npc.audio.features import RATE
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.emotion import (
    EMOTION_TARGETS, GAZE, PHASE_POSES, Transition, emotion_vector,
)
from lpm_npc.performance.idle import IdleConfig, IdleMotion
from lpm_npc.performance.lipsync import LipSyncConfig, MouthShape, mouth_at
from lpm_npc.performance.listening import PlayerListener, VadConfig
from lpm_npc.performance.motion import CHANNEL_INDEX as C, MotionFrame, NUM_CHANNELS, clip_motion
from lpm_npc.performance.timeline import NpcTimeline
from lpm_npc.types import Emotion, EventType, Phase

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class PerformanceConfig:
    """Tunable behaviour of one NPC's performance (all times in seconds)."""

    lookahead_s: float = 0.08              # NPC audio used ahead of the frame time
    lipsync: str = "learned"               # "learned" (ONNX network; falls back to "signal" if missing) or "signal"
    blink_rate_per_min: float = 16.0
    head_motion_deg: float = 1.4           # idle micro-motion amplitude (yaw spread lands in the 1-6 deg human range)
    speaking_head_scale: float = 1.8       # head motion multiplier while speaking
    jaw_gain: float = 0.7
    anticipation_s: float = 0.03           # mouth leads the sound
    coarticulation_s: float = 0.02         # Gaussian blur of mouth targets
    npc_speech_hangover_s: float = 0.2     # NPC still "speaking" this long after its audio ends
    player_turn_hold_s: float = 0.8        # keep listening this long after the player stops
    phase_smoothing_s: float = 0.25        # time constant of phase pose changes
    nod_deg: float = 2.5                   # prosodic nod size while speaking
    backchannel_nod_deg: float = 3.5
    interrupt_fade_s: float = 0.05         # mouth closes over this long after interrupt()
    vad: VadConfig = field(default_factory=VadConfig)


@dataclass
class NpcPlacement:
    """Where an NPC chunk landed on the NPC timeline; late_s > 0 when it was shifted to now."""

    start_s: float
    end_s: float
    late_s: float


@dataclass
class PerformanceEvent:
    type: EventType
    t_s: float
    detail: str = ""
    data: object | None = None  # typed payload where the event has one (DIRECTION_APPLIED: DirectionResult)


@dataclass
class _Gesture:
    """A short gesture (nod or brow raise) with a smooth bump profile."""

    t0: float
    duration: float
    channel: int
    amplitude: float

    def value(self, t: float) -> float:
        u = (t - self.t0) / self.duration
        if u <= 0.0 or u >= 1.0:
            return 0.0
        if self.channel == C["head_pitch"]:   # nod: down, then a small rebound up
            return self.amplitude * (math.sin(math.pi * u) ** 2 - 0.25 * math.sin(2 * math.pi * u) * u)
        return self.amplitude * math.sin(math.pi * u) ** 2


class PerformanceModel:
    """One NPC's performance; not thread-safe (one session drives it)."""

    def __init__(self, config: PerformanceConfig | None = None, seed: int = 0):
        self.cfg = config or PerformanceConfig()
        self.seed = int(seed)
        self._lip = LipSyncConfig(jaw_gain=self.cfg.jaw_gain, anticipation_s=self.cfg.anticipation_s,
                                  blur_s=self.cfg.coarticulation_s)
        self._idle = IdleMotion(IdleConfig(blink_rate_per_min=self.cfg.blink_rate_per_min,
                                           head_micro_deg=self.cfg.head_motion_deg), self.seed)
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x6E57]))
        self._npc = NpcTimeline(lipsync=self.cfg.lipsync)
        self._last_late_event_s = -1e9
        self._player = PlayerListener(self.cfg.vad)
        self._designer_phase = Phase.IDLE
        self._emotion = Emotion.NEUTRAL
        self._intensity = 1.0
        self._direction = ""
        self._emo = Transition()
        self._pose = np.zeros(NUM_CHANNELS, np.float32)
        self._gaze = np.zeros(2, np.float32)
        self._head_scale = 1.0
        self._gestures: list[_Gesture] = []
        self._events: list[PerformanceEvent] = []
        self._t_last: float | None = None
        self._npc_speaking = False
        self._player_speaking = False
        self._player_end_t = -1e9
        self._thinking_t0: float | None = None   # thinking look after the player's turn, until the NPC answers
        self._cut_t: float | None = None
        self._last_nod = -1e9
        self._last_brow = -1e9
        self._pending_resume = False
        self._phase = Phase.IDLE

    # ------------------------------------------------------------------ inputs
    def push_npc_audio(self, samples_16k: np.ndarray, now_s: float, start_s: float | None = None,
                       text: str = "") -> NpcPlacement:
        """Place NPC speech (16 kHz mono float32) on the NPC timeline; see NpcPlacement."""
        x = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
        start, skip, late = self._npc.place(x.size, now_s, start_s)
        x = x[skip:]
        if x.size:
            self._npc.push(x, start, text=text)
        if late > 0 and now_s - self._last_late_event_s >= 1.0:  # at most one event a second
            self._last_late_event_s = now_s
            self._events.append(PerformanceEvent(
                EventType.AUDIO_LATE, now_s,
                f"NPC audio arrived {late * 1000:.0f} ms after its time; its past part was skipped. "
                "Send NPC audio ahead of playback (at least the lookahead)."))
        return NpcPlacement(start / RATE, (start + x.size) / RATE, late)

    def push_player_audio(self, samples_16k: np.ndarray, now_s: float) -> None:
        """Live microphone audio (16 kHz mono float32), placed at its arrival time."""
        x = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
        if x.size:
            self._player.push(x, now_s)

    def set_dialogue_state(self, now_s: float, phase: Phase | None = None, emotion: Emotion | None = None,
                           intensity: float = 1.0, transition_s: float = 0.3, direction: str = "",
                           direction_result=None) -> None:
        """Designer tags: phase, emotion (scaled by intensity) reached over transition_s (eased).

        `direction_result` is `direction` already interpreted (PerformSession does that outside its
        lock, since the sentence model takes tens of milliseconds)."""
        if transition_s < 0 or not math.isfinite(transition_s):
            raise InvalidInputError(f"transition_s must be >= 0, got {transition_s}")
        if not 0.0 <= intensity <= 1.5:
            raise InvalidInputError(f"intensity must be in 0..1.5, got {intensity}")
        if phase is not None:
            self._designer_phase = Phase(phase)
        if emotion is not None:
            self._emotion, self._intensity = Emotion(emotion), float(intensity)
            self._emo.retarget(now_s, emotion_vector(self._emotion, self._intensity), transition_s)
        if direction:
            self._direction = direction.strip()
            self._apply_direction(now_s, self._direction, transition_s, emotion is not None, direction_result)

    def interrupt(self, now_s: float) -> None:
        """Barge-in: drop NPC audio after now_s; the mouth closes and the NPC goes back to listening."""
        self._npc.truncate(now_s)
        self._cut_t = now_s
        self._designer_phase = Phase.LISTENING
        self._events.append(PerformanceEvent(EventType.INTERRUPTED, now_s))

    # ------------------------------------------------------------------ output
    @property
    def npc_speaking(self) -> bool:
        return self._npc_speaking

    @property
    def player_speaking(self) -> bool:
        return self._player_speaking

    @property
    def phase(self) -> Phase:
        """The phase in effect at the last step (speaking / listening follow the audio)."""
        return self._phase

    def step(self, t_s: float) -> tuple[MotionFrame, list[PerformanceEvent]]:
        """Motion of the frame shown at t_s (increasing; gaps allowed) and the events up to t_s."""
        t = float(t_s)
        dt = 0.0 if self._t_last is None else max(t - self._t_last, 0.0)
        if self._t_last is not None and t < self._t_last:
            log.debug("step time went back %.3f -> %.3f", self._t_last, t)
        self._t_last = t if self._t_last is None else max(t, self._t_last)
        if self._pending_resume:
            self._emo.t0 = t
            self._pending_resume = False
        events = self._update_turns(t)

        mouth = self._mouth(t)
        phase = self._phase
        # phase pose, followed with a time constant (frame-rate independent)
        target_pose = PHASE_POSES[phase]
        a = 1.0 - math.exp(-dt / max(self.cfg.phase_smoothing_s, 1e-3)) if dt > 0 else 0.0
        self._pose += (target_pose - self._pose) * a

        v = np.array(self._emo.value(t), dtype=np.float32)
        v += self._pose
        # head: idle micro motion (bigger while speaking) + gestures
        scale = self.cfg.speaking_head_scale if phase == Phase.SPEAKING else 1.0
        self._head_scale += (scale - self._head_scale) * (1.0 - math.exp(-dt / 0.6) if dt > 0 else 0.0)
        v[[C["head_yaw"], C["head_pitch"], C["head_roll"]]] += self._idle.head(t, self._head_scale)
        # gaze: saccades around the pose's gaze, followed quickly
        wander = {Phase.IDLE: 1.3, Phase.LISTENING: 0.5, Phase.THINKING: 0.8, Phase.SPEAKING: 0.8}[phase]
        if phase == Phase.LISTENING and self._player_speaking:
            wander = 0.3   # attention: eyes stay on the player while they talk
        gaze_target = self._idle.gaze(t, wander)
        g = 1.0 - math.exp(-dt / 0.03) if dt > 0 else 1.0
        self._gaze += (gaze_target - self._gaze) * g
        v[GAZE] += self._gaze
        # prosody and backchannel gestures
        self._prosody(t, mouth)
        self._gestures = [x for x in self._gestures if x.t0 + x.duration > t]
        for gst in self._gestures:
            v[gst.channel] += gst.value(t)
        # >>> direction primitives (lpm_npc.performance.direction.DirectionLayer), set by _apply_direction
        if self.__dict__.get("_dir_layer") is not None and (dv := self._dir_layer.value(t)) is not None:
            v += dv
        # <<< direction primitives
        # blinks close the lids on top of whatever the emotion does
        b = self._idle.blink(t)
        for ch in ("blink_l", "blink_r"):
            v[C[ch]] += (1.0 - v[C[ch]]) * b
        v[C["eye_wide"]] *= 1.0 - b
        # speech mouth on top of the emotion
        act = min(mouth.active * 1.5, 1.0)
        v[C["jaw_open"]] = v[C["jaw_open"]] * (1.0 - 0.6 * act) + mouth.jaw
        v[C["mouth_round"]] = v[C["mouth_round"]] * (1.0 - act) + mouth.round
        v[C["mouth_spread"]] = v[C["mouth_spread"]] * (1.0 - act) + mouth.spread * (1.0 - mouth.round)
        v[C["lips_press"]] = max(v[C["lips_press"]] * (1.0 - act), mouth.press)
        v[C["jaw_open"]] *= 1.0 - mouth.press
        self._npc.trim(t)
        return MotionFrame(t, clip_motion(v)), events

    # ------------------------------------------------------------------ internals
    def _mouth(self, t: float) -> MouthShape:
        lip = self._lip
        lo = t + lip.anticipation_s - 3 * lip.blur_s
        hi = min(t + lip.anticipation_s + 3 * lip.blur_s, t + self.cfg.lookahead_s)
        fade = 1.0
        if self._cut_t is not None and t >= self._cut_t:
            since = t - self._cut_t
            if since < self.cfg.interrupt_fade_s:
                fade = 1.0 - since / self.cfg.interrupt_fade_s
            else:
                lo = max(lo, self._cut_t)
                if since > 1.0:
                    self._cut_t = None
        rows, times = self._npc.window(lo, hi)
        m = mouth_at(rows, times, t, lip)
        if fade < 1.0:
            m.jaw *= fade
            m.round *= fade
            m.spread *= fade
            m.press *= fade
        return m

    def _update_turns(self, t: float) -> list[PerformanceEvent]:
        events, self._events = self._events, []
        npc = self._npc.speaking_at(t, self.cfg.npc_speech_hangover_s)
        if npc != self._npc_speaking:
            self._npc_speaking = npc
            events.append(PerformanceEvent(EventType.NPC_SPEECH_STARTED if npc else EventType.NPC_SPEECH_ENDED, t))
            self._idle.blink_now(t)
        self._player.tick(t)
        for ev in self._player.pop_until(t):
            if ev.type == EventType.BACKCHANNEL and self._npc_speaking:
                continue                            # the NPC is talking over the player: no nod
            events.append(PerformanceEvent(ev.type, ev.t_s, ev.detail, ev.data))
            if ev.type == EventType.PLAYER_SPEECH_STARTED:
                self._player_speaking = True
                self._thinking_t0 = None            # the player goes on: listen again
            elif ev.type == EventType.PLAYER_SPEECH_ENDED:
                self._player_speaking = False
                self._player_end_t = ev.t_s
                turn = (ev.data or {}).get("turn_speech_s", 0.0) if isinstance(ev.data, dict) else 0.0
                if not self._npc_speaking and turn >= self.cfg.vad.thinking_min_turn_s:
                    self._thinking_t0 = t
                    events.append(PerformanceEvent(EventType.THINKING_STARTED, t, "player finished"))
            elif ev.type == EventType.BACKCHANNEL:
                self._backchannel(ev.emit_at)
            elif ev.type == EventType.PLAYER_REACTION:
                self._react(ev.emit_at, ev.detail)
        if self._npc_speaking:
            self._thinking_t0 = None                # thinking ends when the NPC answers
        elif self._thinking_t0 is not None and t - self._thinking_t0 >= self.cfg.vad.thinking_max_s:
            self._thinking_t0 = None                # no answer came: back to the designer's phase
        if self._npc_speaking:
            self._phase = Phase.SPEAKING
        elif self._player_speaking:
            self._phase = Phase.LISTENING
        elif self._thinking_t0 is not None:
            self._phase = Phase.THINKING
        elif t - self._player_end_t < self.cfg.player_turn_hold_s:
            self._phase = Phase.LISTENING
        else:
            self._phase = self._designer_phase
        events.sort(key=lambda e: e.t_s)
        return events

    def _backchannel(self, t: float) -> None:
        """A nod (and often a brow raise) in the player's pause."""
        amp = self.cfg.backchannel_nod_deg * float(self._rng.uniform(0.7, 1.2))
        self._gestures.append(_Gesture(t, float(self._rng.uniform(0.5, 0.75)), C["head_pitch"], amp))
        if self._rng.random() < 0.6:
            self._gestures.append(_Gesture(t, 0.6, C["brow_up"], float(self._rng.uniform(0.12, 0.25))))

    def _react(self, t: float, detail: str) -> None:
        """Loud / high-pitched player speech: eyes widen and brows go up briefly, the head draws back."""
        k = 1.0 if "loud" in detail else 0.75
        k *= 1.15 if "+" in detail else 1.0
        self._gestures.append(_Gesture(t, 0.9, C["eye_wide"], 0.45 * k))
        self._gestures.append(_Gesture(t, 0.9, C["brow_up"], 0.4 * k))
        self._gestures.append(_Gesture(t, 0.8, C["head_pitch"], -2.0 * k))

    def _prosody(self, t: float, m: MouthShape) -> None:
        if not self._npc_speaking:
            return
        if m.accent > 0.4 and t - self._last_brow > 0.9:
            self._last_brow = t
            self._gestures.append(_Gesture(t, 0.45, C["brow_up"], 0.12 + 0.18 * m.accent))
        if m.onset > 0.4 and m.active > 0.5 and t - self._last_nod > 0.7 and (m.accent > 0.1 or self._rng.random() < 0.15):
            self._last_nod = t
            amp = self.cfg.nod_deg * (0.5 + 0.5 * max(m.accent, m.onset))
            self._gestures.append(_Gesture(t, 0.4, C["head_pitch"], amp))

    def _apply_direction(self, t: float, text: str, transition_s: float = 0.3,
                         explicit_emotion: bool = False, result=None) -> None:
        """Free-text direction ("nods slowly, a bit nervous") -> motion primitives and/or an emotion.

        Matched with sentence embeddings (lpm_npc.performance.direction). Primitives go to a layer that
        step() adds on top (held ones ramp in over transition_s); a matched emotion retargets over
        transition_s unless this same call set an explicit emotion; moods ("nervous", "calm") change the
        idle blink rate and gaze wander. Appends a DIRECTION_APPLIED event with the DirectionResult.
        """
        import dataclasses

        from lpm_npc.performance.direction import DirectionLayer, DirectionResult, interpret

        try:
            if result is None:
                result = interpret(text, t)
        except InvalidInputError:
            raise
        except Exception as exc:  # model missing or broken: keep the session running without direction
            log.exception("direction %r could not be interpreted", text)
            result = DirectionResult(text.strip(), [], t)
            self._events.append(PerformanceEvent(EventType.DIRECTION_APPLIED, t,
                                                 f"direction {text!r}: not applied ({exc})", result))
            return
        layer = self.__dict__.get("_dir_layer")
        if layer is None:
            layer = self._dir_layer = DirectionLayer()
        layer.apply(result, t, transition_s)
        mods = layer.idle_modifiers()
        if mods is not None:
            self._idle.rate_scale, self._idle.cfg.saccade_interval_s = mods
        emo = next((m for m in result.matches if m.is_emotion), None)
        detail = result.summary()
        if emo is not None:
            if explicit_emotion:
                detail += f"; explicit emotion {self._emotion.value} kept"
            else:
                self._emotion = emo.emotion
                self._intensity = emo.intensity
                self._emo.retarget(t + emo.delay_s, emotion_vector(self._emotion, self._intensity), transition_s)
        if transition_s > result.duration_s and any(m.is_emotion or m.primitive.held for m in result.matches):
            result = dataclasses.replace(result, duration_s=float(transition_s))  # held items: until fully in
        log.info("%s (%.1f ms)", detail, result.elapsed_ms)
        self._events.append(PerformanceEvent(EventType.DIRECTION_APPLIED, t, detail, result))

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """JSON-serialisable state to resume this NPC's face (emotion, phase, head) elsewhere."""
        t = self._t_last if self._t_last is not None else 0.0
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "designer_phase": self._designer_phase.value,
            "emotion": self._emotion.value,
            "intensity": self._intensity,
            "direction": self._direction,
            "emotion_now": [float(x) for x in self._emo.value(t)],
            "emotion_target": [float(x) for x in self._emo.target],
            "pose": [float(x) for x in self._pose],
            "gaze": [float(x) for x in self._gaze],
            "idle": self._idle.state(),
            "tracker": self._npc.tracker.state(),
            "player_floor_db": float(self._player.floor_db),
            "player": self._player.state(),
            "rng": self._rng.bit_generator.state,
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "vad"},
        }

    def load_state_dict(self, d: dict) -> None:
        """Resume from `state_dict()`; clocks restart (the next step() continues any transition)."""
        if int(d.get("version", -1)) != STATE_VERSION:
            raise InvalidInputError(f"unsupported performance state version {d.get('version')!r}")
        try:
            self._designer_phase = Phase(d["designer_phase"])
            self._emotion = Emotion(d["emotion"])
            self._intensity = float(d["intensity"])
            self._direction = str(d.get("direction", ""))
            now = np.asarray(d["emotion_now"], np.float32).reshape(NUM_CHANNELS)
            target = np.asarray(d["emotion_target"], np.float32).reshape(NUM_CHANNELS)
            self._pose = np.asarray(d["pose"], np.float32).reshape(NUM_CHANNELS).copy()
            self._gaze = np.asarray(d["gaze"], np.float32).reshape(2).copy()
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInputError(f"invalid performance state: {exc}") from exc
        self._emo = Transition(now, target, 0.0, 0.3 if not np.allclose(now, target) else 0.0)
        self._pending_resume = True
        self._idle.load(d.get("idle", {}))
        self._npc.tracker.load(d.get("tracker", {}))
        self._player.floor_db = float(d.get("player_floor_db", self._player.floor_db))
        if isinstance(d.get("player"), dict):
            self._player.load(d["player"])
        if "rng" in d:
            self._rng.bit_generator.state = d["rng"]
        self._phase = self._designer_phase


__all__ = ["PerformanceConfig", "NpcPlacement", "PerformanceEvent", "PerformanceModel", "EMOTION_TARGETS"]
