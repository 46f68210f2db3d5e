// lpmnpc_loadgen: N native clients (this core, as a game engine links it) against `lpm-npc serve`.
//
//   lpmnpc_loadgen --address 127.0.0.1:50051 --sessions 8 --size 256 --fps 30 --seconds 10 \
//                  --speech speech_16k.s16 [--warm 2] [--pixel-format rgba8|bgra8|jpeg] [--json out.json]
//
// Each session streams NPC speech live (20 ms chunks of 16 kHz PCM as it "plays", 6 s talking then
// 2 s silence, each session at its own offset into the speech) and takes every frame, as an engine
// does. After `warm` seconds it counts frames, reads the server's Stats (latency, stage times) once a
// second, and at the end prints one JSON object: per-session results plus this process's own CPU
// seconds over the measured window. `lpm-npc bench --client cpp` runs it; with the Python client the
// benchmark's own gRPC + GIL overhead takes a share of the same cores the server needs.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lpmnpc/session.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr uint32_t kRate = 16000;
constexpr size_t kChunk = kRate / 50;  // 20 ms

struct Args {
  std::string address = "127.0.0.1:50051";
  int sessions = 1;
  uint32_t size = 256;
  uint32_t fps = 30;
  double seconds = 10.0;
  double warm = 2.0;
  std::string speech;
  std::string json;
  lpmnpc::PixelFormat format = lpmnpc::PixelFormat::RGBA8;
};

constexpr const char* kUsage =
    "usage: lpmnpc_loadgen --speech FILE.s16 [--address HOST:PORT] [--sessions N] [--size PX] [--fps N] "
    "[--seconds S] [--warm S] [--pixel-format rgba8|bgra8|jpeg] [--json OUT]\n"
    "  FILE.s16: 16 kHz mono s16le speech, streamed live by every session (6 s on, 2 s off)\n"
    "  prints 'started' once every session is up, then one JSON report (to --json, else stdout)\n";

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr, "lpmnpc_loadgen: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) Usage("missing value for " + k);
    const std::string v = argv[++i];
    try {
      if (k == "--address") a.address = v;
      else if (k == "--sessions") a.sessions = std::stoi(v);
      else if (k == "--size") a.size = static_cast<uint32_t>(std::stoul(v));
      else if (k == "--fps") a.fps = static_cast<uint32_t>(std::stoul(v));
      else if (k == "--seconds") a.seconds = std::stod(v);
      else if (k == "--warm") a.warm = std::stod(v);
      else if (k == "--speech") a.speech = v;
      else if (k == "--json") a.json = v;
      else if (k == "--pixel-format") {
        if (v == "rgba8") a.format = lpmnpc::PixelFormat::RGBA8;
        else if (v == "bgra8") a.format = lpmnpc::PixelFormat::BGRA8;
        else if (v == "jpeg") a.format = lpmnpc::PixelFormat::JPEG;
        else Usage("unknown pixel format " + v);
      } else {
        Usage("unknown option " + k);
      }
    } catch (const std::exception&) {
      Usage("bad value for " + k + ": " + v);
    }
  }
  if (a.speech.empty()) Usage("--speech is required (16 kHz mono s16le)");
  if (a.sessions < 1 || a.seconds <= a.warm + 1.0) Usage("need --sessions >= 1 and --seconds > --warm + 1");
  return a;
}

