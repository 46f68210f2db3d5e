// One NPC session over lpm_npc.v1.NpcService/Perform: a network thread owns the stream (reader),
// a writer thread per connection drains the outbound queue, and the game thread polls.
#include "lpmnpc/session.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "lpm_npc/v1/lpm_npc.grpc.pb.h"
#include "lpmnpc/jitter_buffer.h"

namespace lpmnpc {
namespace pb = ::lpm_npc::v1;
using Clock = std::chrono::steady_clock;

const char* ToString(EventType type) {
  switch (type) {
    case EventType::Unspecified: return "UNSPECIFIED";
    case EventType::NpcSpeechStarted: return "NPC_SPEECH_STARTED";
    case EventType::NpcSpeechEnded: return "NPC_SPEECH_ENDED";
    case EventType::PlayerSpeechStarted: return "PLAYER_SPEECH_STARTED";
    case EventType::PlayerSpeechEnded: return "PLAYER_SPEECH_ENDED";
    case EventType::Interrupted: return "INTERRUPTED";
    case EventType::Backchannel: return "BACKCHANNEL";
    case EventType::AudioLate: return "AUDIO_LATE";
    case EventType::Paused: return "PAUSED";
    case EventType::Resumed: return "RESUMED";
    case EventType::OutputChanged: return "OUTPUT_CHANGED";
    case EventType::ServerDraining: return "SERVER_DRAINING";
    case EventType::Connected: return "CONNECTED";
    case EventType::Reconnecting: return "RECONNECTING";
    case EventType::Closed: return "CLOSED";
    case EventType::Failed: return "FAILED";
  }
  return "UNKNOWN";
}

const char* ToString(SessionState state) {
  switch (state) {
    case SessionState::Idle: return "Idle";
    case SessionState::Connecting: return "Connecting";
    case SessionState::Streaming: return "Streaming";
    case SessionState::Reconnecting: return "Reconnecting";
    case SessionState::Closed: return "Closed";
    case SessionState::Failed: return "Failed";
  }
  return "Unknown";
}

namespace {

bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:  // not by us: Stop() is checked before this
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // at capacity now; may free up
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:  // NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, UNIMPLEMENTED, auth ...: retrying cannot help
      return false;
  }
}

template <class T>
void PushBounded(std::deque<T>& q, T item, size_t cap) {
  q.push_back(std::move(item));
  while (q.size() > std::max<size_t>(cap, 1)) q.pop_front();
}

}  // namespace

struct Session::Impl {
  SessionOptions opts;
  SessionCallbacks cb;

  mutable std::mutex mu;
  std::condition_variable cv;

  // Outbound, in game-clock terms (sample_index translated per connection when written).
  std::deque<pb::ClientMessage> out;
  bool half_close_requested = false;
  bool stop = false;
  bool writer_stop = false;
  bool conn_started = false;  // SessionStarted received on the current connection
  std::optional<pb::DialogueState> last_state;
  bool paused = false;

  // Inbound.
  JitterBuffer frames;
  RigBuffer rigs;
  std::deque<Event> events;
  std::deque<Error> errors;
  SessionInfo info;
  Stats stats;
  Error last_error;
  SessionState state = SessionState::Idle;
  std::string resume_token;
  std::string last_config_token;

  // Clock: the first SessionStarted is t = 0; later connections are offset to continue it.
  bool have_clock = false;
  Clock::time_point clock0;
  int64_t offset_us = 0;
  uint32_t generation = 0;
  bool ever_started = false;

  grpc::ClientContext* ctx = nullptr;
  std::thread worker;
  bool thread_started = false;
  std::mt19937 rng{std::random_device{}()};

  explicit Impl(SessionOptions o, SessionCallbacks c)
      : opts(std::move(o)), cb(std::move(c)), frames(opts.jitter_capacity), rigs(opts.jitter_capacity) {}

