"""`lpm-npc talk`: talk to an NPC from a desktop, no engine.

The microphone is the player channel; NPC lines come from WAV files or text spoken by eSpeak NG;
tags and directions are typed at a prompt; a window shows the NPC in sync with what is heard.

Threads: the receiver (frames into the jitter buffer and the recorder, events printed), the pump
(NPC chunks sent `push_ahead` before their time, `--seconds`), the command reader (script or
stdin), the audio device's callbacks, and the main thread, which shows frames (or prints a status
line each second) and shuts everything down.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np

from ..errors import LpmError
from ..types import AudioChannel, EventType
from .commands import (
    HELP,
    Command,
    CommandError,
    CommandParser,
    Direct,
    Help,
    Interrupt,
    Pause,
    Play,
    Quit,
    Resume,
    Say,
    SetEmotion,
    SetFps,
    SetPhase,
    SetSize,
    Wait,
)
from .devices import (
    AudioDeviceError,
    AudioIO,
    NullAudioIO,
    SoundDeviceAudio,
    no_input_message,
    no_output_message,
)
from .timing import (
    FrameJitterBuffer,
    LineScheduler,
    NpcTimeline,
    PlaybackClock,
    to_int16,
)

RATE = 16000
Printer = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class TalkOptions:
    portrait: Path | None = None
    server: str | None = None          # host:port of a running sidecar; None = start one
    size: int = 512
    fps: int = 30
    voice: str | None = None           # eSpeak voice; None = the default NPC voice
    mic: bool = True
    mic_file: Path | None = None       # a WAV played as the player's microphone (no sound card needed)
    speaker: bool = True
    window: bool = True
    record: Path | None = None
    seconds: float | None = None       # quit after this much session time
    script: Path | None = None         # commands from a file instead of stdin
    lookahead_ms: int = 80
    status_every_s: float = 1.0


@dataclass
class TalkResult:
    exit_code: int = 0
    message: str = ""
    frames: int = 0
    first_index: int = -1
    last_index: int = -1
    last_pts_us: int = 0
    frames_shown: int = 0
    frames_recorded: int = 0
    record: Path | None = None
    events: list[EventType] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lines: list[tuple[int, int]] = field(default_factory=list)   # (start, end) sample index of each NPC line
    player_samples_sent: int = 0


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


NO_DISPLAY = ("no display: $DISPLAY is not set, so no window can open.\n"
              "  Run with --no-window (a status line is printed each second) and --record out.mp4 to keep "
              "the video, or start it from a desktop session (or with X forwarding: ssh -X).")


# -- audio device selection ------------------------------------------------------------------------
def open_audio(opts: TalkOptions, out: Printer) -> AudioIO:
    """The AudioIO the options ask for; AudioDeviceError (with what to do) when the mic is missing."""
    if opts.mic_file is not None:
        return NullAudioIO(RATE, mic_file=opts.mic_file)
    if opts.mic:
        try:
            SoundDeviceAudio(use_input=True, use_output=False, rate=RATE)
        except AudioDeviceError as exc:
            raise AudioDeviceError(no_input_message(str(exc))) from None
    if opts.speaker:
        try:
            return SoundDeviceAudio(use_input=opts.mic, use_output=True, rate=RATE)
        except AudioDeviceError as exc:
            out(f"warning: {no_output_message(str(exc))}")
    if opts.mic:
        return SoundDeviceAudio(use_input=True, use_output=False, rate=RATE)
    return NullAudioIO(RATE)


# -- recording ------------------------------------------------------------------------------------
class Recorder:
    """Frames placed by pts into an MP4 at the session's start fps (gaps filled with the last frame),
    then the NPC audio that was played and the player's microphone muxed in."""

    def __init__(self, path: Path, fps: int, size: int, rate: int = RATE):
        from ..media import Mp4Writer

        self.path = Path(path)
        self.fps, self.rate = fps, rate
        self._tmp = tempfile.TemporaryDirectory(prefix="lpm-npc-talk-")
        self._video = Path(self._tmp.name) / "video.mp4"
        self._writer = Mp4Writer(self._video, fps, size, size)
        self._lock = threading.Lock()
        self._last: np.ndarray | None = None
        self.written = 0
        self._player: list[tuple[int, np.ndarray]] = []

    def add_frame(self, pts_us: int, rgba: np.ndarray) -> None:
        slot = int(round(pts_us / 1e6 * self.fps))
        with self._lock:
            if slot < self.written:
                return  # the session runs at a higher fps than the recording now
            fill = self._last if self._last is not None else rgba
            while self.written < slot:
                self._writer.write(fill)
                self.written += 1
            self._writer.write(rgba)
            self.written += 1
            self._last = rgba

    def add_player(self, index: int, pcm: np.ndarray) -> None:
        with self._lock:
            self._player.append((index, pcm))

    def close(self, timeline: NpcTimeline) -> Path:
        from ..audio.wav import write_wav
        from ..media import ffmpeg_exe

        with self._lock:
            self._writer.close()
            n = int(math.ceil(self.written / self.fps * self.rate))
            mix = timeline.read(0, n).astype(np.float32) / 32768.0
            for index, pcm in self._player:
                a, b = max(0, index), min(n, index + len(pcm))
                if a < b:
                    mix[a:b] += pcm[a - index:b - index].astype(np.float32) / 32768.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if np.any(mix):
                wav = Path(self._tmp.name) / "audio.wav"
                write_wav(wav, np.clip(mix, -1.0, 1.0), self.rate)
                cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(self._video), "-i", str(wav),
                       "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(self.path)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"ffmpeg failed muxing {self.path}: {proc.stderr.strip()}")
            else:
                shutil.move(str(self._video), self.path)
        finally:
            self._tmp.cleanup()
        return self.path