std::vector<int16_t> ReadSpeech(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Usage("cannot read " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<int16_t> s(bytes.size() / 2);
  std::copy(bytes.begin(), bytes.begin() + static_cast<long>(s.size() * 2), reinterpret_cast<char*>(s.data()));
  if (s.size() < kRate) Usage(path + " holds less than 1 s of 16 kHz audio");
  return s;
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Result {
  uint64_t frames0 = 0, frames1 = 0;
  uint64_t dropped0 = 0, dropped1 = 0;
  int64_t last_stats_pts = -1;
  std::vector<float> p50, p95, p99, audio, motion, render, encode, transport, batch;
  std::string error;
};

// A JSON string literal of `s` (quotes, backslashes and control characters escaped).
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string List(const std::vector<float>& v) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < v.size(); ++i) o << (i ? ", " : "") << v[i];
  o << "]";
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  const auto speech = ReadSpeech(args.speech);

  std::vector<std::unique_ptr<lpmnpc::Session>> sessions;
  std::vector<Result> results(static_cast<size_t>(args.sessions));
  for (int k = 0; k < args.sessions; ++k) {
    lpmnpc::SessionOptions o;
    o.address = args.address;
    o.width = args.size;
    o.fps = args.fps;
    o.pixel_format = args.format;
    o.stats_interval_ms = 1000;
    o.auto_reconnect = false;
    o.jitter_capacity = 4;
    sessions.push_back(std::make_unique<lpmnpc::Session>(o));
    sessions.back()->Start();
  }
  for (int k = 0; k < args.sessions; ++k) {
    if (!sessions[k]->WaitStarted(60000)) {
      const std::string why = sessions[k]->LastError().message;
      results[k].error = why.empty() ? "no SessionStarted within 60 s" : why;
    }
  }

  std::fputs("started\n", stdout);  // the harness starts its own measurement window from here
  std::fflush(stdout);
  const auto t0 = Clock::now();
  const auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::atomic<bool> stop{false};

  // One feeder for every session: 20 ms chunks as the speech "plays" (no sample_index: appended live).
  std::thread feeder([&] {
    std::vector<size_t> pos(sessions.size(), 0);
    while (!stop.load() && since() < args.seconds) {
      const size_t target = static_cast<size_t>(since() * kRate);
      for (size_t k = 0; k < sessions.size(); ++k) {
        const size_t offset = (k * 7919) % speech.size();
        while (pos[k] < target) {
          if ((pos[k] / kRate) % 8 < 6) {
            const size_t q = (pos[k] + offset) % (speech.size() - kChunk);
            sessions[k]->SendAudio(lpmnpc::AudioChannel::Npc, speech.data() + q, kChunk, kRate);
          }
          pos[k] += kChunk;
        }
      }
      std::this_thread::sleep_for(20ms);
    }
  });

  // Take every frame as an engine's game thread would (the jitter buffer keeps the newest few).
  lpmnpc::Frame f;
  bool measuring = false;
  double cpu0 = 0, w0 = 0, next_sample = 0;
  while (since() < args.seconds) {
    for (auto& s : sessions) {
      while (s->PollLatestFrame(&f)) {
      }
      s->PollEvents();
      s->PollErrors();
    }
    const double t = since();
    if (!measuring && t >= args.warm) {
      measuring = true;
      cpu0 = CpuSeconds();
      w0 = t;
      next_sample = t + 1.0;
      for (size_t k = 0; k < sessions.size(); ++k) {
        const auto st = sessions[k]->GetStats();
        results[k].frames0 = st.frames_received;
        results[k].dropped0 = st.frames_dropped;
        results[k].last_stats_pts = st.pts_us;
      }
    }
    if (measuring && t >= next_sample) {  // one new server Stats message per session per second
      next_sample += 1.0;
      for (size_t k = 0; k < sessions.size(); ++k) {
        const auto st = sessions[k]->GetStats();
        auto& r = results[k];
        if (st.pts_us == r.last_stats_pts || st.latency_p50_ms <= 0) continue;
        r.last_stats_pts = st.pts_us;
        r.p50.push_back(st.latency_p50_ms);
        r.p95.push_back(st.latency_p95_ms);
        r.p99.push_back(st.latency_p99_ms);
        r.audio.push_back(st.audio_ms);
        r.motion.push_back(st.motion_ms);
        r.render.push_back(st.render_ms);
        r.encode.push_back(st.encode_ms);
        r.transport.push_back(st.transport_ms);
        r.batch.push_back(st.render_batch_mean);
      }
    }
    std::this_thread::sleep_for(4ms);
  }
  const double window = since() - w0;
  const double cpu = CpuSeconds() - cpu0;
  for (size_t k = 0; k < sessions.size(); ++k) {
    const auto st = sessions[k]->GetStats();
    results[k].frames1 = st.frames_received;
    results[k].dropped1 = st.frames_dropped;
  }
  stop.store(true);
  feeder.join();
  for (auto& s : sessions) s->Stop();

  std::ostringstream o;
  o << "{\"window_s\": " << window << ", \"client_cpu_s\": " << cpu << ", \"sessions\": [";
  for (size_t k = 0; k < results.size(); ++k) {
    const auto& r = results[k];
    const double fps = window > 0 ? static_cast<double>(r.frames1 - r.frames0) / window : 0.0;
    o << (k ? ", " : "") << "{\"fps\": " << fps << ", \"dropped\": " << (r.dropped1 - r.dropped0)
      << ", \"lat_p50\": " << List(r.p50) << ", \"lat_p95\": " << List(r.p95) << ", \"lat_p99\": " << List(r.p99)
      << ", \"stages\": {\"audio\": " << List(r.audio) << ", \"motion\": " << List(r.motion)
      << ", \"render\": " << List(r.render) << ", \"encode\": " << List(r.encode)
      << ", \"transport\": " << List(r.transport) << "}, \"batch\": " << List(r.batch)
      << ", \"error\": "
      << JsonString(r.error.empty() ? "" : "session failed to start: " + r.error) << "}";
  }
  o << "]}\n";
  if (args.json.empty()) {
    std::fputs(o.str().c_str(), stdout);
  } else {
    std::ofstream(args.json) << o.str();
  }
  return 0;
}
