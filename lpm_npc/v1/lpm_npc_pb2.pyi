from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGBA8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_BGRA8: _ClassVar[PixelFormat]
    PIXEL_FORMAT_JPEG: _ClassVar[PixelFormat]

class AudioChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_CHANNEL_UNSPECIFIED: _ClassVar[AudioChannel]
    AUDIO_CHANNEL_PLAYER: _ClassVar[AudioChannel]
    AUDIO_CHANNEL_NPC: _ClassVar[AudioChannel]

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_IDLE: _ClassVar[Phase]
    PHASE_LISTENING: _ClassVar[Phase]
    PHASE_THINKING: _ClassVar[Phase]
    PHASE_SPEAKING: _ClassVar[Phase]

class RigFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RIG_FORMAT_UNSPECIFIED: _ClassVar[RigFormat]
    RIG_FORMAT_ARKIT52: _ClassVar[RigFormat]
    RIG_FORMAT_NATIVE: _ClassVar[RigFormat]

class Emotion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMOTION_UNSPECIFIED: _ClassVar[Emotion]
    EMOTION_NEUTRAL: _ClassVar[Emotion]
    EMOTION_HAPPY: _ClassVar[Emotion]
    EMOTION_SAD: _ClassVar[Emotion]
    EMOTION_ANGRY: _ClassVar[Emotion]
    EMOTION_SURPRISED: _ClassVar[Emotion]
    EMOTION_AFRAID: _ClassVar[Emotion]
    EMOTION_DISGUSTED: _ClassVar[Emotion]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGBA8: PixelFormat
PIXEL_FORMAT_BGRA8: PixelFormat
PIXEL_FORMAT_JPEG: PixelFormat
AUDIO_CHANNEL_UNSPECIFIED: AudioChannel
AUDIO_CHANNEL_PLAYER: AudioChannel
AUDIO_CHANNEL_NPC: AudioChannel
PHASE_UNSPECIFIED: Phase
PHASE_IDLE: Phase
PHASE_LISTENING: Phase
PHASE_THINKING: Phase
PHASE_SPEAKING: Phase
RIG_FORMAT_UNSPECIFIED: RigFormat
RIG_FORMAT_ARKIT52: RigFormat
RIG_FORMAT_NATIVE: RigFormat
EMOTION_UNSPECIFIED: Emotion
EMOTION_NEUTRAL: Emotion
EMOTION_HAPPY: Emotion
EMOTION_SAD: Emotion
EMOTION_ANGRY: Emotion
EMOTION_SURPRISED: Emotion
EMOTION_AFRAID: Emotion
EMOTION_DISGUSTED: Emotion

