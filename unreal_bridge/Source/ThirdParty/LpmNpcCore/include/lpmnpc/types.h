// lpm-npc portable core: plain C++17 types mirroring lpm_npc.v1 (no gRPC / protobuf headers).
//
// Every value here maps 1:1 onto a field of proto/lpm_npc/v1/lpm_npc.proto; enum numbers are the
// proto's numbers, so a cast is a conversion. Zero values keep the proto's meaning: "server default".
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lpmnpc {

enum class PixelFormat : int32_t { Unspecified = 0, RGBA8 = 1, BGRA8 = 2, JPEG = 3 };
enum class AudioChannel : int32_t { Unspecified = 0, Player = 1, Npc = 2 };
enum class Phase : int32_t { Unspecified = 0, Idle = 1, Listening = 2, Thinking = 3, Speaking = 4 };
enum class Emotion : int32_t {
  Unspecified = 0, Neutral = 1, Happy = 2, Sad = 3, Angry = 4, Surprised = 5, Afraid = 6, Disgusted = 7
};
enum class ControlAction : int32_t { Unspecified = 0, Interrupt = 1, Pause = 2, Resume = 3, SetOutput = 4 };

// Event.Type of the contract (1..11), plus events the client itself raises (100+).
enum class EventType : int32_t {
  Unspecified = 0,
  NpcSpeechStarted = 1,
  NpcSpeechEnded = 2,
  PlayerSpeechStarted = 3,
  PlayerSpeechEnded = 4,
  Interrupted = 5,
  Backchannel = 6,
  AudioLate = 7,
  Paused = 8,
  Resumed = 9,
  OutputChanged = 10,
  ServerDraining = 11,
  // Client-side: the connection itself.
  Connected = 100,      // SessionStarted received (detail = session id); also after a reconnect
  Reconnecting = 101,   // the stream broke; detail = "<grpc code> <message>; retry in N ms"
  Closed = 102,         // the stream ended normally (half-close finished, or Stop())
  Failed = 103,         // the stream ended for good; see PollErrors() / LastError()
};

const char* ToString(EventType type);

// grpc status code numbers used in Error::code (the contract carries them as numbers).
namespace code {
constexpr uint32_t kOk = 0, kCancelled = 1, kUnknown = 2, kInvalidArgument = 3, kDeadlineExceeded = 4,
                   kNotFound = 5, kAlreadyExists = 6, kPermissionDenied = 7, kResourceExhausted = 8,
                   kFailedPrecondition = 9, kAborted = 10, kOutOfRange = 11, kUnimplemented = 12,
                   kInternal = 13, kUnavailable = 14, kDataLoss = 15, kUnauthenticated = 16;
}

struct Frame {
  uint64_t index = 0;        // frame number since the server session started (gaps = dropped)
  int64_t pts_us = 0;        // presentation time on the client's session clock (see Session::ClockUs)
  int64_t pts_samples = 0;   // the same time in samples at npc_sample_rate
  int64_t server_pts_us = 0; // pts as sent by the server (restarts at 0 after a reconnect)
  uint32_t generation = 0;   // 0 for the first connection, +1 for every reconnect
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t stride = 0;       // bytes per row (0 for JPEG)
  PixelFormat format = PixelFormat::Unspecified;
  bool flip_y = false;
  std::vector<uint8_t> data;
};

struct RigFrame {
  uint64_t index = 0;
  int64_t pts_us = 0;        // client session clock, like Frame::pts_us
  uint32_t generation = 0;
  std::vector<float> weights;  // order = SessionInfo::rig_channel_names
  float head_yaw_deg = 0, head_pitch_deg = 0, head_roll_deg = 0;
  float gaze_x = 0, gaze_y = 0;
};

struct Event {
  EventType type = EventType::Unspecified;
  int64_t pts_us = 0;        // client session clock (server events), or ClockUs() when raised
  std::string detail;
};

struct Error {
  uint32_t code = 0;         // grpc status code number (3 = INVALID_ARGUMENT, 5 = NOT_FOUND, ...)
  std::string message;       // what went wrong and what to do
  bool fatal = false;        // false: the message was ignored and the session goes on
};

struct Stats {
  // From the server's periodic Stats message.
  float fps = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_dropped = 0;
  uint32_t queue_depth = 0;
  float latency_p50_ms = 0, latency_p95_ms = 0, render_ms = 0;
  float latency_p99_ms = 0;
  float render_batch_mean = 0;       // frames per renderer call (across sessions)
  float audio_ms = 0, motion_ms = 0, encode_ms = 0, transport_ms = 0;  // per frame, this interval
  int64_t pts_us = 0;
  // Client side.
  uint64_t frames_received = 0;   // all connections together
  uint64_t frames_skipped = 0;    // dropped by the jitter buffer (late, or over capacity)
  uint32_t reconnects = 0;        // successful reconnects
  uint32_t generation = 0;
};

struct SessionInfo {
  std::string session_id;
  std::string character_id;
  uint32_t fps = 0, width = 0, height = 0;
  PixelFormat pixel_format = PixelFormat::Unspecified;
  uint32_t lookahead_ms = 0;
  uint32_t npc_sample_rate = 0;
  std::string resume_token;
  std::vector<std::string> rig_channel_names;
  std::string server_version;
  uint32_t generation = 0;
};

struct SessionOptions {
  std::string address = "127.0.0.1:50051";  // host:port of `lpm-npc serve`
  // -- SessionConfig (0 / empty = server default) --
  std::string character_id = "default";
  uint32_t fps = 30;                 // 10,12,15,20,24,25,30,60
  uint32_t width = 512;              // 16..1024
  uint32_t height = 0;               // 0 = width
  PixelFormat pixel_format = PixelFormat::BGRA8;  // Unreal's PF_B8G8R8A8
  bool flip_y = false;
  bool alpha_matte = true;
  uint32_t jpeg_quality = 0;
  int32_t lookahead_ms = -1;         // < 0: leave unset (server default)
  bool send_rig = false;
  uint32_t stats_interval_ms = 0;
  uint32_t npc_sample_rate = 16000;
  std::string resume_token;          // continue an earlier session's motion/emotion state
  // -- client behaviour --
  bool auto_reconnect = true;        // reconnect with backoff when the server goes away
  uint32_t reconnect_initial_ms = 100;
  uint32_t reconnect_max_ms = 2000;
  double reconnect_multiplier = 2.0;
  uint32_t max_reconnect_attempts = 0;   // consecutive failed attempts before giving up; 0 = forever
  size_t jitter_capacity = 16;       // frames held for the playhead
  size_t max_pending_messages = 2048;  // outbound queue bound while disconnected (oldest audio dropped)
  size_t max_events = 1024;          // event / error queues bound (oldest dropped)
  int max_message_bytes = 32 * 1024 * 1024;
};

// Optional callbacks. They run on the session's network thread: keep them short and thread-safe.
// The game-thread way is polling (Session::PollFrame / PollEvents / PollErrors).
struct SessionCallbacks {
  std::function<void(const Event&)> on_event;
  std::function<void(const Error&)> on_error;
  std::function<void(const SessionInfo&)> on_started;
};

}  // namespace lpmnpc