  int64_t NowUsLocked() const {
    if (!have_clock) return 0;
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - clock0).count();
  }

  void EmitEventLocked(Event ev, std::vector<Event>* to_callback) {
    if (cb.on_event) to_callback->push_back(ev);
    PushBounded(events, std::move(ev), opts.max_events);
  }

  void EmitErrorLocked(Error e, std::vector<Error>* to_callback) {
    if (e.fatal) last_error = e;
    if (cb.on_error) to_callback->push_back(e);
    PushBounded(errors, std::move(e), opts.max_events);
  }

  void RunCallbacks(const std::vector<Event>& evs, const std::vector<Error>& errs) {
    for (const auto& e : errs) cb.on_error(e);
    for (const auto& e : evs) cb.on_event(e);
  }

  void Enqueue(pb::ClientMessage msg) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (half_close_requested || stop) return;
      out.push_back(std::move(msg));
      if (out.size() > opts.max_pending_messages) {
        // Realtime audio goes stale first; drop the oldest chunk (or the oldest message).
        auto it = std::find_if(out.begin(), out.end(), [](const pb::ClientMessage& m) { return m.has_audio(); });
        out.erase(it != out.end() ? it : out.begin());
      }
    }
    cv.notify_all();
  }

  pb::ClientMessage BuildConfigLocked() {
    pb::ClientMessage msg;
    pb::SessionConfig* c = msg.mutable_config();
    c->set_character_id(opts.character_id);
    c->set_fps(opts.fps);
    c->set_width(opts.width);
    c->set_height(opts.height);
    c->set_pixel_format(static_cast<pb::PixelFormat>(opts.pixel_format));
    c->set_flip_y(opts.flip_y);
    c->set_alpha_matte(opts.alpha_matte);
    c->set_jpeg_quality(opts.jpeg_quality);
    if (opts.lookahead_ms >= 0) c->set_lookahead_ms(static_cast<uint32_t>(opts.lookahead_ms));
    c->set_send_rig(opts.send_rig);
    c->set_stats_interval_ms(opts.stats_interval_ms);
    c->set_npc_sample_rate(opts.npc_sample_rate);
    const std::string& token = resume_token.empty() ? opts.resume_token : resume_token;
    c->set_resume_token(token);
    last_config_token = token;
    return msg;
  }

  // Map a game-clock sample_index onto the current server session (which restarted at 0).
  // Returns false when nothing of the chunk is left to send.
  bool TranslateLocked(pb::ClientMessage* msg) const {
    if (!msg->has_audio() || !msg->audio().has_sample_index() || offset_us == 0) return true;
    pb::AudioChunk* a = msg->mutable_audio();
    const int64_t rate = a->sample_rate();
    const int64_t shift = static_cast<int64_t>(std::llround(static_cast<double>(offset_us) * rate / 1e6));
    int64_t idx = a->sample_index() - shift;
    if (idx < 0) {
      const size_t frame_bytes = 2u * std::max<uint32_t>(1u, a->num_channels());
      const size_t cut = static_cast<size_t>(-idx) * frame_bytes;
      if (cut >= a->pcm().size()) return false;
      a->set_pcm(a->pcm().substr(cut));
      idx = 0;
    }
    a->set_sample_index(idx);
    return true;
  }

  void WriterLoop(grpc::ClientReaderWriter<pb::ClientMessage, pb::ServerMessage>* stream) {
    bool writes_done = false;
    for (;;) {
      pb::ClientMessage msg;
      bool do_writes_done = false;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return writer_stop || stop ||
                 (conn_started && (!out.empty() || (half_close_requested && !writes_done)));
        });
        if (writer_stop || stop) return;
        if (!out.empty()) {
          msg = std::move(out.front());
          out.pop_front();
          if (!TranslateLocked(&msg)) continue;
        } else {
          do_writes_done = true;
          writes_done = true;
        }
      }
      if (do_writes_done) {
        stream->WritesDone();
        return;
      }
      if (!stream->Write(msg)) return;  // the stream is broken; the reader sees why
    }
  }

  void Dispatch(const pb::ServerMessage& m) {
    std::vector<Event> evs;
    std::vector<Error> errs;
    std::optional<SessionInfo> started_info;
    {
      std::lock_guard<std::mutex> lock(mu);
      switch (m.msg_case()) {
        case pb::ServerMessage::kStarted: {
          const auto& s = m.started();
          const auto now = Clock::now();
          if (!have_clock) {
            have_clock = true;
            clock0 = now;
            offset_us = 0;
          } else {
            offset_us = std::chrono::duration_cast<std::chrono::microseconds>(now - clock0).count();
            ++generation;
            ++stats.reconnects;
          }
          info.session_id = s.session_id();
          info.character_id = s.character_id();
          info.fps = s.fps();
          info.width = s.width();
          info.height = s.height();
          info.pixel_format = static_cast<PixelFormat>(s.pixel_format());
          info.lookahead_ms = s.lookahead_ms();
          info.npc_sample_rate = s.npc_sample_rate();
          info.resume_token = s.resume_token();
          info.rig_channel_names.assign(s.rig_channel_names().begin(), s.rig_channel_names().end());
          info.server_version = s.server_version();
          info.generation = generation;
          stats.generation = generation;
          if (!s.resume_token().empty()) resume_token = s.resume_token();
          // Re-apply sticky state on a new server session, before anything else queued.
          if (ever_started) {
            if (last_state) {
              pb::ClientMessage st;
              *st.mutable_state() = *last_state;
              out.push_front(std::move(st));
            }
            if (paused) {
              pb::ClientMessage p;
              p.mutable_control()->set_action(pb::Control::ACTION_PAUSE);
              out.push_front(std::move(p));
            }
          }
          ever_started = true;
          conn_started = true;
          state = SessionState::Streaming;
          EmitEventLocked({EventType::Connected, NowUsLocked(), info.session_id}, &evs);
          if (cb.on_started) started_info = info;
          break;
        }
        case pb::ServerMessage::kFrame: {
          const auto& f = m.frame();
          Frame fr;
          fr.index = f.index();
          fr.server_pts_us = f.pts_us();
          fr.pts_us = f.pts_us() + offset_us;
          fr.pts_samples = f.pts_samples() +
                           static_cast<int64_t>(std::llround(static_cast<double>(offset_us) * info.npc_sample_rate / 1e6));
          fr.generation = generation;
          fr.width = f.width();
          fr.height = f.height();
          fr.stride = f.stride();
          fr.format = static_cast<PixelFormat>(f.format());
          fr.flip_y = f.flip_y();
          fr.data.assign(f.data().begin(), f.data().end());
          ++stats.frames_received;
          frames.Push(std::move(fr));
          break;
        }
        case pb::ServerMessage::kRig: {
          const auto& r = m.rig();
          RigFrame rf;
          rf.index = r.index();
          rf.pts_us = r.pts_us() + offset_us;
          rf.generation = generation;
          rf.weights.assign(r.weights().begin(), r.weights().end());
          rf.head_yaw_deg = r.head_yaw_deg();
          rf.head_pitch_deg = r.head_pitch_deg();
          rf.head_roll_deg = r.head_roll_deg();
          rf.gaze_x = r.gaze_x();
          rf.gaze_y = r.gaze_y();
          rigs.Push(std::move(rf));
          break;
        }
        case pb::ServerMessage::kEvent: {
          const auto& e = m.event();
          EmitEventLocked({static_cast<EventType>(e.type()), e.pts_us() + offset_us, e.detail()}, &evs);
          break;
        }
        case pb::ServerMessage::kStats: {
          const auto& s = m.stats();
          stats.fps = s.fps();
          stats.frames_sent = s.frames_sent();
          stats.frames_dropped = s.frames_dropped();
          stats.queue_depth = s.queue_depth();
          stats.latency_p50_ms = s.latency_p50_ms();
          stats.latency_p95_ms = s.latency_p95_ms();
          stats.render_ms = s.render_ms();
          stats.latency_p99_ms = s.latency_p99_ms();
          stats.render_batch_mean = s.render_batch_mean();
          stats.audio_ms = s.audio_ms();
          stats.motion_ms = s.motion_ms();
          stats.encode_ms = s.encode_ms();
          stats.transport_ms = s.transport_ms();
          stats.pts_us = s.pts_us() + offset_us;
          break;
        }
        case pb::ServerMessage::kError: {
          const auto& e = m.error();
          EmitErrorLocked({e.code(), e.message(), e.fatal()}, &errs);
          break;
        }
        default:
          break;
      }
    }
    cv.notify_all();
    if (started_info) cb.on_started(*started_info);
    RunCallbacks(evs, errs);
  }

  void Run() {
    uint32_t attempt = 0;
    for (;;) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(opts.max_message_bytes);
      args.SetMaxSendMessageSize(opts.max_message_bytes);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      // Our own backoff decides when to retry: do not let a shared subchannel's backoff delay it.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(opts.reconnect_initial_ms));
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(opts.reconnect_initial_ms));
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(opts.reconnect_max_ms));
      auto channel = grpc::CreateCustomChannel(opts.address, grpc::InsecureChannelCredentials(), args);
      auto stub = pb::NpcService::NewStub(channel);
      grpc::ClientContext ctx;
      pb::ClientMessage config;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) break;
        ctx_ptr_set(&ctx);
        last_error = Error{};
        conn_started = false;
        writer_stop = false;
        if (state != SessionState::Reconnecting) state = SessionState::Connecting;
        config = BuildConfigLocked();
      }
      auto stream = stub->Perform(&ctx);
      std::thread writer;
      if (stream->Write(config)) {
        writer = std::thread([this, s = stream.get()] { WriterLoop(s); });
        pb::ServerMessage m;
        while (stream->Read(&m)) {
          if (m.has_started()) attempt = 0;  // connected: the backoff starts over
          Dispatch(m);
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        writer_stop = true;
      }
      cv.notify_all();
      if (writer.joinable()) writer.join();
      grpc::Status status = stream->Finish();

      std::vector<Event> evs;
      std::vector<Error> errs;
      bool done = false;
      uint32_t delay_ms = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        ctx_ptr_set(nullptr);
        conn_started = false;
        const bool fatal_seen = last_error.fatal;
        if (stop) {
          state = SessionState::Closed;
          EmitEventLocked({EventType::Closed, NowUsLocked(), "stopped"}, &evs);
          done = true;
        } else if (half_close_requested && status.ok()) {
          state = SessionState::Closed;
          EmitEventLocked({EventType::Closed, NowUsLocked(), "the server finished the session"}, &evs);
          done = true;
        } else {
          const bool retry = opts.auto_reconnect && !half_close_requested &&
                             (status.ok() ? !fatal_seen : Retryable(status.error_code())) &&
                             (opts.max_reconnect_attempts == 0 || attempt < opts.max_reconnect_attempts);
          const uint32_t code = static_cast<uint32_t>(status.error_code());
          std::string why = status.ok() ? std::string("the server ended the stream")
                                        : status.error_message();
          if (!retry) {
            Error e;
            e.code = status.ok() ? (fatal_seen ? last_error.code : code::kUnavailable) : code;
            e.message = status.ok() && fatal_seen ? last_error.message
                                                  : "Perform stream to " + opts.address + " ended: " + why;
            e.fatal = true;
            EmitErrorLocked(e, &errs);
            state = SessionState::Failed;
            EmitEventLocked({EventType::Failed, NowUsLocked(), e.message}, &evs);
            done = true;
          } else {
            double d = opts.reconnect_initial_ms * std::pow(opts.reconnect_multiplier, attempt);
            d = std::min<double>(d, opts.reconnect_max_ms);
            std::uniform_real_distribution<double> jitter(0.8, 1.2);
            delay_ms = static_cast<uint32_t>(std::max(1.0, d * jitter(rng)));
            ++attempt;
            state = SessionState::Reconnecting;
            EmitEventLocked({EventType::Reconnecting, NowUsLocked(),
                             std::to_string(code) + " " + why + "; retry " + std::to_string(attempt) +
                                 " in " + std::to_string(delay_ms) + " ms"},
                            &evs);
          }
        }
      }
      cv.notify_all();
      RunCallbacks(evs, errs);
      if (done) break;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(delay_ms), [&] { return stop; });
      if (stop) {
        state = SessionState::Closed;
        std::vector<Event> evs2;
        EmitEventLocked({EventType::Closed, NowUsLocked(), "stopped"}, &evs2);
        lock.unlock();
        cv.notify_all();
        RunCallbacks(evs2, {});
        break;
      }
    }
  }

  void ctx_ptr_set(grpc::ClientContext* c) { ctx = c; }
};

