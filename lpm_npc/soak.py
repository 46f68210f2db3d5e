"""`lpm-npc soak`: a long session simulated faster than real time; memory must stay flat.

Speech, silence, player turns, interruptions and emotion changes cycle for N session minutes,
rendered at a small size as fast as the CPU allows. Prints process RSS per simulated minute and
the drift between the first and last minute's motion statistics.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np
import torch

from .audio.pcm import INTERNAL_RATE, encode_pcm16, resample
from .audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, synthesize
from .bench import proc_rss_mb
from .config import OutputOptions, ServerConfig, SessionOptions
from .runtime.runtime import Runtime
from .types import AudioChannel, Emotion, Phase

log = logging.getLogger(__name__)


def run_soak(minutes: float = 10.0, size: int = 96, fps: int = 30) -> dict:
    torch.set_num_threads(1)
    npc = synthesize("I have told you before, the bridge is closed until the spring thaw. "
                     "Come back when the ice is gone.", voice=DEFAULT_NPC_VOICE)
    npc16 = resample(npc.samples, npc.sample_rate, INTERNAL_RATE)
    ply = synthesize("Can you open the gate for me? I really need to cross today.", voice=DEFAULT_PLAYER_VOICE)
    ply16 = resample(ply.samples, ply.sample_rate, INTERNAL_RATE)
    npc_text = "I have told you before, the bridge is closed until the spring thaw. Come back when the ice is gone."
    emotions = list(Emotion)
    directions = ["nods slowly", "looks away, a bit nervous", "raises an eyebrow", "smiles", "shakes her head",
                  "looks down sadly", "calm", "leans in, curious"]
    runtime = Runtime(ServerConfig())
    session = runtime.open_session(SessionOptions(output=OutputOptions(fps=fps, width=size, height=size)), seed=3)
    neutral = np.zeros_like(session.render_next().motion.values)
    identity0 = runtime.renderer.render(session.prepared, neutral[None], size, size)[0]
    chunk = INTERNAL_RATE // 50
    cycle_s = 20.0  # player line, pause, NPC line (interrupted every third cycle), silence
    rss, jaw_by_minute, blink_by_minute, yaw_by_minute = [], [], [], []
    frames_per_min = 60 * fps
    t_wall = time.perf_counter()
    npc_pos = ply_pos = 0
    jaws, blinks, yaws = [], [], []
    total = int(minutes * frames_per_min)
    for n in range(total):
        t = n / fps
        c, tc = divmod(t, cycle_s)
        c = int(c)
        if tc < 1.0 / fps:
            npc_pos = ply_pos = 0
            session.set_dialogue_state(Phase.LISTENING, emotions[c % len(emotions)], 0.7, 400,
                                       direction=directions[c % len(directions)])
        ply_until = int(min(len(ply16), max(0.0, tc - 0.5) * INTERNAL_RATE))
        while ply_pos < ply_until:
            session.push_audio(AudioChannel.PLAYER, encode_pcm16(ply16[ply_pos:ply_pos + chunk]), INTERNAL_RATE)
            ply_pos += chunk
        npc_start = 0.5 + len(ply16) / INTERNAL_RATE + 0.8
        npc_until = int(min(len(npc16), max(0.0, tc - npc_start + 0.2) * INTERNAL_RATE))
        while npc_pos < npc_until:
            session.push_audio(AudioChannel.NPC, encode_pcm16(npc16[npc_pos:npc_pos + chunk]), INTERNAL_RATE,
                               text=npc_text)
            npc_pos += chunk
        if c % 3 == 2 and abs(tc - (npc_start + 1.5)) < 0.5 / fps:
            session.interrupt()
            npc_pos = len(npc16)
        f = session.render_next()
        jaws.append(f.motion["jaw_open"])
        blinks.append(max(f.motion["blink_l"], f.motion["blink_r"]))
        yaws.append(f.motion["head_yaw"])
        if (n + 1) % frames_per_min == 0:
            gc.collect()
            rss.append(proc_rss_mb(os.getpid()))
            jaw_by_minute.append(float(np.mean(jaws)))
            b = np.asarray(blinks) > 0.5
            blink_by_minute.append(int(np.sum(b[1:] & ~b[:-1])))
            yaw_by_minute.append(float(np.std(yaws)))
            jaws, blinks, yaws = [], [], []
            print(f"  minute {len(rss):3d}: rss {rss[-1]:7.1f} MB  mean jaw {jaw_by_minute[-1]:.3f}  "
                  f"blinks {blink_by_minute[-1]:2d}/min  head yaw sd {yaw_by_minute[-1]:.2f} deg  "
                  f"({time.perf_counter() - t_wall:.0f} s wall)", flush=True)
    # identity: the neutral face rendered after the hour is the neutral face rendered before it
    identity1 = runtime.renderer.render(session.prepared, neutral[None], size, size)[0]
    identity_diff = float(np.abs(identity1.astype(np.int16) - identity0.astype(np.int16)).max())
    runtime.close_session(session)
    runtime.close()
    growth = rss[-1] - rss[0] if len(rss) > 1 else 0.0
    print(f"\nRSS first minute {rss[0]:.1f} MB, last minute {rss[-1]:.1f} MB, growth {growth:+.1f} MB over "
          f"{len(rss)} simulated minutes")
    print(f"motion: mean jaw first/last minute {jaw_by_minute[0]:.3f}/{jaw_by_minute[-1]:.3f}, "
          f"blinks/min first/last {blink_by_minute[0]}/{blink_by_minute[-1]}, "
          f"head yaw sd first/last {yaw_by_minute[0]:.2f}/{yaw_by_minute[-1]:.2f} deg")
    print(f"identity: neutral frame after the session vs before, max pixel difference {identity_diff:.0f} (0 = identical)")
    return {"rss_mb": rss, "jaw_by_minute": jaw_by_minute, "blinks_per_minute": blink_by_minute,
            "head_yaw_sd_by_minute": yaw_by_minute, "identity_max_diff": identity_diff}
