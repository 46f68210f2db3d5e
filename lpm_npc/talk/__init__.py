"""`lpm-npc talk`: talk to an NPC from a desktop without an engine (see app.py)."""

from .app import TalkOptions, TalkResult, TalkSession, run_talk
from .commands import Command, CommandError, CommandParser
from .devices import AudioDeviceError, AudioIO, NullAudioIO, SoundDeviceAudio
from .timing import FrameJitterBuffer, LineScheduler, NpcTimeline, PlaybackClock

__all__ = [
           "AudioDeviceError",
           "AudioIO",
           "Command",
           "CommandError",
           "CommandParser",
           "FrameJitterBuffer",
           "LineScheduler",
           "NpcTimeline",
           "NullAudioIO",
           "PlaybackClock",
           "SoundDeviceAudio",
           "TalkOptions",
           "TalkResult",
           "TalkSession",
           "run_talk",
]