# -- the session ----------------------------------------------------------------------------------
class TalkSession:
    """One Perform stream driven by the mic, typed commands and an audio playhead."""

    def __init__(self, stream, audio: AudioIO, opts: TalkOptions, out: Printer = _print):
        from ..audio.tts import DEFAULT_NPC_VOICE

        self.stream = stream
        self.audio = audio
        self.opts = opts
        self.out = out
        self.voice = opts.voice or DEFAULT_NPC_VOICE
        self.clock = PlaybackClock.for_lookahead(opts.lookahead_ms)
        self.scheduler = LineScheduler(RATE, chunk_ms=40, lead_s=self.clock.lead_s,
                                       push_ahead_s=self.clock.push_ahead_s)
        self.timeline = NpcTimeline(RATE)
        self.buffer: FrameJitterBuffer = FrameJitterBuffer(capacity=48)
        self.parser = CommandParser()
        self.recorder = Recorder(opts.record, opts.fps, opts.size) if opts.record else None
        self.result = TalkResult(record=opts.record)
        self.quit = threading.Event()
        self.ended = threading.Event()
        self._quitting = False
        self._t0 = 0.0
        self._out_pos = 0
        self._delay_samples = int(round(self.clock.delay_s * RATE))
        self._mic_level = 0.0
        self._last_stats = None
        self._shown_index = -1
        self._shown_pts = 0

    # clocks
    def now_s(self) -> float:
        """The server's session time (about the pts it is rendering now)."""
        return time.monotonic() - self._t0

    def presented_s(self) -> float:
        """The session time being heard and shown."""
        return self.clock.presented(self.audio.position_s())

    def log(self, text: str, t: float | None = None) -> None:
        self.out(f"[{self.now_s() if t is None else t:7.2f}s] {text}")

    # device callbacks
    def _fill(self, n: int) -> np.ndarray:
        start = self._out_pos - self._delay_samples
        self._out_pos += n
        return self.timeline.read(start, n)

    def _on_mic(self, block: np.ndarray) -> None:
        if self._quitting:
            return
        block = to_int16(block)
        self._mic_level = float(np.sqrt(np.mean((block.astype(np.float32) / 32768.0) ** 2))) if block.size else 0.0
        try:
            self.stream.send_audio(AudioChannel.PLAYER, block, RATE)
        except RuntimeError:
            return
        self.result.player_samples_sent += len(block)
        if self.recorder is not None:
            self.recorder.add_player(int(self.now_s() * RATE) - len(block), block)

    # -- run --------------------------------------------------------------------------------------
    def run(self, lines: Iterable[str], then_drain: bool = True) -> TalkResult:
        first = next(iter(self.stream))
        if first.WhichOneof("msg") == "error":
            raise RuntimeError(first.error.message)
        self._t0 = time.monotonic()
        self.log(f"session {first.started.session_id} started ({self.opts.size}x{self.opts.size} @ "
                 f"{self.opts.fps} fps, lookahead {self.opts.lookahead_ms} ms, presentation delay "
                 f"{self.clock.delay_s * 1000:.0f} ms); audio: {self.audio.name}", 0.0)
        self.audio.start(self._fill, self._on_mic)
        threads = [threading.Thread(target=self._receive, name="talk-receive", daemon=True),
                   threading.Thread(target=self._pump, name="talk-pump", daemon=True),
                   threading.Thread(target=self._commands, args=(lines, then_drain), name="talk-commands",
                                    daemon=True)]
        for th in threads:
            th.start()
        try:
            if self.opts.window:
                self._window_loop()
            else:
                self._status_loop()
        except KeyboardInterrupt:
            self.log("Ctrl-C: quitting")
        finally:
            self._finish(threads[0])
        return self.result

    def _finish(self, receiver: threading.Thread) -> None:
        self._quitting = True
        self.quit.set()
        self.audio.close()
        self.stream.close_send()
        receiver.join(5.0)
        if receiver.is_alive():
            self.stream.cancel()
            receiver.join(5.0)
        if self.opts.window:
            try:
                import cv2
                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001
                pass
        r = self.result
        r.frames_shown = self.buffer.shown
        if self.recorder is not None:
            r.frames_recorded = self.recorder.written
            path = self.recorder.close(self.timeline)
            self.log(f"recorded {r.frames_recorded} frames ({r.frames_recorded / self.opts.fps:.1f} s) to {path}")
        expected = r.last_index - r.first_index + 1 if r.frames else 0
        self.log(f"done: {r.frames} frames received ({max(0, expected - r.frames)} missing), {r.frames_shown} shown, "
                 f"{len(r.events)} events, {len(r.errors)} errors")

    # -- threads ----------------------------------------------------------------------------------
    def _receive(self) -> None:
        from ..live import frame_to_rgba
        from ..server.convert import EVENT_FROM_PB

        r = self.result
        try:
            for msg in self.stream:
                kind = msg.WhichOneof("msg")
                if kind == "frame":
                    f = msg.frame
                    if r.frames == 0:
                        r.first_index = f.index
                    r.frames += 1
                    r.last_index, r.last_pts_us = f.index, f.pts_us
                    self.buffer.add(f.index, f.pts_us, f)
                    if self.recorder is not None:
                        self.recorder.add_frame(f.pts_us, frame_to_rgba(f))
                elif kind == "event":
                    e = msg.event
                    etype = EVENT_FROM_PB.get(e.type)
                    if etype is None:
                        continue
                    r.events.append(etype)
                    detail = f": {e.detail}" if e.detail else ""
                    self.log(f"{etype.value.replace('_', ' ')}{detail}", e.pts_us / 1e6)
                elif kind == "direction":
                    d = msg.direction
                    r.directions.append(d.text)
                    got = ", ".join(f"{m.name} {m.confidence:.2f} (weight {m.weight:.2f})" for m in d.matches)
                    self.log(f"direction \"{d.text}\" -> {got or 'nothing matched well'} for {d.duration_ms} ms",
                             d.pts_us / 1e6)
                elif kind == "stats":
                    self._last_stats = msg.stats
                elif kind == "error":
                    r.errors.append(msg.error.message)
                    self.log(f"server {'FATAL ' if msg.error.fatal else ''}error: {msg.error.message}")
        except grpc.RpcError as exc:
            if not (self._quitting and exc.code() == grpc.StatusCode.CANCELLED):
                r.errors.append(exc.details() or str(exc.code()))
                self.log(f"the stream ended: {exc.code().name}: {exc.details()}")
        finally:
            self.ended.set()
            if not self._quitting:
                self.log("the server ended the session")
                self.quit.set()

    def _pump(self) -> None:
        while not self.quit.wait(0.005):
            now = self.now_s()
            for chunk in self.scheduler.due(now):
                try:
                    self.stream.send_audio(AudioChannel.NPC, chunk.pcm, RATE, sample_index=chunk.sample_index,
                                           text=chunk.text)
                except RuntimeError:
                    return
            if self.opts.seconds is not None and now >= self.opts.seconds:
                self.log(f"--seconds {self.opts.seconds:g} reached: quitting")
                self.quit.set()

    def _commands(self, lines: Iterable[str], then_drain: bool) -> None:
        try:
            for line in lines:
                if self.quit.is_set():
                    return
                try:
                    cmd = self.parser.parse(line)
                except CommandError as exc:
                    self.log(f"? {exc}")
                    continue
                if cmd is None:
                    continue
                try:
                    self.execute(cmd)
                except (LpmError, RuntimeError, ValueError, OSError) as exc:
                    self.log(f"! {getattr(exc, 'message', None) or exc}")
                if isinstance(cmd, Quit):
                    return
            if self.quit.is_set():
                return
            if self.opts.seconds is not None:
                self.log(f"end of input: running until --seconds {self.opts.seconds:g}")
                return
            if then_drain:
                self.log("end of input: quitting once the NPC has finished")
                self.execute(Wait(None))
                self.quit.set()
        except Exception as exc:  # noqa: BLE001 - report, never die silently
            self.log(f"! command reader failed: {exc!r}")

    # -- commands ---------------------------------------------------------------------------------
    def execute(self, cmd: Command) -> None:
        s = self.stream
        if isinstance(cmd, Say):
            from ..audio.pcm import resample
            from ..audio.tts import synthesize

            clip = synthesize(cmd.text, voice=self.voice)
            self._queue_line(resample(clip.samples, clip.sample_rate, RATE), cmd.text)
        elif isinstance(cmd, Play):
            from ..audio.wav import load_audio

            path = Path(cmd.path).expanduser()
            if not path.is_file():
                raise OSError(f"no such file: {path}")
            self._queue_line(load_audio(path, RATE), path.name)
        elif isinstance(cmd, SetEmotion):
            s.set_state(emotion=cmd.emotion, intensity=cmd.intensity, transition_ms=cmd.transition_ms)
            self.log(f"emotion -> {cmd.emotion.value} {cmd.intensity:.2f} over {cmd.transition_ms} ms")
        elif isinstance(cmd, SetPhase):
            s.set_state(phase=cmd.phase)
            self.log(f"phase -> {cmd.phase.value}")
        elif isinstance(cmd, Direct):
            s.set_state(direction=cmd.text)
            self.log(f"direction sent: \"{cmd.text}\"")
        elif isinstance(cmd, Interrupt):
            cut = int(math.ceil(self.now_s() * RATE))
            dropped = self.scheduler.flush(cut)
            self.timeline.clear_from(cut)
            s.interrupt()
            self.log(f"interrupt sent ({dropped} unsent NPC chunks dropped)")
        elif isinstance(cmd, SetSize):
            s.set_output(width=cmd.size, height=cmd.size)
            self.log(f"size -> {cmd.size}x{cmd.size}" + (" (the recording keeps its size)" if self.recorder else ""))
        elif isinstance(cmd, SetFps):
            s.set_output(fps=cmd.fps)
            self.log(f"fps -> {cmd.fps}" + (" (the recording keeps its fps)" if self.recorder else ""))
        elif isinstance(cmd, Pause):
            s.pause()
        elif isinstance(cmd, Resume):
            s.resume()
        elif isinstance(cmd, Wait):
            if cmd.seconds is not None:
                self.quit.wait(cmd.seconds)
            else:
                while not self.quit.is_set() and self.presented_s() < self.scheduler.end_s() + 0.1:
                    self.quit.wait(0.05)
        elif isinstance(cmd, Help):
            self.out(HELP)
        elif isinstance(cmd, Quit):
            self.log("quit")
            self.quit.set()

    def _queue_line(self, samples: np.ndarray, label: str) -> None:
        pcm = to_int16(samples)
        start, end = self.scheduler.schedule(pcm, self.now_s(), text=label)
        self.timeline.write(start, pcm)
        self.result.lines.append((start, end))
        self.log(f"npc line queued: \"{label}\" ({(end - start) / RATE:.2f} s, plays at {start / RATE:.2f} s)")

    # -- output -----------------------------------------------------------------------------------
    def _status(self) -> str:
        r = self.result
        st = self._last_stats
        fps = f"{st.fps:.1f}" if st is not None else "-"
        speaking = "speaking" if self.presented_s() < self.scheduler.end_s() else "silent"
        mic = f", mic {20 * math.log10(max(self._mic_level, 1e-5)):.0f} dBFS" if self.opts.mic else ""
        return (f"frames {r.frames} ({fps} fps), showing #{self._shown_index} at {self._shown_pts / 1e6:.2f}s, "
                f"buffer {len(self.buffer)}, npc {speaking}{mic}")

    def _select(self) -> object | None:
        sel = self.buffer.select(self.presented_s())
        if sel is None:
            return None
        self._shown_index, self._shown_pts, frame = sel
        return frame

    def _status_loop(self) -> None:
        next_status = time.monotonic() + self.opts.status_every_s
        while not self.quit.wait(0.01):
            self._select()
            if time.monotonic() >= next_status:
                next_status += self.opts.status_every_s
                self.log(self._status())

    def _window_loop(self) -> None:
        import cv2

        from ..live import frame_to_rgba

        title = "lpm-npc talk"
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        next_title = time.monotonic() + 1.0
        shown = False
        while not self.quit.is_set():
            frame = self._select()
            if frame is not None:
                rgba = frame_to_rgba(frame)
                cv2.imshow(title, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR))
                shown = True
            key = cv2.waitKey(5) & 0xFF
            if key in (ord("q"), 27):
                self.log("window: quit")
                self.quit.set()
            elif shown and cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                self.log("window closed: quit")
                self.quit.set()
            if time.monotonic() >= next_title:
                next_title += 1.0
                cv2.setWindowTitle(title, f"{title} - {self._status()}")


