"""One NPC session, independent of gRPC: audio/tags in, encoded frames out.

Data flows one way: audio + dialogue state -> PerformanceModel -> MotionFrame -> Renderer ->
FrameEncoder. The gRPC server, the offline `render` command, the tests and the benchmarks all
drive this same class; only the server adds wall-clock pacing (see `pump.py`).

Thread model: `push_*`, `set_dialogue_state` and `control` may be called from one thread while
`render_next` runs on another; a lock guards the model, and rendering happens outside it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..audio.pcm import INTERNAL_RATE, StreamingResampler, decode_pcm16
from ..config import OutputOptions, SessionOptions
from ..encode import EncodedFrame, FrameEncoder
from ..errors import AudioFormatError, InvalidInputError
from ..performance.model import PerformanceConfig, PerformanceEvent, PerformanceModel
from ..performance.motion import MOTION_CHANNELS, MotionFrame
from ..render.renderer import Renderer, RenderRequest, renderer_encodes_jpeg
from ..types import AudioChannel, Emotion, Phase, PixelFormat
from .clock import FrameClock

log = logging.getLogger(__name__)

# Rig output: the expression channels as weights; head and gaze travel as their own fields.
RIG_CHANNEL_NAMES: tuple[str, ...] = MOTION_CHANNELS[:15]
MAX_TEXT_CHARS = 4000


@dataclass
class StageTimes:
    """Seconds spent per pipeline stage for one frame."""

    audio: float = 0.0
    motion: float = 0.0
    render: float = 0.0
    encode: float = 0.0


@dataclass
class RenderedFrame:
    index: int
    pts_us: int
    pts_samples: int
    encoded: EncodedFrame
    motion: MotionFrame
    events: list[PerformanceEvent]
    times: StageTimes
    # NPC chunks whose first sample this frame is the first to show: (arrival monotonic time,
    # start on the session clock in seconds). Used for the audio-in -> frame-out latency.
    shows_chunks: list[tuple[float, float]] = field(default_factory=list)
    batch_size: int = 1  # frames rendered in the same renderer call (across sessions)


@dataclass
class FrameWork:
    """A frame between begin_frame() and finish_frame(): its time, motion and events."""

    index: int
    pts: float
    output: OutputOptions
    motion: MotionFrame
    events: list[PerformanceEvent]
    shown: list[tuple[float, float]]
    times: StageTimes


@dataclass
class _PendingChunk:
    start_s: float
    arrived_at: float


class PerformSession:
    """A live NPC: push audio and tags, pull frames with `render_next()`."""

    def __init__(self, options: SessionOptions, rig, prepared, renderer: Renderer,
                 session_id: str | None = None, resume_state: dict | None = None,
                 seed: int | None = None):
        self.options = options.validated()
        self.session_id = session_id or uuid.uuid4().hex[:16]
        self.rig = rig
        self.prepared = prepared
        self.renderer = renderer
        self.lookahead_s = options.lookahead_ms / 1000.0
        self.model = PerformanceModel(
            PerformanceConfig(lookahead_s=self.lookahead_s),
            seed=seed if seed is not None else zlib.crc32(self.session_id.encode()),
        )
        if resume_state:
            self.model.load_state_dict(resume_state)
        self._output = options.output
        self._encoder = self._make_encoder(options.output)
        self.clock = FrameClock(options.output.fps)
        self.next_index = 0
        self.paused = False
        self.frames_rendered = 0
        self.frames_skipped = 0
        self._lock = threading.Lock()
        self._resamplers: dict[tuple[AudioChannel, int, int], StreamingResampler] = {}
        self._pending_npc: deque[_PendingChunk] = deque(maxlen=4096)
        self._audio_seconds = 0.0  # audio decode/resample time since the last frame

    # -- inputs ---------------------------------------------------------------------------------
    @property
    def output(self) -> OutputOptions:
        return self._output

    def next_pts(self) -> float:
        return self.clock.pts(self.next_index)

    def push_audio(self, channel: AudioChannel, pcm: bytes, sample_rate: int, num_channels: int = 1,
                   sample_index: int | None = None, text: str = "",
                   arrived_at: float | None = None) -> list[PerformanceEvent]:
        """Decode one PCM16 chunk and hand it to the performance model.

        Raises AudioFormatError / InvalidInputError for a bad chunk; the session is unaffected.
        """
        t0 = time.perf_counter()
        if not isinstance(channel, AudioChannel):
            raise InvalidInputError("audio channel must be PLAYER or NPC.")
        num_channels = num_channels or 1
        samples = decode_pcm16(pcm, sample_rate, num_channels)
        if sample_index is not None and sample_index < 0:
            raise AudioFormatError(f"sample_index={sample_index} is negative; omit it to append.")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}.")
        key = (channel, sample_rate, num_channels)
        resampler = self._resamplers.get(key)
        if resampler is None:
            # A new rate on a channel replaces the old resampler (keeps memory bounded).
            for old in [k for k in self._resamplers if k[0] is channel]:
                del self._resamplers[old]
            resampler = self._resamplers[key] = StreamingResampler(sample_rate, INTERNAL_RATE)
        samples16 = resampler.process(samples)
        events: list[PerformanceEvent] = []
        with self._lock:
            now_s = self.next_pts()
            if channel is AudioChannel.NPC:
                start_s = None if sample_index is None else sample_index / float(sample_rate)
                placement = self.model.push_npc_audio(samples16, now_s=now_s, start_s=start_s, text=text)
                self._pending_npc.append(_PendingChunk(placement.start_s,
                                                       arrived_at if arrived_at is not None else time.monotonic()))
            else:
                self.model.push_player_audio(samples16, now_s=now_s)
        self._audio_seconds += time.perf_counter() - t0
        return events

    def set_dialogue_state(self, phase: Phase | None = None, emotion: Emotion | None = None,
                           intensity: float = 1.0, transition_ms: int = 300, direction: str = "",
                           direction_result=...) -> None:
        """`direction_result`: the direction already interpreted elsewhere (a worker process gets it
        from the server process, which holds the sentence model); None = it could not be."""
        if not 0.0 <= intensity <= 1.0 or intensity != intensity:
            raise InvalidInputError(f"intensity={intensity} must be within 0..1.")
        if transition_ms > 60000:
            raise InvalidInputError(f"transition_ms={transition_ms} must be at most 60000.")
        result = None if direction_result is ... else direction_result
        if direction and direction_result is ...:
            # Interpret outside the lock: the sentence model takes tens of ms (and loads on first use
            # unless the server warmed it up); frames keep coming meanwhile.
            from ..performance.direction import interpret_or_none

            result = interpret_or_none(direction, self.next_pts())
        with self._lock:
            if result is not None:
                result = dataclasses.replace(result, start_s=self.next_pts())
            self.model.set_dialogue_state(self.next_pts(), phase=phase, emotion=emotion,
                                          intensity=intensity, transition_s=transition_ms / 1000.0,
                                          direction=direction, direction_result=result)

    def interrupt(self) -> None:
        with self._lock:
            now = self.next_pts()
            self.model.interrupt(now)
            self._pending_npc = deque((c for c in self._pending_npc if c.start_s < now), maxlen=4096)

    def set_output(self, width: int = 0, height: int = 0, fps: int = 0) -> OutputOptions:
        """Level of detail: new size and/or fps without reconnecting (0 = unchanged)."""
        new = self._output.with_changes(
            width=width or self._output.width,
            height=height or self._output.height,
            fps=fps or self._output.fps,
        )
        with self._lock:
            if new.fps != self._output.fps:
                self.clock.set_fps(new.fps, self.next_index)
            self._output = new
        return new

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def skip_to(self, index: int, count_as_dropped: bool = True) -> int:
        """Advance the clock without rendering. Returns the number of frames passed over.

        A late renderer's frames count as dropped; a paused NPC's frames (count_as_dropped=False)
        were never wanted and do not."""
        skipped = max(0, index - self.next_index)
        self.next_index += skipped
        if count_as_dropped:
            self.frames_skipped += skipped
        return skipped

    def npc_audio_pending(self) -> bool:
        """True while queued NPC speech has not yet been shown."""
        with self._lock:
            return self.model.npc_speaking or bool(self._pending_npc)

    def state_dict(self) -> dict:
        with self._lock:
            return self.model.state_dict()

    # -- output ---------------------------------------------------------------------------------
    # A frame is made in three steps so that a scheduler can render many sessions' frames in one
    # batched renderer call: begin_frame (motion, under the lock) -> renderer -> finish_frame
    # (encode). render_next() runs the three in a row for one session.
    def begin_frame(self) -> "FrameWork":
        """Step the performance model to the next frame; advances the clock by one frame."""
        t_start = time.perf_counter()
        index = self.next_index
        output = self._output
        with self._lock:
            pts = self.clock.pts(index)
            motion, events = self.model.step(pts)
            shown: list[tuple[float, float]] = []
            while self._pending_npc and self._pending_npc[0].start_s <= pts + self.lookahead_s:
                chunk = self._pending_npc.popleft()
                shown.append((chunk.arrived_at, chunk.start_s))
            self.next_index = index + 1
        times = StageTimes(audio=self._audio_seconds, motion=time.perf_counter() - t_start)
        self._audio_seconds = 0.0
        return FrameWork(index=index, pts=pts, output=output, motion=motion, events=events,
                         shown=shown, times=times)

    def render_request(self, work: "FrameWork") -> RenderRequest:
        o = work.output
        if o.pixel_format is PixelFormat.JPEG and renderer_encodes_jpeg(self.renderer):  # on the GPU
            return RenderRequest(self.prepared, work.motion.values, o.width, o.height, o.alpha_matte,
                                 flip_y=o.flip_y, jpeg_quality=o.jpeg_quality)
        return RenderRequest(self.prepared, work.motion.values, o.width, o.height, o.alpha_matte)

    def finish_frame(self, work: "FrameWork", rgba: np.ndarray, render_s: float = 0.0,
                     batch_size: int = 1) -> RenderedFrame:
        """Encode a rendered (H, W, 4) RGBA frame of `work` (or wrap the JPEG file a renderer that
        encodes JPEG made of it: a 1-D uint8 array, see `render_request`)."""
        t0 = time.perf_counter()
        output = work.output
        if rgba.ndim == 1:
            if output.pixel_format is not PixelFormat.JPEG:
                raise RuntimeError(f"the renderer returned a JPEG file for a {output.pixel_format.value} frame")
            encoded = EncodedFrame(rgba.tobytes(), output.width, output.height, 0, PixelFormat.JPEG, output.flip_y)
        else:
            if (self._encoder.pixel_format, self._encoder.flip_y) != (output.pixel_format, output.flip_y):
                self._encoder = self._make_encoder(output)
            encoded = self._encoder.encode(rgba)
        self.frames_rendered += 1
        work.times.render = render_s
        work.times.encode = time.perf_counter() - t0
        return RenderedFrame(
            index=work.index,
            pts_us=int(round(work.pts * 1e6)),
            pts_samples=int(round(work.pts * self.options.npc_sample_rate)),
            encoded=encoded,
            motion=work.motion,
            events=work.events,
            times=work.times,
            shows_chunks=work.shown,
            batch_size=batch_size,
        )

    def render_next(self) -> RenderedFrame:
        """Render, encode and return the next frame; advances the clock by one frame."""
        work = self.begin_frame()
        t0 = time.perf_counter()
        rgba = self.renderer.render_many([self.render_request(work)])[0]
        return self.finish_frame(work, rgba, time.perf_counter() - t0)

    @staticmethod
    def _make_encoder(output: OutputOptions) -> FrameEncoder:
        return FrameEncoder(output.pixel_format, output.flip_y, output.jpeg_quality)


def rig_weights(motion: MotionFrame) -> np.ndarray:
    """The expression weights sent in RigFrame, in RIG_CHANNEL_NAMES order."""
    return motion.values[: len(RIG_CHANNEL_NAMES)]