class SessionConfig(_message.Message):
    __slots__ = ("character_id", "fps", "width", "height", "pixel_format", "flip_y", "alpha_matte", "jpeg_quality", "lookahead_ms", "send_rig", "stats_interval_ms", "npc_sample_rate", "resume_token", "rig_format")
    CHARACTER_ID_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FLIP_Y_FIELD_NUMBER: _ClassVar[int]
    ALPHA_MATTE_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    SEND_RIG_FIELD_NUMBER: _ClassVar[int]
    STATS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    NPC_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RIG_FORMAT_FIELD_NUMBER: _ClassVar[int]
    character_id: str
    fps: int
    width: int
    height: int
    pixel_format: PixelFormat
    flip_y: bool
    alpha_matte: bool
    jpeg_quality: int
    lookahead_ms: int
    send_rig: bool
    stats_interval_ms: int
    npc_sample_rate: int
    resume_token: str
    rig_format: RigFormat
    def __init__(self, character_id: _Optional[str] = ..., fps: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ..., flip_y: bool = ..., alpha_matte: bool = ..., jpeg_quality: _Optional[int] = ..., lookahead_ms: _Optional[int] = ..., send_rig: bool = ..., stats_interval_ms: _Optional[int] = ..., npc_sample_rate: _Optional[int] = ..., resume_token: _Optional[str] = ..., rig_format: _Optional[_Union[RigFormat, str]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("channel", "pcm", "sample_rate", "num_channels", "sample_index", "text")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    NUM_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    channel: AudioChannel
    pcm: bytes
    sample_rate: int
    num_channels: int
    sample_index: int
    text: str
    def __init__(self, channel: _Optional[_Union[AudioChannel, str]] = ..., pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., num_channels: _Optional[int] = ..., sample_index: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class DialogueState(_message.Message):
    __slots__ = ("phase", "emotion", "intensity", "transition_ms", "direction")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_MS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    phase: Phase
    emotion: Emotion
    intensity: float
    transition_ms: int
    direction: str
    def __init__(self, phase: _Optional[_Union[Phase, str]] = ..., emotion: _Optional[_Union[Emotion, str]] = ..., intensity: _Optional[float] = ..., transition_ms: _Optional[int] = ..., direction: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("action", "width", "height", "fps")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[Control.Action]
        ACTION_INTERRUPT: _ClassVar[Control.Action]
        ACTION_PAUSE: _ClassVar[Control.Action]
        ACTION_RESUME: _ClassVar[Control.Action]
        ACTION_SET_OUTPUT: _ClassVar[Control.Action]
    ACTION_UNSPECIFIED: Control.Action
    ACTION_INTERRUPT: Control.Action
    ACTION_PAUSE: Control.Action
    ACTION_RESUME: Control.Action
    ACTION_SET_OUTPUT: Control.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    action: Control.Action
    width: int
    height: int
    fps: int
    def __init__(self, action: _Optional[_Union[Control.Action, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("config", "audio", "state", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    audio: AudioChunk
    state: DialogueState
    control: Control
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., state: _Optional[_Union[DialogueState, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "character_id", "fps", "width", "height", "pixel_format", "lookahead_ms", "npc_sample_rate", "resume_token", "rig_channel_names", "server_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHARACTER_ID_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    NPC_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RIG_CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    character_id: str
    fps: int
    width: int
    height: int
    pixel_format: PixelFormat
    lookahead_ms: int
    npc_sample_rate: int
    resume_token: str
    rig_channel_names: _containers.RepeatedScalarFieldContainer[str]
    server_version: str
    def __init__(self, session_id: _Optional[str] = ..., character_id: _Optional[str] = ..., fps: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_format: _Optional[_Union[PixelFormat, str]] = ..., lookahead_ms: _Optional[int] = ..., npc_sample_rate: _Optional[int] = ..., resume_token: _Optional[str] = ..., rig_channel_names: _Optional[_Iterable[str]] = ..., server_version: _Optional[str] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("index", "pts_us", "pts_samples", "width", "height", "stride", "format", "flip_y", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    PTS_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FLIP_Y_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    pts_us: int
    pts_samples: int
    width: int
    height: int
    stride: int
    format: PixelFormat
    flip_y: bool
    data: bytes
    def __init__(self, index: _Optional[int] = ..., pts_us: _Optional[int] = ..., pts_samples: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., stride: _Optional[int] = ..., format: _Optional[_Union[PixelFormat, str]] = ..., flip_y: bool = ..., data: _Optional[bytes] = ...) -> None: ...

class RigFrame(_message.Message):
    __slots__ = ("index", "pts_us", "weights", "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "gaze_x", "gaze_y", "pts_samples", "gaze_yaw_deg", "gaze_pitch_deg")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    HEAD_YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    HEAD_PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    HEAD_ROLL_DEG_FIELD_NUMBER: _ClassVar[int]
    GAZE_X_FIELD_NUMBER: _ClassVar[int]
    GAZE_Y_FIELD_NUMBER: _ClassVar[int]
    PTS_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GAZE_YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    GAZE_PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    index: int
    pts_us: int
    weights: _containers.RepeatedScalarFieldContainer[float]
    head_yaw_deg: float
    head_pitch_deg: float
    head_roll_deg: float
    gaze_x: float
    gaze_y: float
    pts_samples: int
    gaze_yaw_deg: float
    gaze_pitch_deg: float
    def __init__(self, index: _Optional[int] = ..., pts_us: _Optional[int] = ..., weights: _Optional[_Iterable[float]] = ..., head_yaw_deg: _Optional[float] = ..., head_pitch_deg: _Optional[float] = ..., head_roll_deg: _Optional[float] = ..., gaze_x: _Optional[float] = ..., gaze_y: _Optional[float] = ..., pts_samples: _Optional[int] = ..., gaze_yaw_deg: _Optional[float] = ..., gaze_pitch_deg: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "pts_us", "detail")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Event.Type]
        TYPE_NPC_SPEECH_STARTED: _ClassVar[Event.Type]
        TYPE_NPC_SPEECH_ENDED: _ClassVar[Event.Type]
        TYPE_PLAYER_SPEECH_STARTED: _ClassVar[Event.Type]
        TYPE_PLAYER_SPEECH_ENDED: _ClassVar[Event.Type]
        TYPE_INTERRUPTED: _ClassVar[Event.Type]
        TYPE_BACKCHANNEL: _ClassVar[Event.Type]
        TYPE_AUDIO_LATE: _ClassVar[Event.Type]
        TYPE_PAUSED: _ClassVar[Event.Type]
        TYPE_RESUMED: _ClassVar[Event.Type]
        TYPE_OUTPUT_CHANGED: _ClassVar[Event.Type]
        TYPE_SERVER_DRAINING: _ClassVar[Event.Type]
        TYPE_THINKING_STARTED: _ClassVar[Event.Type]
        TYPE_DIRECTION_APPLIED: _ClassVar[Event.Type]
        TYPE_PLAYER_REACTION: _ClassVar[Event.Type]
    TYPE_UNSPECIFIED: Event.Type
    TYPE_NPC_SPEECH_STARTED: Event.Type
    TYPE_NPC_SPEECH_ENDED: Event.Type
    TYPE_PLAYER_SPEECH_STARTED: Event.Type
    TYPE_PLAYER_SPEECH_ENDED: Event.Type
    TYPE_INTERRUPTED: Event.Type
    TYPE_BACKCHANNEL: Event.Type
    TYPE_AUDIO_LATE: Event.Type
    TYPE_PAUSED: Event.Type
    TYPE_RESUMED: Event.Type
    TYPE_OUTPUT_CHANGED: Event.Type
    TYPE_SERVER_DRAINING: Event.Type
    TYPE_THINKING_STARTED: Event.Type
    TYPE_DIRECTION_APPLIED: Event.Type
    TYPE_PLAYER_REACTION: Event.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    type: Event.Type
    pts_us: int
    detail: str
    def __init__(self, type: _Optional[_Union[Event.Type, str]] = ..., pts_us: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("fps", "frames_sent", "frames_dropped", "queue_depth", "latency_p50_ms", "latency_p95_ms", "render_ms", "pts_us", "latency_p99_ms", "render_batch_mean", "audio_ms", "motion_ms", "encode_ms", "transport_ms")
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    RENDER_BATCH_MEAN_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    MOTION_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_MS_FIELD_NUMBER: _ClassVar[int]
    fps: float
    frames_sent: int
    frames_dropped: int
    queue_depth: int
    latency_p50_ms: float
    latency_p95_ms: float
    render_ms: float
    pts_us: int
    latency_p99_ms: float
    render_batch_mean: float
    audio_ms: float
    motion_ms: float
    encode_ms: float
    transport_ms: float
    def __init__(self, fps: _Optional[float] = ..., frames_sent: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., queue_depth: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., render_ms: _Optional[float] = ..., pts_us: _Optional[int] = ..., latency_p99_ms: _Optional[float] = ..., render_batch_mean: _Optional[float] = ..., audio_ms: _Optional[float] = ..., motion_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., transport_ms: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "fatal")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    fatal: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., fatal: bool = ...) -> None: ...

class DirectionMatch(_message.Message):
    __slots__ = ("name", "confidence", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    confidence: float
    weight: float
    def __init__(self, name: _Optional[str] = ..., confidence: _Optional[float] = ..., weight: _Optional[float] = ...) -> None: ...

class DirectionResult(_message.Message):
    __slots__ = ("text", "matches", "pts_us", "duration_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    matches: _containers.RepeatedCompositeFieldContainer[DirectionMatch]
    pts_us: int
    duration_ms: int
    def __init__(self, text: _Optional[str] = ..., matches: _Optional[_Iterable[_Union[DirectionMatch, _Mapping]]] = ..., pts_us: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("started", "frame", "rig", "event", "stats", "error", "direction")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    RIG_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    started: SessionStarted
    frame: VideoFrame
    rig: RigFrame
    event: Event
    stats: Stats
    error: Error
    direction: DirectionResult
    def __init__(self, started: _Optional[_Union[SessionStarted, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., rig: _Optional[_Union[RigFrame, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., direction: _Optional[_Union[DirectionResult, _Mapping]] = ...) -> None: ...

class RegisterCharacterRequest(_message.Message):
    __slots__ = ("portrait", "extra_references", "display_name")
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    portrait: bytes
    extra_references: _containers.RepeatedScalarFieldContainer[bytes]
    display_name: str
    def __init__(self, portrait: _Optional[bytes] = ..., extra_references: _Optional[_Iterable[bytes]] = ..., display_name: _Optional[str] = ...) -> None: ...

class CharacterInfo(_message.Message):
    __slots__ = ("character_id", "display_name", "width", "height", "num_references", "face_score", "builtin", "references_used")
    CHARACTER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    FACE_SCORE_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_USED_FIELD_NUMBER: _ClassVar[int]
    character_id: str
    display_name: str
    width: int
    height: int
    num_references: int
    face_score: float
    builtin: bool
    references_used: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, character_id: _Optional[str] = ..., display_name: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_references: _Optional[int] = ..., face_score: _Optional[float] = ..., builtin: bool = ..., references_used: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterCharacterResponse(_message.Message):
    __slots__ = ("character", "cached")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    character: CharacterInfo
    cached: bool
    def __init__(self, character: _Optional[_Union[CharacterInfo, _Mapping]] = ..., cached: bool = ...) -> None: ...

class ListCharactersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCharactersResponse(_message.Message):
    __slots__ = ("characters",)
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    characters: _containers.RepeatedCompositeFieldContainer[CharacterInfo]
    def __init__(self, characters: _Optional[_Iterable[_Union[CharacterInfo, _Mapping]]] = ...) -> None: ...

class DeleteCharacterRequest(_message.Message):
    __slots__ = ("character_id",)
    CHARACTER_ID_FIELD_NUMBER: _ClassVar[int]
    character_id: str
    def __init__(self, character_id: _Optional[str] = ...) -> None: ...

class DeleteCharacterResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "backends", "active_backend", "max_sessions", "active_sessions", "max_width", "max_height", "supported_fps", "max_message_bytes", "capacity_pixels_per_s", "committed_pixels_per_s")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_PIXELS_PER_S_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_PIXELS_PER_S_FIELD_NUMBER: _ClassVar[int]
    version: str
    backends: _containers.RepeatedScalarFieldContainer[str]
    active_backend: str
    max_sessions: int
    active_sessions: int
    max_width: int
    max_height: int
    supported_fps: _containers.RepeatedScalarFieldContainer[int]
    max_message_bytes: int
    capacity_pixels_per_s: int
    committed_pixels_per_s: int
    def __init__(self, version: _Optional[str] = ..., backends: _Optional[_Iterable[str]] = ..., active_backend: _Optional[str] = ..., max_sessions: _Optional[int] = ..., active_sessions: _Optional[int] = ..., max_width: _Optional[int] = ..., max_height: _Optional[int] = ..., supported_fps: _Optional[_Iterable[int]] = ..., max_message_bytes: _Optional[int] = ..., capacity_pixels_per_s: _Optional[int] = ..., committed_pixels_per_s: _Optional[int] = ...) -> None: ...
