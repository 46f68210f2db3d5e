"""Protobuf <-> runtime types. The only module in the server that knows both sides."""

from __future__ import annotations

from ..config import DEFAULT_CHARACTER_ID, OutputOptions, SessionOptions
from ..errors import InvalidInputError
from ..types import AudioChannel, Emotion, EventType, Phase, PixelFormat
from ..v1 import lpm_npc_pb2 as pb

PIXEL_FORMAT_FROM_PB = {
    pb.PIXEL_FORMAT_UNSPECIFIED: PixelFormat.RGBA8,
    pb.PIXEL_FORMAT_RGBA8: PixelFormat.RGBA8,
    pb.PIXEL_FORMAT_BGRA8: PixelFormat.BGRA8,
    pb.PIXEL_FORMAT_JPEG: PixelFormat.JPEG,
}
PIXEL_FORMAT_TO_PB = {
    PixelFormat.RGBA8: pb.PIXEL_FORMAT_RGBA8,
    PixelFormat.BGRA8: pb.PIXEL_FORMAT_BGRA8,
    PixelFormat.JPEG: pb.PIXEL_FORMAT_JPEG,
}
CHANNEL_FROM_PB = {pb.AUDIO_CHANNEL_PLAYER: AudioChannel.PLAYER, pb.AUDIO_CHANNEL_NPC: AudioChannel.NPC}
CHANNEL_TO_PB = {v: k for k, v in CHANNEL_FROM_PB.items()}
PHASE_FROM_PB = {
    pb.PHASE_UNSPECIFIED: None,
    pb.PHASE_IDLE: Phase.IDLE,
    pb.PHASE_LISTENING: Phase.LISTENING,
    pb.PHASE_THINKING: Phase.THINKING,
    pb.PHASE_SPEAKING: Phase.SPEAKING,
}
PHASE_TO_PB = {v: k for k, v in PHASE_FROM_PB.items() if v is not None}
EMOTION_FROM_PB = {
    pb.EMOTION_UNSPECIFIED: None,
    pb.EMOTION_NEUTRAL: Emotion.NEUTRAL,
    pb.EMOTION_HAPPY: Emotion.HAPPY,
    pb.EMOTION_SAD: Emotion.SAD,
    pb.EMOTION_ANGRY: Emotion.ANGRY,
    pb.EMOTION_SURPRISED: Emotion.SURPRISED,
    pb.EMOTION_AFRAID: Emotion.AFRAID,
    pb.EMOTION_DISGUSTED: Emotion.DISGUSTED,
}
EMOTION_TO_PB = {v: k for k, v in EMOTION_FROM_PB.items() if v is not None}
EVENT_TO_PB = {
    EventType.NPC_SPEECH_STARTED: pb.Event.TYPE_NPC_SPEECH_STARTED,
    EventType.NPC_SPEECH_ENDED: pb.Event.TYPE_NPC_SPEECH_ENDED,
    EventType.PLAYER_SPEECH_STARTED: pb.Event.TYPE_PLAYER_SPEECH_STARTED,
    EventType.PLAYER_SPEECH_ENDED: pb.Event.TYPE_PLAYER_SPEECH_ENDED,
    EventType.INTERRUPTED: pb.Event.TYPE_INTERRUPTED,
    EventType.BACKCHANNEL: pb.Event.TYPE_BACKCHANNEL,
    EventType.AUDIO_LATE: pb.Event.TYPE_AUDIO_LATE,
    EventType.PAUSED: pb.Event.TYPE_PAUSED,
    EventType.RESUMED: pb.Event.TYPE_RESUMED,
    EventType.OUTPUT_CHANGED: pb.Event.TYPE_OUTPUT_CHANGED,
    EventType.SERVER_DRAINING: pb.Event.TYPE_SERVER_DRAINING,
    EventType.THINKING_STARTED: pb.Event.TYPE_THINKING_STARTED,
    EventType.DIRECTION_APPLIED: pb.Event.TYPE_DIRECTION_APPLIED,
    EventType.PLAYER_REACTION: pb.Event.TYPE_PLAYER_REACTION,
}
EVENT_FROM_PB = {v: k for k, v in EVENT_TO_PB.items()}
RIG_FORMAT_FROM_PB = {pb.RIG_FORMAT_UNSPECIFIED: "arkit52", pb.RIG_FORMAT_ARKIT52: "arkit52",
                      pb.RIG_FORMAT_NATIVE: "native"}
RIG_FORMAT_TO_PB = {"arkit52": pb.RIG_FORMAT_ARKIT52, "native": pb.RIG_FORMAT_NATIVE}


def session_options_from_pb(cfg: pb.SessionConfig, default_lookahead_ms: int = 80) -> SessionOptions:
    """SessionConfig -> validated SessionOptions; zero values mean 'the documented default'."""
    if cfg.rig_format not in RIG_FORMAT_FROM_PB:
        raise InvalidInputError(f"unknown rig_format {cfg.rig_format}: use RIG_FORMAT_ARKIT52 or RIG_FORMAT_NATIVE.")
    if cfg.pixel_format not in PIXEL_FORMAT_FROM_PB:
        raise InvalidInputError(f"unknown pixel_format {cfg.pixel_format}; use RGBA8, BGRA8 or JPEG.")
    width = cfg.width or 512
    output = OutputOptions(
        fps=cfg.fps or 30,
        width=width,
        height=cfg.height or width,
        pixel_format=PIXEL_FORMAT_FROM_PB[cfg.pixel_format],
        flip_y=cfg.flip_y,
        alpha_matte=cfg.alpha_matte,
        jpeg_quality=cfg.jpeg_quality or 85,
    )
    return SessionOptions(
        character_id=cfg.character_id or DEFAULT_CHARACTER_ID,
        output=output,
        lookahead_ms=cfg.lookahead_ms if cfg.HasField("lookahead_ms") else default_lookahead_ms,
        send_rig=cfg.send_rig,
        rig_format=RIG_FORMAT_FROM_PB[cfg.rig_format],
        stats_interval_ms=cfg.stats_interval_ms or 1000,
        npc_sample_rate=cfg.npc_sample_rate or 16000,
        resume_token=cfg.resume_token,
    ).validated()


def session_config_to_pb(options: SessionOptions) -> pb.SessionConfig:
    out = options.output
    return pb.SessionConfig(
        character_id=options.character_id,
        fps=out.fps,
        width=out.width,
        height=out.height,
        pixel_format=PIXEL_FORMAT_TO_PB[out.pixel_format],
        flip_y=out.flip_y,
        alpha_matte=out.alpha_matte,
        jpeg_quality=out.jpeg_quality,
        lookahead_ms=options.lookahead_ms,
        send_rig=options.send_rig,
        rig_format=RIG_FORMAT_TO_PB[options.rig_format],
        stats_interval_ms=options.stats_interval_ms,
        npc_sample_rate=options.npc_sample_rate,
        resume_token=options.resume_token,
    )


def direction_result_pb(result) -> pb.DirectionResult:
    """A DirectionResult (performance/direction.py) as the contract's message."""
    return pb.DirectionResult(
        text=result.text,
        matches=[pb.DirectionMatch(name=m.name, confidence=float(m.confidence), weight=float(m.weight))
                 for m in result.matches],
        pts_us=int(round(result.start_s * 1e6)),
        duration_ms=int(round(max(0.0, result.duration_s) * 1000)),
    )