# -- entry point ----------------------------------------------------------------------------------
def _stdin_lines(stdin: TextIO, interactive: bool) -> Iterator[str]:
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = stdin.readline()
        if not line:
            return
        yield line


def _script_lines(path: Path, out: Printer) -> Iterator[str]:
    for line in path.read_text().splitlines():
        if line.strip() and not line.strip().startswith("#"):
            out(f"> {line.strip()}")
        yield line


def run_talk(opts: TalkOptions, out: Printer = _print, stdin: TextIO | None = None) -> TalkResult:
    """Run `lpm-npc talk`; returns the result (exit_code 2 with a message for a setup problem)."""
    from ..client import NpcClient
    from ..sidecar import Sidecar

    def fail(message: str) -> TalkResult:
        out(f"error: {message}")
        return TalkResult(exit_code=2, message=message)

    if opts.window and not display_available():
        return fail(NO_DISPLAY)
    if opts.script is not None and not Path(opts.script).is_file():
        return fail(f"no such script file: {opts.script}")
    if opts.portrait is not None and not Path(opts.portrait).is_file():
        return fail(f"no such portrait file: {opts.portrait}")
    try:
        audio = open_audio(opts, out)
    except AudioDeviceError as exc:
        return fail(str(exc))

    sidecar = None
    client = None
    try:
        if opts.server:
            client = NpcClient(opts.server)
            try:
                client.wait_ready(timeout=10.0)
            except Exception as exc:  # noqa: BLE001
                return fail(f"no lpm-npc server at {opts.server} ({exc.__class__.__name__}); start one with "
                            "`lpm-npc serve` or leave out --server to start a sidecar")
        else:
            out("starting the sidecar (lpm-npc serve) ...")
            sidecar = Sidecar()
            client = sidecar.wait_ready()
        character = "default"
        if opts.portrait is not None:
            try:
                info = client.register_character(Path(opts.portrait).read_bytes(),
                                                 display_name=Path(opts.portrait).stem)
            except grpc.RpcError as exc:
                return fail(f"the portrait was refused: {exc.details()}")
            character = info.character_id
            out(f"character {character} registered (face score {info.face_score:.2f})")
        stream = client.perform(character_id=character, width=opts.size, fps=opts.fps,
                                lookahead_ms=opts.lookahead_ms, stats_interval_ms=1000)
        session = TalkSession(stream, audio, opts, out)
        if opts.script is not None:
            lines: Iterable[str] = _script_lines(Path(opts.script), out)
        else:
            src = stdin if stdin is not None else sys.stdin
            interactive = bool(getattr(src, "isatty", lambda: False)())
            if interactive:
                out("type 'help' for the commands, 'quit' to stop")
            lines = _stdin_lines(src, interactive)
        try:
            result = session.run(lines)
        except grpc.RpcError as exc:
            return fail(f"the session could not start: {exc.details()}")
        except RuntimeError as exc:
            return fail(f"the session could not start: {exc}")
        finally:
            stream.cancel()
        return result
    finally:
        audio.close()
        if client is not None:
            client.close()
        if sidecar is not None:
            sidecar.stop()
