"""A scripted conversation on one timeline: who speaks when, tags, interruptions.

Used by `lpm-npc demo` (through the real gRPC stream) and by tests and benchmarks. Every cue has a
time in seconds on the session clock (the NPC-audio clock: pts 0 = the first frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .audio.pcm import resample
from .audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, synthesize
from .types import AudioChannel, Emotion, Phase


@dataclass
class AudioCue:
    t: float
    channel: AudioChannel
    samples: np.ndarray  # float32 mono
    rate: int
    text: str = ""

    @property
    def end(self) -> float:
        return self.t + len(self.samples) / self.rate


@dataclass
class StateCue:
    t: float
    phase: Phase | None = None
    emotion: Emotion | None = None
    intensity: float = 1.0
    transition_ms: int = 400
    direction: str = ""  # free-text direction ("looks away, a bit nervous")


@dataclass
class InterruptCue:
    t: float


@dataclass
class Conversation:
    audio: list[AudioCue] = field(default_factory=list)
    states: list[StateCue] = field(default_factory=list)
    interrupts: list[InterruptCue] = field(default_factory=list)
    duration: float = 0.0

    def npc_audio_until(self, rate: int, cut_at: float | None = None) -> np.ndarray:
        """The NPC channel as one signal on the session clock (cut at the interrupt, if any)."""
        return self._mix(rate, [c for c in self.audio if c.channel is AudioChannel.NPC], cut_at)

    def mix(self, rate: int) -> np.ndarray:
        """Both voices as heard in the scene (NPC cut at interruptions): the demo's soundtrack."""
        cut = min((i.t for i in self.interrupts), default=None)
        npc = self.npc_audio_until(rate, cut)
        player = self._mix(rate, [c for c in self.audio if c.channel is AudioChannel.PLAYER], None)
        n = max(len(npc), len(player), int(self.duration * rate))
        out = np.zeros(n, np.float32)
        out[:len(npc)] += npc
        out[:len(player)] += 0.8 * player
        return np.clip(out, -1.0, 1.0)

    def _mix(self, rate: int, cues: list[AudioCue], cut_at: float | None) -> np.ndarray:
        n = int(self.duration * rate) + 1
        out = np.zeros(n, np.float32)
        for cue in cues:
            x = resample(cue.samples, cue.rate, rate) if cue.rate != rate else cue.samples
            start = int(round(cue.t * rate))
            end = min(n, start + len(x))
            if cut_at is not None and cue.t < cut_at:
                end = min(end, int(round(cut_at * rate)))
            elif cut_at is not None:
                continue
            if end > start:
                out[start:end] += x[: end - start]
        return out


def demo_conversation() -> Conversation:
    """Player speaks (NPC listens), NPC answers with an emotion change mid-line, player barges in."""
    conv = Conversation()

    def say(t: float, channel: AudioChannel, text: str, voice: str, rate_wpm: int = 165) -> AudioCue:
        clip = synthesize(text, voice=voice, rate_wpm=rate_wpm)
        cue = AudioCue(t, channel, clip.samples.astype(np.float32), clip.sample_rate, text)
        conv.audio.append(cue)
        return cue

    conv.states.append(StateCue(0.0, Phase.IDLE, Emotion.NEUTRAL))
    q = say(0.8, AudioChannel.PLAYER, "Hello there. Have you seen anything strange near the old mill?",
            DEFAULT_PLAYER_VOICE)
    conv.states.append(StateCue(0.8, Phase.LISTENING))
    conv.states.append(StateCue(q.end + 0.1, Phase.THINKING))
    a = say(q.end + 0.7, AudioChannel.NPC, "Oh, yes! I remember it well, it was a lovely evening.",
            DEFAULT_NPC_VOICE)
    conv.states.append(StateCue(a.t, Phase.SPEAKING, Emotion.HAPPY, 0.9, 300))
    b = say(a.end + 0.15, AudioChannel.NPC,
            "But then I saw lights moving by the water, and somebody was calling my name, "
            "over and over, from the dark.", DEFAULT_NPC_VOICE)
    conv.states.append(StateCue(b.t, None, Emotion.AFRAID, 1.0, 500))
    conv.states.append(StateCue(b.t + 1.2, direction="glances away nervously", transition_ms=300))
    cut = b.t + 0.55 * (b.end - b.t)
    conv.interrupts.append(InterruptCue(cut))
    p = say(cut, AudioChannel.PLAYER, "Wait, wait! Stop. Listen to me.", DEFAULT_PLAYER_VOICE, 175)
    conv.states.append(StateCue(cut, Phase.LISTENING, Emotion.SURPRISED, 0.6, 250))
    conv.states.append(StateCue(p.end + 0.3, Phase.IDLE, Emotion.NEUTRAL, 1.0, 800))
    conv.duration = p.end + 1.5
    return conv

