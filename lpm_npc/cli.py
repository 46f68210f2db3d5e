"""The `lpm-npc` command: serve, demo, render, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .logs import setup_logging  # noqa: E402
from .types import Emotion  # noqa: E402

log = logging.getLogger("lpm_npc")


def _workers(value: str | int, device: str) -> int:
    """The number of worker processes for `--workers N|auto`."""
    from .config import auto_worker_processes

    return auto_worker_processes(device) if value == "auto" else int(value)


def _workers_arg(text: str) -> str | int:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of processes >= 0, got {text!r}")
    return n


def _fronts(value: str | int, device: str, workers: int) -> int:
    """The number of front processes for `--fronts N|auto`."""
    from .config import auto_front_processes

    return auto_front_processes(device, workers) if value == "auto" else max(1, int(value))


def _serve(args: argparse.Namespace) -> int:
    from .config import ServerConfig, default_cache_dir
    from .runtime.fronts import split_workers
    from .runtime.stacks import dump_stacks_on_signal
    from .server.app import serve_forever

    dump_stacks_on_signal()   # `kill -USR1 <pid>`: every thread's stack on stderr (the hang checks use it too)

    workers = _workers(args.workers, args.device)
    fronts = _fronts(args.fronts, args.device, workers)
    if fronts > 1 and workers:
        try:
            split_workers(workers, fronts)   # each front process has worker processes of its own
        except ValueError as exc:
            log.error("--fronts %d --workers %d: %s", fronts, workers, exc)
            return 2
    config = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions,
                          cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                          backend=args.backend, device=args.device, render_threads=args.render_threads,
                          admission=not args.no_admission, worker_processes=workers, front_processes=fronts,
                          render_service=args.render_service, service_hang_s=args.hang_timeout,
                          worker_hang_s=args.hang_timeout, front_hang_s=2 * args.hang_timeout,
                          loop_stall_s=args.hang_timeout, idle_rig_cache_mb=args.rig_cache_mb,
                          frame_cost_fixed_ms=args.frame_cost[0] if args.frame_cost else 0.0,
                          frame_cost_per_mpx_ms=args.frame_cost[1] if args.frame_cost else 0.0)
    try:
        asyncio.run(serve_forever(config))
    except OSError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), size=args.size, fps=args.fps)
    return 0


def _render(args: argparse.Namespace) -> int:
    from .errors import LpmError
    from .offline import render_offline

    emotion = Emotion(args.emotion) if args.emotion else None
    try:
        out = render_offline(Path(args.portrait) if args.portrait else None, Path(args.npc_audio), Path(args.output),
                             player_audio=Path(args.player_audio) if args.player_audio else None,
                             emotion=emotion, fps=args.fps, size=args.size)
    except LpmError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list of numbers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _bench(args: argparse.Namespace) -> int:
    from .loadgen import LoadgenUnavailable

    try:
        return _run_bench(args)
    except LoadgenUnavailable as exc:
        print(f"lpm-npc bench --client cpp: {exc}", file=sys.stderr)
        return 2


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench, run_scaling
    from .types import PixelFormat

    if args.quality:
        from .bench_quality import run_quality

        run_quality(json_path=Path(args.json) if args.json else None, quick=not args.full,
                    minutes=args.minutes)
        return 0
    # auto: the server as it should run for many NPCs on this machine (one process per core); a single
    # NPC runs in the server process, as `lpm-npc serve` does by default
    workers = 0 if args.workers == "auto" and max(args.sessions) == 1 else _workers(args.workers, args.device)
    fronts = _fronts(args.fronts, args.device, workers)
    if len(args.sessions) > 1 or len(args.size) > 1 or args.plot:
        run_scaling(args.size, args.sessions, args.seconds, fps=args.fps,
                    json_path=Path(args.json) if args.json else None,
                    plot_path=Path(args.plot) if args.plot else None, render_threads=args.render_threads,
                    workers=workers, backend=args.backend, device=args.device, client=args.client,
                    pixel_format=PixelFormat(args.pixel_format), render_service=args.render_service,
                    fronts=fronts)
        return 0
    run_bench(size=args.size[0], seconds=args.seconds, sessions=args.sessions[0], fps=args.fps,
              json_path=Path(args.json) if args.json else None, workers=workers, client=args.client,
              pixel_format=PixelFormat(args.pixel_format), backend=args.backend, device=args.device,
              render_service=args.render_service, fronts=fronts)
    return 0


def _soak(args: argparse.Namespace) -> int:
    if args.served:
        from .soak_served import ServedSoakOptions, run_served_soak
        from .types import PixelFormat

        lo, _, hi = args.session_seconds.partition(",")
        opts = ServedSoakOptions(
            sessions=args.sessions, minutes=args.minutes, size=args.size or 64, workers=args.workers,
            render_service=args.render_service, fronts=args.fronts, rig_cache_mb=args.rig_cache_mb,
            backend=args.backend, device=args.device,
            session_s=(float(lo), float(hi or lo)), register_every=args.register_every,
            sample_s=args.sample_seconds, pixel_format=PixelFormat(args.pixel_format))
        report = run_served_soak(opts, json_path=Path(args.json) if args.json else None)
        return 0 if not report["errors"] and report["server_alive_at_end"] and not report["processes_gone"] else 1
    from .soak import run_soak

    run_soak(minutes=args.minutes, size=args.size or 96)
    return 0


def _talk(args: argparse.Namespace) -> int:
    from .talk import run_talk

    return run_talk(talk_options(args)).exit_code


def talk_options(args: argparse.Namespace):
    from .talk import TalkOptions

    return TalkOptions(portrait=Path(args.portrait) if args.portrait else None, server=args.server, size=args.size,
                       fps=args.fps, voice=args.voice, mic=not args.no_mic,
                       mic_file=Path(args.mic_file) if args.mic_file else None, speaker=not args.no_speaker,
                       window=not args.no_window, record=Path(args.record) if args.record else None,
                       seconds=args.seconds, script=Path(args.script) if args.script else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lpm-npc", description="Real-time performance server for game NPC faces.")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gRPC sidecar")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    s.add_argument("--port", type=int, default=50051)
    s.add_argument("--max-sessions", type=int, default=16)
    s.add_argument("--cache-dir", default=None, help="rig cache (default $LPM_NPC_CACHE or ~/.cache/lpm-npc)")
    s.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="renderer backend (see `lpm-npc serve --help` and README: Backends)")
    s.add_argument("--device", default="cpu",
                   help="torch: cpu | cuda; onnxruntime: cpu | cuda | tensorrt-ep; tensorrt: cuda")
    s.add_argument("--render-threads", type=int, default=2,
                   help="threads making frames; a tick's batch is shared between them")
    s.add_argument("--workers", type=_workers_arg, default=0,
                   help="worker processes the sessions are sharded over (0: all in the server process, which "
                        "Python's GIL holds to about one core; auto: one per core, for many NPCs on a CPU)")
    s.add_argument("--render-service", default="auto", choices=["auto", "on", "off"],
                   help="with --workers: one process renders for all workers (auto: on with a GPU device, where "
                        "one context fed big batches beats one per worker)")
    s.add_argument("--fronts", type=_workers_arg, default=1,
                   help="server processes listening on the port, each sending the frames of its own streams "
                        "with its share of --workers (one process sends ~1400 frames/s at most); auto: 1 on a "
                        "CPU, one per two workers with a GPU (at most 4)")
    s.add_argument("--no-admission", action="store_true",
                   help="accept sessions beyond the measured render capacity (they will run late)")
    s.add_argument("--hang-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a worker or render service process stuck this long (a front process: twice as "
                        "long) is killed and started again (its streams end; clients resume); 0: never "
                        "(default 30)")
    s.add_argument("--frame-cost", type=float, nargs=2, metavar=("FIXED_MS", "MS_PER_MPX"), default=None,
                   help="cost of one frame for admission control instead of measuring it at start-up")
    s.add_argument("--rig-cache-mb", type=float, default=256.0, metavar="MB",
                   help="prepared characters no session uses are kept up to this many MB per process (the "
                        "render service's on its device), least recently used first; each takes ~35 MB and "
                        "~30 ms to prepare again (default 256)")
    s.set_defaults(func=_serve)

    d = sub.add_parser("demo", help="start the sidecar and play a scripted conversation through it")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--size", type=int, default=512)
    d.add_argument("--fps", type=int, default=30)
    d.set_defaults(func=_demo)

    r = sub.add_parser("render", help="offline preview: portrait + NPC line -> MP4 with the audio muxed")
    r.add_argument("--portrait", default=None, help="image file (default: the built-in character)")
    r.add_argument("--npc-audio", required=True, help="WAV of the NPC's line (16-48 kHz, mono/stereo, int/float)")
    r.add_argument("--player-audio", default=None, help="WAV of the player's line, played first")
    r.add_argument("--emotion", default=None, choices=[e.value for e in Emotion])
    r.add_argument("--fps", type=int, default=30)
    r.add_argument("--size", type=int, default=512)
    r.add_argument("-o", "--output", required=True)
    r.set_defaults(func=_render)

    b = sub.add_parser("bench", help="print per-stage cost, real-time fps, CPU and latency")
    b.add_argument("--size", type=_int_list, default=[512],
                   help="frame side; a list (256,512) runs the scaling sweep")
    b.add_argument("--seconds", type=float, default=20.0)
    b.add_argument("--sessions", type=_int_list, default=[1],
                   help="NPC sessions; a list (1,2,4,8,16,32,64) runs the scaling sweep")
    b.add_argument("--plot", default=None, help="scaling sweep: write a PNG plot here")
    b.add_argument("--quality", action="store_true",
                   help="print the lip-sync, listening, controllability and motion-statistics tables instead")
    b.add_argument("--full", action="store_true", help="--quality: the whole held-out lip-sync set (slower)")
    b.add_argument("--minutes", type=float, default=3.0, help="--quality: length of the simulated session")
    b.add_argument("--render-threads", type=int, default=2, help="scaling sweep: the server's render threads")
    b.add_argument("--workers", type=_workers_arg, default="auto",
                   help="the benchmarked server's worker processes (lpm-npc serve --workers; default auto: one "
                        "per core when benchmarking several NPCs, none for one)")
    b.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="scaling sweep: the server's renderer backend (lpm-npc serve --backend)")
    b.add_argument("--device", default="cpu", help="scaling sweep: the backend's device (e.g. cuda, tensorrt-ep)")
    b.add_argument("--render-service", default="auto", choices=["auto", "on", "off"],
                   help="the benchmarked server's render service (lpm-npc serve --render-service; auto: on "
                        "with a GPU and worker processes)")
    b.add_argument("--fronts", type=_workers_arg, default=1,
                   help="the benchmarked server's front processes (lpm-npc serve --fronts)")
    b.add_argument("--fps", type=int, default=30)
    b.add_argument("--client", default="auto", choices=["auto", "python", "cpp"],
                   help="the benchmark's clients: Python threads, or one native process built from the Unreal "
                        "bridge's C++ core (as a game links it; needs cmake and gRPC C++ to build); auto: the "
                        "native one when it builds here, else Python (it takes more of the machine's CPU)")
    b.add_argument("--pixel-format", default="rgba8", choices=["rgba8", "bgra8", "jpeg"],
                   help="the frames the clients ask for (jpeg: encoded on the GPU with --device cuda)")
    b.add_argument("--json", default=None)
    b.set_defaults(func=_bench)

    k = sub.add_parser("soak", help="simulate a long session faster than real time; print memory per minute "
                                    "(--served: many NPC sessions coming and going on a real server, in real time)")
    k.add_argument("--minutes", type=float, default=10.0)
    k.add_argument("--size", type=int, default=0, help="frame side (default 96; 64 with --served)")
    k.add_argument("--served", action="store_true",
                   help="start lpm-npc serve and keep --sessions NPCs busy over gRPC: sessions open, talk, change "
                        "emotion, direction, size and pause, and end (half-close, cancel, dropped connection); "
                        "prints each server process's memory, fds and threads by role, and their growth")
    k.add_argument("--sessions", type=int, default=4, help="--served: NPC sessions at once")
    k.add_argument("--session-seconds", default="20,90", help="--served: each session lasts MIN,MAX seconds")
    k.add_argument("--register-every", type=int, default=5,
                   help="--served: every Nth session registers a character from a real portrait and deletes "
                        "it after (0: never)")
    k.add_argument("--sample-seconds", type=float, default=60.0, help="--served: seconds between samples")
    k.add_argument("--workers", type=int, default=2, help="--served: lpm-npc serve --workers")
    k.add_argument("--render-service", default="on", choices=["auto", "on", "off"],
                   help="--served: lpm-npc serve --render-service")
    k.add_argument("--fronts", type=int, default=1, help="--served: lpm-npc serve --fronts")
    k.add_argument("--rig-cache-mb", type=float, default=None, help="--served: lpm-npc serve --rig-cache-mb")
    k.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="--served: lpm-npc serve --backend")
    k.add_argument("--device", default="cpu", help="--served: lpm-npc serve --device (e.g. cuda)")
    k.add_argument("--pixel-format", default="jpeg", choices=["rgba8", "bgra8", "jpeg"])
    k.add_argument("--json", default=None, help="--served: write the report and every sample here")
    k.set_defaults(func=_soak)

    t = sub.add_parser("talk", help="talk to an NPC from the desktop: mic in, typed lines and tags, live window")
    t.add_argument("--portrait", default=None, help="image file (default: the built-in character)")
    t.add_argument("--server", default=None, help="host:port of a running sidecar (default: start one)")
    t.add_argument("--size", type=int, default=512)
    t.add_argument("--fps", type=int, default=30)
    t.add_argument("--voice", default=None, help="eSpeak NG voice for 'say' (default en-us+m3)")
    t.add_argument("--no-mic", action="store_true", help="no microphone: typed lines only")
    t.add_argument("--mic-file", default=None, help="a WAV played as the player's microphone (no sound card)")
    t.add_argument("--no-speaker", action="store_true", help="do not play NPC audio (silent clock)")
    t.add_argument("--no-window", action="store_true", help="no window: print a status line each second")
    t.add_argument("--record", default=None, help="also write the session to this MP4 (voices muxed)")
    t.add_argument("--seconds", type=float, default=None, help="quit after this many seconds")
    t.add_argument("--script", default=None, help="read the commands from this file instead of the prompt")
    t.set_defaults(func=_talk)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
