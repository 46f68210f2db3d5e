"""Built-in voice: eSpeak NG through ctypes on `espeakng_loader`'s shared library.

The library keeps global state (one voice, one set of parameters, one callback), so every call
goes through a module lock and the library is initialised once per process. Synthesis runs in
synchronous mode; the callback collects the samples and the PHONEME / WORD events, whose
`audio_position` (milliseconds from the start of the utterance) gives their timing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpm_npc.errors import FailedPreconditionError, InvalidInputError

log = logging.getLogger(__name__)

# espeak_AUDIO_OUTPUT / options / event types / parameters (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_SENTENCE = 2
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_EE_OK = 0

DEFAULT_NPC_VOICE = "en-us+m3"
DEFAULT_PLAYER_VOICE = "en-us+f3"
MAX_TEXT_CHARS = 20000


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


@dataclass
class PhonemeEvent:
    """One phoneme starting at `t` seconds from the clip start (eSpeak mnemonic, e.g. 'p', 'aI')."""

    t: float
    symbol: str


@dataclass
class WordEvent:
    """One word starting at `t` seconds; `text` is the word as written in the input."""

    t: float
    text: str


@dataclass
class SpeechClip:
    """Synthesized speech with its phoneme and word timings."""

    samples: np.ndarray
    sample_rate: int
    phonemes: list[PhonemeEvent] = field(default_factory=list)
    words: list[WordEvent] = field(default_factory=list)
    text: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


class _Engine:
    """The process-wide eSpeak NG instance (use only under `_LOCK`)."""

    def __init__(self) -> None:
        import espeakng_loader

        lib_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        self.lib.espeak_SetSynthCallback.restype = None
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_SetParameter.restype = ctypes.c_int
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                          ctypes.c_void_p]
        self.lib.espeak_Synth.restype = ctypes.c_int
        self.lib.espeak_Synchronize.restype = ctypes.c_int
        self.lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.data_path = Path(data_path)
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, str(data_path).encode(),
                                          _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate <= 0:
            raise FailedPreconditionError(f"eSpeak NG failed to initialise (data at {data_path})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []  # (type, audio_ms, text_pos, id string)
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: the library holds it
        self.lib.espeak_SetSynthCallback(self._callback)
        log.info("eSpeak NG initialised: %d Hz, data %s", self.sample_rate, data_path)

    def _on_synth(self, wav, numsamples, events) -> int:  # noqa: ANN001 (ctypes types)
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                sym = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((ev.type, ev.audio_position, ev.text_position, sym))
            elif ev.type == _EVENT_WORD:
                self._events.append((ev.type, ev.audio_position, ev.text_position, str(ev.length)))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int) -> SpeechClip:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise InvalidInputError(f"unknown eSpeak voice {voice!r}; see available_voices()")
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self.lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        err = self.lib.espeak_Synth(buf, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != _EE_OK:
            raise FailedPreconditionError(f"eSpeak NG synthesis failed (error {err})")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        samples = pcm.astype(np.float32) / 32768.0
        phonemes: list[PhonemeEvent] = []
        words: list[WordEvent] = []
        for etype, ms, pos, payload in self._events:
            t = ms / 1000.0
            if etype == _EVENT_PHONEME and payload:
                phonemes.append(PhonemeEvent(t, payload))
            elif etype == _EVENT_WORD:
                length = int(payload)
                start = max(pos - 1, 0)  # text_position is 1-based, in characters
                words.append(WordEvent(t, text[start:start + length]))
        phonemes.sort(key=lambda p: p.t)
        words.sort(key=lambda w: w.t)
        self._chunks, self._events = [], []
        return SpeechClip(samples, self.sample_rate, phonemes, words, text)

    def voices(self) -> list[str]:
        out: list[str] = []
        arr = self.lib.espeak_ListVoices(None)
        i = 0
        while arr and arr[i]:
            ident = arr[i].contents.identifier
            if ident:
                out.append(ident.decode("utf-8", "replace"))
            i += 1
        variants = self.data_path / "voices" / "!v"
        if variants.is_dir():
            out += [f"+{p.name}" for p in sorted(variants.iterdir()) if p.is_file()]
        return out


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def synthesize(text: str, voice: str = DEFAULT_NPC_VOICE, rate_wpm: int = 160, pitch: int = 50) -> SpeechClip:
    """Speak `text` with eSpeak NG; returns float32 samples (22050 Hz) with phoneme/word timings.

    `voice` is an eSpeak voice name, optionally with a variant (`"en-us+f3"`); `rate_wpm` is
    80..450 words per minute; `pitch` is 0..99.
    """
    if not text or not text.strip():
        raise InvalidInputError("synthesize() needs non-empty text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"text too long ({len(text)} chars, max {MAX_TEXT_CHARS})")
    if not 80 <= rate_wpm <= 450:
        raise InvalidInputError(f"rate_wpm must be 80..450, got {rate_wpm}")
    if not 0 <= pitch <= 99:
        raise InvalidInputError(f"pitch must be 0..99, got {pitch}")
    with _LOCK:
        return _engine().synth(text, voice, rate_wpm, pitch)


def synthesize_16k(text: str, voice: str = DEFAULT_NPC_VOICE, pitch: int = 50) -> np.ndarray:
    """`synthesize` resampled to the pipeline's 16 kHz: float32 mono samples, no timings."""
    from lpm_npc.audio.pcm import INTERNAL_RATE, resample

    clip = synthesize(text, voice=voice, pitch=pitch)
    return resample(clip.samples, clip.sample_rate, INTERNAL_RATE).astype(np.float32)


def available_voices() -> list[str]:
    """Voice identifiers (e.g. 'gmw/en-US') and variants (e.g. '+f3') usable as `voice`.

    Combine a language and a variant with '+': `"en-us+f3"`.
    """
    with _LOCK:
        return _engine().voices()
