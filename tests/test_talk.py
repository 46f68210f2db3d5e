"""`lpm-npc talk`: the command parser, the clocks, the device layer and a scripted run end to end.

Only the sound card is faked (NullAudioIO, a missing PortAudio); the server, the client and
eSpeak NG are real.
"""

from __future__ import annotations

import importlib.abc
import io
import sys
import time
import types

import cv2
import numpy as np
import pytest

from lpm_npc.talk.commands import (
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
from lpm_npc.talk.devices import AudioDeviceError, NullAudioIO, check_device
from lpm_npc.talk.timing import (
    FrameJitterBuffer,
    LineScheduler,
    NpcTimeline,
    PlaybackClock,
)
from lpm_npc.types import Emotion, EventType, Phase

# -- CommandParser ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("say Hello there, traveller", Say("Hello there, traveller")),
    ("  SAY   \"Quoted line\"  ", Say("Quoted line")),
    ("play lines/greet.wav", Play("lines/greet.wav")),
    ("emotion happy", SetEmotion(Emotion.HAPPY, 1.0, 300)),
    ("emotion Afraid 0.7 200", SetEmotion(Emotion.AFRAID, 0.7, 200)),
    ("phase thinking", SetPhase(Phase.THINKING)),
    ("direct nods slowly, a bit nervous", Direct("nods slowly, a bit nervous")),
    ("direction look away", Direct("look away")),
    ("interrupt", Interrupt()),
    ("size 256", SetSize(256)),
    ("fps 15", SetFps(15)),
    ("pause", Pause()),
    ("resume", Resume()),
    ("wait", Wait(None)),
    ("wait 1.5", Wait(1.5)),
    ("wait 2s", Wait(2.0)),
    ("help", Help()),
    ("?", Help()),
    ("quit", Quit()),
    ("exit", Quit()),
])
def test_parser_accepts(line, expected):
    assert CommandParser().parse(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "# a comment"])
def test_parser_skips_blank_and_comments(line):
    assert CommandParser().parse(line) is None


@pytest.mark.parametrize("line, message", [
    ("sya hello", "did you mean 'say'"),
    ("dance", "unknown command 'dance'"),
    ("say", "say needs the NPC's line"),
    ("play", "play needs a file"),
    ("emotion", "usage: emotion NAME"),
    ("emotion joyful", "unknown emotion 'joyful'; use one of neutral, happy"),
    ("emotion happy lots", "intensity must be a number"),
    ("emotion happy 1.5", "within 0..1"),
    ("emotion happy 0.5 99999", "within 0..60000"),
    ("emotion happy 0.5 100 extra", "usage: emotion NAME"),
    ("phase dancing", "unknown phase 'dancing'"),
    ("phase", "usage: phase NAME"),
    ("direct", "direct needs a direction"),
    ("size", "usage: size N"),
    ("size 8", "16..1024"),
    ("size 200.5", "whole number"),
    ("size big", "size must be a number"),
    ("fps 29", "usage: fps N with N one of"),
    ("wait -1", "0..3600"),
    ("wait soon", "seconds must be a number"),
    ("interrupt now", "takes no arguments"),
    ("quit please", "takes no arguments"),
])
def test_parser_errors_say_what_to_type(line, message):
    with pytest.raises(CommandError, match=message if "(" not in message else None) as info:
        CommandParser().parse(line)
    assert message in str(info.value)


# -- LineScheduler --------------------------------------------------------------------------------


def test_scheduler_places_lines_back_to_back():
    s = LineScheduler(rate=16000, chunk_ms=40, lead_s=0.25, push_ahead_s=0.2)
    line = np.ones(16000, np.int16)  # 1 s
    assert s.schedule(line, now_s=1.0) == (20000, 36000)        # silent NPC: now + lead
    assert s.schedule(line[:8000], now_s=1.1) == (36000, 44000)  # right after the first line
    assert s.end_s() == pytest.approx(2.75)
    # a line after a long silence starts `lead` after now again
    assert s.schedule(line[:640], now_s=10.0) == (164000, 164640)


def test_scheduler_chunks_are_contiguous_and_due_ahead():
    s = LineScheduler(rate=16000, chunk_ms=40, lead_s=0.25, push_ahead_s=0.2)
    pcm = (np.arange(16000 + 100) % 1000).astype(np.int16)
    start, end = s.schedule(pcm, now_s=0.0, text="hello")
    assert start == 4000
    chunks = s.due(now_s=100.0)
    assert [c.sample_index for c in chunks] == list(range(start, end, 640))
    assert all(len(c.pcm) == 640 for c in chunks[:-1]) and len(chunks[-1].pcm) == 100
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), pcm)
    assert chunks[0].text == "hello" and all(c.text == "" for c in chunks[1:])
    # due(): each chunk push_ahead_s before its own time
    s2 = LineScheduler(rate=16000, chunk_ms=40, lead_s=0.25, push_ahead_s=0.2)
    s2.schedule(pcm, now_s=0.0)
    assert [c.sample_index for c in s2.due(0.0)] == []             # first chunk due at 0.25 - 0.2
    assert [c.sample_index for c in s2.due(0.05)] == [4000]
    assert [c.sample_index for c in s2.due(0.13)] == [4640, 5280]  # 0.29 - 0.2, 0.33 - 0.2
    assert s2.pending == len(chunks) - 3