Session::Session(SessionOptions options, SessionCallbacks callbacks)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(callbacks))) {}

Session::~Session() { Stop(); }

bool Session::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->thread_started) return false;
  impl_->thread_started = true;
  impl_->state = SessionState::Connecting;
  impl_->worker = std::thread([this] { impl_->Run(); });
  return true;
}

void Session::CloseSend() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->half_close_requested = true;
  }
  impl_->cv.notify_all();
}

void Session::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
    if (impl_->ctx) impl_->ctx->TryCancel();
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

bool Session::WaitStarted(int timeout_ms) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return impl_->ever_started || impl_->state == SessionState::Failed || impl_->state == SessionState::Closed;
  });
  return impl_->ever_started;
}

bool Session::WaitFinished(int timeout_ms) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return impl_->state == SessionState::Failed || impl_->state == SessionState::Closed;
  });
}

void Session::SendAudio(AudioChannel channel, const int16_t* samples, size_t num_samples, uint32_t sample_rate,
                        uint32_t num_channels, std::optional<int64_t> sample_index, const std::string& text) {
  std::string bytes(num_samples * 2, '\0');
  for (size_t i = 0; i < num_samples; ++i) {  // s16le whatever the host byte order
    const uint16_t v = static_cast<uint16_t>(samples[i]);
    bytes[2 * i] = static_cast<char>(v & 0xff);
    bytes[2 * i + 1] = static_cast<char>(v >> 8);
  }
  SendAudioBytes(channel, bytes, sample_rate, num_channels, sample_index, text);
}

