// lpm-npc portable core: one NPC session over the Perform gRPC stream.
//
// No gRPC or protobuf header is reachable from here (pImpl), so engine code that includes this
// file never sees them. All methods are thread-safe; the intended split is
//   * game thread: Send* / SetState / Interrupt ..., and once per tick PollFrame(playhead),
//     PollRigFrame(playhead), PollEvents(), PollErrors();
//   * one network thread inside the session: owns the stream, reconnects with backoff.
//
//   lpmnpc::SessionOptions o; o.address = "127.0.0.1:50051"; o.width = 256;
//   lpmnpc::Session s(o);
//   s.Start();
//   s.SendAudio(lpmnpc::AudioChannel::Npc, pcm, 16000, 1, s.ClockSamples(16000) + 3200, "Hello.");
//   lpmnpc::Frame f;
//   if (s.PollFrame(s.DefaultPlayheadUs(), &f)) upload(f);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lpmnpc/types.h"

namespace lpmnpc {

enum class SessionState : int32_t {
  Idle = 0,          // not started
  Connecting = 1,    // waiting for SessionStarted
  Streaming = 2,     // frames flowing
  Reconnecting = 3,  // the stream broke; backing off, then reconnecting with the resume token
  Closed = 4,        // ended normally (half-close finished, or Stop())
  Failed = 5,        // ended for good: LastError() says why
};

const char* ToString(SessionState state);

class Session {
 public:
  explicit Session(SessionOptions options, SessionCallbacks callbacks = {});
  ~Session();  // Stop()
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Start the network thread (connect, send the config). Returns false if already started.
  bool Start();
  // Half-close: the server finishes showing queued NPC speech, then ends the stream (-> Closed).
  void CloseSend();
  // Cancel the stream and join the network thread. Idempotent.
  void Stop();
  // Block until SessionStarted (true) or the session failed/closed/timed out (false).
  bool WaitStarted(int timeout_ms);
  // Block until the session is Closed or Failed.
  bool WaitFinished(int timeout_ms);

  // -- sending (queued; delivered in order; kept across a reconnect) -------------------------
  // PCM s16le. sample_index: position of the first sample on the session clock in samples at
  // `sample_rate` (sample 0 = pts 0 = ClockUs() 0); std::nullopt = right after the previous chunk.
  void SendAudio(AudioChannel channel, const int16_t* samples, size_t num_samples, uint32_t sample_rate,
                 uint32_t num_channels = 1, std::optional<int64_t> sample_index = std::nullopt,
                 const std::string& text = {});
  // Raw bytes as they are (for tests of bad input; normal code uses the int16 overload).
  void SendAudioBytes(AudioChannel channel, const std::string& pcm_bytes, uint32_t sample_rate,
                      uint32_t num_channels = 1, std::optional<int64_t> sample_index = std::nullopt,
                      const std::string& text = {});
  void SetState(Phase phase, Emotion emotion = Emotion::Unspecified, float intensity = 0.f,
                uint32_t transition_ms = 0, const std::string& direction = {});
  void Interrupt();
  void Pause();
  void Resume();
  void SetOutput(uint32_t width, uint32_t height, uint32_t fps);  // 0 = unchanged

  // -- receiving (game thread) ----------------------------------------------------------------
  // The newest frame with pts_us <= playhead_us that has not been returned yet; false = keep the
  // current one. Older frames are skipped.
  bool PollFrame(int64_t playhead_us, Frame* out);
  bool PollLatestFrame(Frame* out);
  bool PollRigFrame(int64_t playhead_us, RigFrame* out);
  std::vector<Event> PollEvents();
  std::vector<Error> PollErrors();

  // -- clock and state ------------------------------------------------------------------------
  // Microseconds since the first SessionStarted on a steady clock: the server's pts clock
  // (continued across reconnects). 0 before the session started.
  int64_t ClockUs() const;
  int64_t ClockSamples(uint32_t sample_rate) const;
  // Where to show frames without an audio playhead of your own: ClockUs() minus the server's
  // lookahead minus `margin_ms` (frames of pts P leave the server at about P + lookahead).
  int64_t DefaultPlayheadUs(int margin_ms = 60) const;

  SessionState State() const;
  SessionInfo Info() const;          // last SessionStarted (empty before)
  Stats GetStats() const;
  Error LastError() const;           // the error that ended the session (code 0 if none)
  std::string ResumeToken() const;   // current resume token (from SessionStarted)
  std::string LastConfigResumeToken() const;  // the resume_token sent in the latest SessionConfig

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lpmnpc
