"""`lpm-npc demo`: the sidecar, the built-in character and a scripted conversation, end to end."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .character.default import default_portrait_png
from .conversation import demo_conversation
from .live import frame_to_rgba, run_live
from .media import Mp4Writer, contact_sheet, write_png
from .server.convert import EVENT_FROM_PB
from .sidecar import Sidecar

log = logging.getLogger(__name__)
AUDIO_RATE = 16000


def run_demo(out_dir: Path = Path("out/demo"), size: int = 512, fps: int = 30, lookahead_ms: int = 80,
             sheet_every_s: float = 0.75) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print("lpm-npc demo: starting the sidecar ...", flush=True)
    t_start = time.monotonic()
    sidecar = Sidecar()
    try:
        client = sidecar.wait_ready()
        t_ready = time.monotonic()
        t_reg = time.monotonic()
        info = client.register_character(default_portrait_png(), display_name="Astronaut (built-in)")
        reg_s = time.monotonic() - t_reg
        print(f"  sidecar ready in {t_ready - t_start:.1f} s; character {info.character_id} registered in "
              f"{reg_s:.2f} s (face score {info.face_score:.2f})", flush=True)
        print("  synthesizing the conversation with eSpeak NG ...", flush=True)
        conv = demo_conversation()
        soundtrack = conv.mix(AUDIO_RATE)
        video_path = out_dir / "demo.mp4"
        sheet_frames: list[np.ndarray] = []
        sheet_labels: list[str] = []
        next_sheet = [0.0]
        last = {"index": -1, "rgba": None}
        writer = Mp4Writer(video_path, fps, size, size, audio=soundtrack, audio_rate=AUDIO_RATE)

        def on_frame(frame, _wall) -> None:
            rgba = frame_to_rgba(frame)
            # Frames dropped on the way are filled with the last one so the video keeps its timing.
            if last["rgba"] is not None:
                for _ in range(frame.index - last["index"] - 1):
                    writer.write(last["rgba"])
            elif frame.index > 0:
                for _ in range(frame.index):
                    writer.write(rgba)
            writer.write(rgba)
            last["index"], last["rgba"] = frame.index, rgba
            t = frame.pts_us / 1e6
            if t >= next_sheet[0]:
                sheet_frames.append(rgba)
                sheet_labels.append(f"{t:5.2f}s {_phase_at(conv, t)}")
                next_sheet[0] += sheet_every_s

        print(f"  playing a {conv.duration:.1f} s conversation through the gRPC stream "
              f"({size}x{size} RGBA @ {fps} fps) ...", flush=True)
        with client.perform(character_id=info.character_id, width=size, fps=fps,
                            lookahead_ms=lookahead_ms, stats_interval_ms=1000) as stream:
            result = run_live(stream, conv, on_frame, lookahead_s=lookahead_ms / 1000.0)
        # pad to the soundtrack's length so the audio is not cut
        if last["rgba"] is not None:
            for _ in range(max(0, int(len(soundtrack) / AUDIO_RATE * fps) - (last["index"] + 1))):
                writer.write(last["rgba"])
        writer.close()
        sheet_path = write_png(out_dir / "contact_sheet.png", contact_sheet(sheet_frames, sheet_labels, columns=6, cell=200))
        client.close()
    finally:
        code = sidecar.stop()

    lat = np.asarray(result.client_latency_ms or [0.0])
    server_p50 = [s.latency_p50_ms for s in result.stats if s.latency_p50_ms > 0]
    server_p95 = [s.latency_p95_ms for s in result.stats if s.latency_p95_ms > 0]
    render_ms = [s.render_ms for s in result.stats if s.render_ms > 0]
    expected = result.last_index - result.first_index + 1
    summary = {
        "video": str(video_path),
        "contact_sheet": str(sheet_path),
        "frames_received": result.frames,
        "frames_expected": expected,
        "frames_dropped": expected - result.frames,
        "fps_received": round(result.fps, 2),
        "client_latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "client_latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "server_latency_ms_p50": round(float(np.median(server_p50)), 1) if server_p50 else None,
        "server_latency_ms_p95": round(float(np.max(server_p95)), 1) if server_p95 else None,
        "server_render_ms_mean": round(float(np.mean(render_ms)), 2) if render_ms else None,
        "lookahead_ms": lookahead_ms,
        "events": [f"{e.pts_us / 1e6:.2f}s {EVENT_FROM_PB[e.type].value}" for e in result.events],
        "directions": [f"{d.pts_us / 1e6:.2f}s {d.text!r} -> "
                       + ", ".join(f"{m.name} ({m.confidence:.2f})" for m in d.matches) for d in result.directions],
        "errors": [e.message for e in result.errors],
        "sidecar_exit_code": code,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nResults")
    print(f"  video          {video_path}  (NPC + player voices muxed)")
    print(f"  contact sheet  {sheet_path}")
    print(f"  frames         {result.frames} received, {summary['frames_dropped']} dropped, "
          f"{summary['fps_received']:.2f} fps (target {fps})")
    print(f"  latency        NPC audio in -> frame showing it out, from when the audio was due (it is "
          f"pushed ahead) or arrived, whichever is later:\n"
          f"                 received by the client p50 {summary['client_latency_ms_p50']} ms, "
          f"p95 {summary['client_latency_ms_p95']} ms; leaving the server p50 {summary['server_latency_ms_p50']} ms, "
          f"p95 {summary['server_latency_ms_p95']} ms (lookahead {lookahead_ms} ms)")
    print(f"  render+encode  {summary['server_render_ms_mean']} ms per frame (server mean)")
    print(f"  events         {', '.join(summary['events'])}")
    for d in summary["directions"]:
        print(f"  direction      {d}")
    if summary["errors"]:
        print(f"  errors         {summary['errors']}")
    print(f"  sidecar        stopped cleanly (exit code {code})" if code == 0 else f"  sidecar exit code {code}")
    return summary


def _phase_at(conv, t: float) -> str:
    label = ""
    for st in sorted(conv.states, key=lambda s: s.t):
        if st.t <= t:
            parts = [p for p in ((st.phase.value if st.phase else None), (st.emotion.value if st.emotion else None)) if p]
            if st.phase and st.emotion:
                label = "/".join(parts)
            elif st.phase:
                label = st.phase.value + ("/" + label.split("/")[1] if "/" in label else "")
            elif st.emotion:
                label = (label.split("/")[0] if label else "") + "/" + st.emotion.value
    for i in conv.interrupts:
        if i.t <= t < i.t + 0.4:
            label = "INTERRUPT " + label
    return label