void Session::SendAudioBytes(AudioChannel channel, const std::string& pcm_bytes, uint32_t sample_rate,
                             uint32_t num_channels, std::optional<int64_t> sample_index, const std::string& text) {
  pb::ClientMessage msg;
  pb::AudioChunk* a = msg.mutable_audio();
  a->set_channel(static_cast<pb::AudioChannel>(channel));
  a->set_pcm(pcm_bytes);
  a->set_sample_rate(sample_rate);
  a->set_num_channels(num_channels);
  if (sample_index) a->set_sample_index(*sample_index);
  a->set_text(text);
  impl_->Enqueue(std::move(msg));
}

void Session::SetState(Phase phase, Emotion emotion, float intensity, uint32_t transition_ms,
                       const std::string& direction) {
  pb::ClientMessage msg;
  pb::DialogueState* s = msg.mutable_state();
  s->set_phase(static_cast<pb::Phase>(phase));
  s->set_emotion(static_cast<pb::Emotion>(emotion));
  s->set_intensity(intensity);
  s->set_transition_ms(transition_ms);
  s->set_direction(direction);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    // Remember the accumulated state (unspecified fields keep the earlier value) for a reconnect.
    pb::DialogueState merged = impl_->last_state.value_or(pb::DialogueState());
    if (s->phase() != pb::PHASE_UNSPECIFIED) merged.set_phase(s->phase());
    if (s->emotion() != pb::EMOTION_UNSPECIFIED) {
      merged.set_emotion(s->emotion());
      merged.set_intensity(s->intensity());
    }
    merged.set_direction(s->direction());
    merged.set_transition_ms(0);
    impl_->last_state = merged;
  }
  impl_->Enqueue(std::move(msg));
}