def test_scheduler_accepts_float_and_rejects_empty():
    s = LineScheduler()
    s.schedule(np.full(320, 0.5, np.float32), now_s=0.0)
    assert s.due(1.0)[0].pcm[0] == 16384
    with pytest.raises(ValueError):
        s.schedule(np.zeros(0, np.int16), now_s=0.0)


def test_scheduler_flush_drops_unsent_and_cuts_the_end():
    s = LineScheduler(rate=16000, chunk_ms=40, lead_s=0.25, push_ahead_s=0.2)
    s.schedule(np.ones(32000, np.int16), now_s=0.0)   # 4000..36000
    sent = s.due(0.5)
    assert sent and s.pending > 0
    dropped = s.flush(cut_index=12000)
    assert dropped > 0 and s.pending == 0 and s.end == 12000
    # the next line goes after now + lead, not after the cut line's old end
    assert s.schedule(np.ones(1600, np.int16), now_s=0.8) == (16800, 18400)


# -- PlaybackClock / FrameJitterBuffer --------------------------------------------------------------


def test_playback_clock_presents_behind_the_server():
    clock = PlaybackClock.for_lookahead(80, margin_ms=120)
    assert clock.delay_s == pytest.approx(0.2)
    assert clock.presented(1.0) == pytest.approx(0.8)
    assert clock.push_ahead_s >= 0.08 + 0.1 - 1e-9 and clock.lead_s >= clock.push_ahead_s


def _frames(buf: FrameJitterBuffer, indices, fps=30):
    for i in indices:
        buf.add(i, int(round(i * 1e6 / fps)), f"frame{i}")


def test_jitter_buffer_picks_the_frame_for_the_playhead():
    buf: FrameJitterBuffer[str] = FrameJitterBuffer(capacity=16)
    _frames(buf, range(6))                      # pts 0, 33.3, 66.7, 100, 133.3, 166.7 ms
    assert buf.select(0.050) == (1, 33333, "frame1")   # newest due; frame 0 superseded
    assert buf.skipped == 1
    assert buf.select(0.060) is None            # nothing newer is due: keep frame 1 on screen
    assert buf.select(0.100)[0] == 3            # exactly on a pts counts as due
    assert buf.select(10.0)[0] == 5
    assert buf.shown == 3 and len(buf) == 0


def test_jitter_buffer_ignores_stale_reorders_and_bounds():
    buf: FrameJitterBuffer[str] = FrameJitterBuffer(capacity=4)
    _frames(buf, [2, 0, 1])                     # out of order: kept sorted
    assert buf.select(0.040)[0] == 1
    _frames(buf, [0, 1])                        # stale (already past what is shown)
    assert len(buf) == 1
    _frames(buf, [3, 4, 5, 6, 7])               # overflow drops the oldest
    assert len(buf) == 4 and buf.dropped_overflow == 2
    assert buf.select(0.1) is None              # frame 4 (133 ms) is not due yet
    assert buf.select(0.14)[0] == 4


def test_jitter_buffer_resyncs_when_everything_is_far_ahead():
    buf: FrameJitterBuffer[str] = FrameJitterBuffer(capacity=8, resync_s=1.0)
    buf.add(100, 5_000_000, "late clock")
    assert buf.select(4.5) is None              # 0.5 s ahead: wait for it
    assert buf.select(3.0) == (100, 5_000_000, "late clock") and buf.resyncs == 1


def test_npc_timeline_reads_placed_audio_and_clears_on_interrupt():
    tl = NpcTimeline(16000)
    tl.write(100, np.full(50, 7, np.int16))
    tl.write(300, np.full(50, 9, np.int16))
    out = tl.read(-20, 400)
    assert out[:120].sum() == 0 and (out[120:170] == 7).all() and (out[170:320] == 0).all()
    assert (out[320:370] == 9).all()
    tl.clear_from(120)
    out = tl.read(0, 400)
    assert (out[100:120] == 7).all() and out[120:].sum() == 0 and tl.end() == 120


def test_null_audio_plays_the_mic_file_in_real_time(tmp_path, player_speech):
    from lpm_npc.audio.wav import write_wav

    wav = tmp_path / "mic.wav"
    write_wav(wav, player_speech[:3200], 16000)   # 0.2 s
    got: list[np.ndarray] = []
    played: list[int] = []
    audio = NullAudioIO(16000, mic_file=wav, keep_output=True)
    audio.start(lambda n: (played.append(n), np.zeros(n, np.int16))[1], got.append)
    try:
        deadline = time.monotonic() + 10
        while sum(len(b) for b in got) < 3200 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        audio.close()
    assert sum(len(b) for b in got) == 3200 and all(len(b) == 320 for b in got)
    assert played and audio.position_s() > 0


