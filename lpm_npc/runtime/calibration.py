"""What a frame costs on this machine, measured the way the server makes frames: talking NPCs.

Admission control (capacity.py) needs the cost of one frame to one frame maker (a render thread of
this process, or a worker process) while all the makers work at once. The frames measured here are
those of live sessions speaking: NPC speech is pushed before each frame, so the audio front end,
the lip-sync network and the mouth layers are in the cost (silent sessions cost about a third less
and would over-promise).
"""

from __future__ import annotations

import logging

import numpy as np

from ..audio.pcm import INTERNAL_RATE, encode_pcm16
from ..config import OutputOptions, SessionOptions
from ..types import AudioChannel
from .capacity import FrameCost, measure_concurrent_frame_cost
from .scheduler import FrameScheduler
from .session import PerformSession

log = logging.getLogger(__name__)

CALIBRATION_LINE = "Keep your lantern lit and your door barred tonight, traveller, the wolves are near."
FPS = 30


def calibration_speech() -> np.ndarray:
    """A few seconds of 16 kHz speech (espeak-ng); a voiced buzz with syllable-rate loudness if the
    voice cannot be made (it costs the pipeline the same)."""
    try:
        from ..audio.tts import synthesize_16k

        speech = synthesize_16k(CALIBRATION_LINE)
        if speech.size >= INTERNAL_RATE:
            return speech
    except Exception as exc:  # noqa: BLE001 - any failure: the synthetic line below
        log.info("calibration speech from espeak-ng unavailable (%s); using a synthetic voiced signal", exc)
    t = np.arange(3 * INTERNAL_RATE) / INTERNAL_RATE
    f0 = 120.0 + 15.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / INTERNAL_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None)
    return (0.2 * voice * syllables).astype(np.float32)


class TalkingFrameMaker:
    """`make(size, batch)`: one frame for each of `batch` talking sessions of the rig at size x size,
    on a scheduler of its own (one frame-making thread, as a worker process or render thread has)."""

    def __init__(self, rig, prepared, renderer, speech: np.ndarray | None = None):
        self.rig, self.prepared, self.renderer = rig, prepared, renderer
        self.speech = calibration_speech() if speech is None else speech
        self.scheduler = FrameScheduler(renderer, workers=1, coalesce_s=0.0)
        self._sessions: dict[tuple[int, int], list[PerformSession]] = {}
        self._pos = 0

    def __call__(self, size: int, batch: int) -> list:
        sessions = self._sessions.get((size, batch))
        if sessions is None:
            opts = SessionOptions(output=OutputOptions(width=size, height=size, fps=FPS))
            sessions = self._sessions[(size, batch)] = [
                PerformSession(opts, self.rig, self.prepared, self.renderer, seed=i) for i in range(batch)]
        n = INTERNAL_RATE // FPS
        for k, session in enumerate(sessions):  # one frame's worth of speech each, at different places
            q = (self._pos + k * 4409) % max(1, self.speech.size - n)
            session.push_audio(AudioChannel.NPC, encode_pcm16(self.speech[q:q + n]), INTERNAL_RATE)
        self._pos += n
        return self.scheduler.render_now(sessions)

    def close(self) -> None:
        self.scheduler.close()
        self._sessions.clear()


def measure_talking_frame_cost(rig, prepared, renderer, makers: int = 1) -> FrameCost:
    """The cost of a talking NPC's frame to one of `makers` frame-making threads working at once."""
    speech = calibration_speech()
    made = [TalkingFrameMaker(rig, prepared, renderer, speech) for _ in range(max(1, makers))]
    try:
        return measure_concurrent_frame_cost(made)
    finally:
        for m in made:
            m.close()

