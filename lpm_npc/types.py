"""Plain enums shared by the runtime; the server maps the protobuf enums onto these."""

from __future__ import annotations

import enum


class AudioChannel(enum.Enum):
    PLAYER = "player"
    NPC = "npc"


class Phase(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


class Emotion(enum.Enum):
    NEUTRAL = "neutral"
    HAPPY = "happy"
    SAD = "sad"
    ANGRY = "angry"
    SURPRISED = "surprised"
    AFRAID = "afraid"
    DISGUSTED = "disgusted"


class PixelFormat(enum.Enum):
    RGBA8 = "rgba8"
    BGRA8 = "bgra8"
    JPEG = "jpeg"


class EventType(enum.Enum):
    NPC_SPEECH_STARTED = "npc_speech_started"
    NPC_SPEECH_ENDED = "npc_speech_ended"
    PLAYER_SPEECH_STARTED = "player_speech_started"
    PLAYER_SPEECH_ENDED = "player_speech_ended"
    INTERRUPTED = "interrupted"
    BACKCHANNEL = "backchannel"
    AUDIO_LATE = "audio_late"
    PAUSED = "paused"
    RESUMED = "resumed"
    OUTPUT_CHANGED = "output_changed"
    SERVER_DRAINING = "server_draining"
    THINKING_STARTED = "thinking_started"
    DIRECTION_APPLIED = "direction_applied"
    PLAYER_REACTION = "player_reaction"