# -- missing sound card ------------------------------------------------------------------------------


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """`import sounddevice` fails the way it does without libportaudio (OSError at import)."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


@pytest.fixture
def no_portaudio(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])


def test_missing_portaudio_gives_a_clear_message(no_portaudio, capsys):
    from lpm_npc.cli import main

    code = main(["talk", "--no-window", "--server", "127.0.0.1:9"])
    out = capsys.readouterr().out
    assert code == 2
    assert "no input device found" in out and "PortAudio" in out and "--no-mic" in out
    assert "Traceback" not in out


def test_missing_output_device_falls_back_to_a_silent_clock(no_portaudio):
    from lpm_npc.talk.app import TalkOptions, open_audio

    said: list[str] = []
    audio = open_audio(TalkOptions(mic=False, window=False), said.append)
    assert isinstance(audio, NullAudioIO)
    assert said and "no output device found" in said[0] and "--no-speaker" in said[0]


def test_no_usable_device_is_reported(monkeypatch):
    class PortAudioError(Exception):
        pass

    fake = types.ModuleType("sounddevice")
    fake.PortAudioError = PortAudioError

    def query_devices(device=None, kind=None):
        raise PortAudioError("Error querying device -1")

    fake.query_devices = query_devices
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(AudioDeviceError, match="no usable input device.*Error querying device -1"):
        check_device("input", 16000)

    from lpm_npc.talk.app import TalkOptions, open_audio

    with pytest.raises(AudioDeviceError, match="(?s)no input device found.*--no-mic"):
        open_audio(TalkOptions(mic=True, window=False), print)


def test_no_display_says_use_no_window(monkeypatch, capsys):
    from lpm_npc.cli import main

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["talk", "--no-mic"]) == 2
    out = capsys.readouterr().out
    assert "no display" in out and "--no-window" in out and "--record" in out


# -- end to end against the real server ---------------------------------------------------------------


def _mp4_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def direction_model_loaded(server):
    """The first direction loads a sentence-embedding model inside the server (seconds); do it up
    front so the scripted session is not stalled by it."""
    from lpm_npc.performance.direction import encode

    encode(["warm up"])


def test_scripted_session_end_to_end(server, direction_model_loaded, tmp_path):
    from lpm_npc.cli import build_parser, talk_options
    from lpm_npc.talk import run_talk

    script = tmp_path / "script.txt"
    script.write_text("\n".join([
        "# a scripted conversation",
        "emotion happy 0.8",
        "say Hello there, traveller.",
        "direct nods slowly, a bit nervous",
        "wait",
        "nonsense here",            # a bad line is reported and skipped
        "emotion afraid 0.7 200",
        "say Wait, did you hear that? Something is moving in the trees, over there.",
        "wait 1.2",
        "interrupt",
        "wait 0.5",
        "quit",
    ]))
    video = tmp_path / "talk.mp4"
    lines: list[str] = []
    args = build_parser().parse_args([
        "talk", "--server", server.address, "--no-mic", "--no-window", "--no-speaker", "--size", "96",
        "--fps", "15", "--script", str(script), "--record", str(video)])
    result = run_talk(talk_options(args), out=lines.append)
    text = "\n".join(lines)

    assert result.exit_code == 0, text
    assert result.frames > 0 and result.last_index >= 0
    assert EventType.NPC_SPEECH_STARTED in result.events, text
    assert EventType.NPC_SPEECH_ENDED in result.events, text
    assert EventType.INTERRUPTED in result.events, text
    assert result.directions == ["nods slowly, a bit nervous"], text
    assert "unknown command 'nonsense'" in text
    assert "npc speech started" in text and "direction \"nods slowly" in text
    # two lines, the second placed after the first
    assert len(result.lines) == 2 and result.lines[1][0] >= result.lines[0][1]
    # the recording: one frame per 1/15 s of session time up to the last frame received
    expected = round(result.last_pts_us / 1e6 * 15) + 1
    assert result.frames_recorded == expected
    assert video.is_file()
    assert abs(_mp4_frames(video) - expected) <= 2
    assert result.frames_shown > 0


def test_mic_file_feeds_the_player_channel(server, tmp_path, player_speech):
    from lpm_npc.audio.wav import write_wav
    from lpm_npc.talk import TalkOptions, run_talk

    wav = tmp_path / "player.wav"
    write_wav(wav, np.concatenate([np.zeros(8000, np.float32), player_speech]), 16000)
    seconds = 0.5 + len(player_speech) / 16000 + 1.5
    lines: list[str] = []
    result = run_talk(TalkOptions(server=server.address, mic_file=wav, window=False, size=64, fps=15,
                                  seconds=seconds), out=lines.append, stdin=io.StringIO(""))
    text = "\n".join(lines)
    assert result.exit_code == 0, text
    assert result.player_samples_sent > 16000, text
    assert EventType.PLAYER_SPEECH_STARTED in result.events, text
    assert "--seconds" in text and result.frames > 0
