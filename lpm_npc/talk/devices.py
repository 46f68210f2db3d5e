"""The sound card behind a small protocol: sounddevice (PortAudio) for real, a null one otherwise.

`AudioIO.start(fill, on_mic)`: the device calls `fill(n)` for the next n output samples (int16
mono at `rate`) and `on_mic(block)` with each recorded int16 block. `position_s()` is how much
output has been *heard* so far (the playhead), which drives the picture.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

FillFn = Callable[[int], np.ndarray]
MicFn = Callable[[np.ndarray], None]

PORTAUDIO_HINT = ("sounddevice needs the PortAudio library: install it (Debian/Ubuntu: "
                  "`sudo apt install libportaudio2`, macOS: `brew install portaudio`)")


class AudioDeviceError(RuntimeError):
    """No usable sound device; the message says what to do."""


class AudioIO(Protocol):
    rate: int
    name: str

    def start(self, fill: FillFn | None, on_mic: MicFn | None) -> None: ...

    def position_s(self) -> float: ...

    def close(self) -> None: ...


def import_sounddevice():
    """The sounddevice module, or AudioDeviceError when PortAudio is missing."""
    try:
        import sounddevice
    except OSError as exc:  # raised at import when libportaudio is not installed
        raise AudioDeviceError(f"PortAudio is not available ({exc}); {PORTAUDIO_HINT}") from None
    except ImportError as exc:
        raise AudioDeviceError(f"the sounddevice package is not installed ({exc}): pip install sounddevice") from None
    return sounddevice


def no_input_message(reason: str) -> str:
    return (f"no input device found: {reason}.\n"
            "  Plug in a microphone (and check it is not muted or taken), or run with --no-mic to talk "
            "with typed lines only (the player channel stays silent), or --mic-file WAV to use a recording "
            "as the player's voice.")


def no_output_message(reason: str) -> str:
    return (f"no output device found: {reason}. NPC lines will not be heard; the picture follows a silent "
            "clock instead (pass --no-speaker to skip this check).")


def check_device(kind: str, rate: int, device: int | str | None = None) -> str:
    """Name of the default (or given) `kind` ('input'/'output') device that can do `rate` Hz mono int16.

    Raises AudioDeviceError with a plain reason (no PortAudio, no device, unsupported format).
    """
    sd = import_sounddevice()
    try:
        info = sd.query_devices(device, kind=kind)
        if kind == "input":
            sd.check_input_settings(device=device, channels=1, dtype="int16", samplerate=rate)
        else:
            sd.check_output_settings(device=device, channels=1, dtype="int16", samplerate=rate)
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioDeviceError(f"PortAudio reports no usable {kind} device ({exc})") from None
    return str(info.get("name", "?")) if isinstance(info, dict) else str(info)


class SoundDeviceAudio:
    """Microphone and speaker through sounddevice: 16 kHz mono int16 in blocks of `block_ms`."""

    def __init__(self, use_input: bool = True, use_output: bool = True, rate: int = 16000, block_ms: int = 20,
                 input_device: int | str | None = None, output_device: int | str | None = None):
        self.rate = rate
        self.block = max(1, rate * block_ms // 1000)
        self.use_input, self.use_output = use_input, use_output
        self.input_device, self.output_device = input_device, output_device
        names = []
        if use_input:
            names.append("mic: " + check_device("input", rate, input_device))
        if use_output:
            names.append("speaker: " + check_device("output", rate, output_device))
        self.name = ", ".join(names) or "none"
        self._in = self._out = None
        self._lock = threading.Lock()
        self._out_samples = 0
        self._cb_wall = 0.0
        self._cb_first = 0
        self._dac_delay = 0.0
        self._t_start = 0.0
        self.input_overflows = 0
        self.output_underflows = 0

    def start(self, fill: FillFn | None, on_mic: MicFn | None) -> None:
        sd = import_sounddevice()
        self._t_start = time.monotonic()
        try:
            if self.use_output and fill is not None:
                def out_cb(outdata, frames, t, status):
                    if status.output_underflow:
                        self.output_underflows += 1
                    outdata[:, 0] = fill(frames)
                    with self._lock:
                        self._cb_wall = time.monotonic()
                        self._cb_first = self._out_samples
                        self._dac_delay = max(0.0, float(t.outputBufferDacTime - t.currentTime))
                        self._out_samples += frames

                self._out = sd.OutputStream(samplerate=self.rate, channels=1, dtype="int16", blocksize=self.block,
                                            device=self.output_device, callback=out_cb, latency="low")
                self._out.start()
            if self.use_input and on_mic is not None:
                def in_cb(indata, frames, t, status):
                    if status.input_overflow:
                        self.input_overflows += 1
                    on_mic(indata[:, 0].copy())

                self._in = sd.InputStream(samplerate=self.rate, channels=1, dtype="int16", blocksize=self.block,
                                          device=self.input_device, callback=in_cb, latency="low")
                self._in.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise AudioDeviceError(f"could not open the sound device ({exc})") from None

    def position_s(self) -> float:
        if self._out is None:
            return time.monotonic() - self._t_start
        with self._lock:
            if self._cb_wall == 0.0:
                return 0.0
            # the first sample of the last block reaches the DAC dac_delay after the callback
            heard = self._cb_first / self.rate + (time.monotonic() - self._cb_wall) - self._dac_delay
            return max(0.0, min(heard, self._out_samples / self.rate))

    def close(self) -> None:
        for s in (self._in, self._out):
            if s is not None:
                try:
                    s.stop()
                    s.close()
                except Exception:  # noqa: BLE001 - closing a dead device must not hide the real error
                    pass
        self._in = self._out = None


class NullAudioIO:
    """No sound card: the playhead is the wall clock, output is kept in memory (`heard`), and the
    microphone is silent or a WAV file played in real time (`mic_file`)."""

    def __init__(self, rate: int = 16000, block_ms: int = 20, mic_file: str | Path | None = None,
                 keep_output: bool = False):
        self.rate = rate
        self.block = max(1, rate * block_ms // 1000)
        self.name = "none (silent clock" + (f", mic from {Path(mic_file).name}" if mic_file else "") + ")"
        self._mic: np.ndarray | None = None
        if mic_file is not None:
            from ..audio.wav import load_audio
            from .timing import to_int16

            self._mic = to_int16(load_audio(mic_file, rate))
        self.keep_output = keep_output
        self.heard: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self, fill: FillFn | None, on_mic: MicFn | None) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(fill, on_mic), name="null-audio", daemon=True)
        self._thread.start()

    def _run(self, fill: FillFn | None, on_mic: MicFn | None) -> None:
        out_pos = mic_pos = 0
        while not self._stop.wait(self.block / self.rate / 2):
            target = int((time.monotonic() - self._t0) * self.rate)
            while fill is not None and out_pos + self.block <= target:
                block = fill(self.block)
                if self.keep_output:
                    self.heard.append(block)
                out_pos += self.block
            while on_mic is not None and self._mic is not None and mic_pos + self.block <= min(target, len(self._mic)):
                on_mic(self._mic[mic_pos:mic_pos + self.block])  # a block exists once it is recorded
                mic_pos += self.block

    def position_s(self) -> float:
        return time.monotonic() - self._t0

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