void Session::Interrupt() {
  pb::ClientMessage msg;
  msg.mutable_control()->set_action(pb::Control::ACTION_INTERRUPT);
  {
    // Barge-in: NPC audio still waiting to be sent is flushed with it.
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto& q = impl_->out;
    q.erase(std::remove_if(q.begin(), q.end(),
                           [](const pb::ClientMessage& m) {
                             return m.has_audio() && m.audio().channel() == pb::AUDIO_CHANNEL_NPC;
                           }),
            q.end());
  }
  impl_->Enqueue(std::move(msg));
}

void Session::Pause() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->paused = true;
  }
  pb::ClientMessage msg;
  msg.mutable_control()->set_action(pb::Control::ACTION_PAUSE);
  impl_->Enqueue(std::move(msg));
}

void Session::Resume() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->paused = false;
  }
  pb::ClientMessage msg;
  msg.mutable_control()->set_action(pb::Control::ACTION_RESUME);
  impl_->Enqueue(std::move(msg));
}

void Session::SetOutput(uint32_t width, uint32_t height, uint32_t fps) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);  // a reconnect asks for the current output
    if (width) impl_->opts.width = width;
    if (height) impl_->opts.height = height;
    if (fps) impl_->opts.fps = fps;
  }
  pb::ClientMessage msg;
  pb::Control* c = msg.mutable_control();
  c->set_action(pb::Control::ACTION_SET_OUTPUT);
  c->set_width(width);
  c->set_height(height);
  c->set_fps(fps);
  impl_->Enqueue(std::move(msg));
}

bool Session::PollFrame(int64_t playhead_us, Frame* out) { return impl_->frames.Pick(playhead_us, out); }
bool Session::PollLatestFrame(Frame* out) { return impl_->frames.PickLatest(out); }
bool Session::PollRigFrame(int64_t playhead_us, RigFrame* out) { return impl_->rigs.Pick(playhead_us, out); }

std::vector<Event> Session::PollEvents() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<Event> v(std::make_move_iterator(impl_->events.begin()), std::make_move_iterator(impl_->events.end()));
  impl_->events.clear();
  return v;
}

std::vector<Error> Session::PollErrors() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<Error> v(std::make_move_iterator(impl_->errors.begin()), std::make_move_iterator(impl_->errors.end()));
  impl_->errors.clear();
  return v;
}

int64_t Session::ClockUs() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->NowUsLocked();
}

int64_t Session::ClockSamples(uint32_t sample_rate) const {
  return static_cast<int64_t>(std::llround(static_cast<double>(ClockUs()) * sample_rate / 1e6));
}

int64_t Session::DefaultPlayheadUs(int margin_ms) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->NowUsLocked() - static_cast<int64_t>(impl_->info.lookahead_ms) * 1000 -
         static_cast<int64_t>(margin_ms) * 1000;
}

SessionState Session::State() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->state;
}

SessionInfo Session::Info() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->info;
}

Stats Session::GetStats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stats s = impl_->stats;
  s.frames_skipped = impl_->frames.Skipped();
  return s;
}

Error Session::LastError() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_error;
}

std::string Session::ResumeToken() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->resume_token;
}

std::string Session::LastConfigResumeToken() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_config_token;
}

}  // namespace lpmnpc
