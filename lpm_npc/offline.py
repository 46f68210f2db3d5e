"""`lpm-npc render`: offline preview for designers, the same runtime with no server around it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .audio.pcm import INTERNAL_RATE, encode_pcm16
from .audio.wav import load_audio
from .encode import decode_frame
from .config import OutputOptions, ServerConfig, SessionOptions
from .media import Mp4Writer
from .runtime.runtime import Runtime
from .types import AudioChannel, Emotion, Phase

log = logging.getLogger(__name__)


def render_offline(portrait: Path | None, npc_audio: Path, out: Path, player_audio: Path | None = None,
                   emotion: Emotion | None = None, fps: int = 30, size: int = 512,
                   lead_in_s: float = 0.5, tail_s: float = 0.8, cache_dir: Path | None = None,
                   progress: bool = True) -> Path:
    """Render the character speaking `npc_audio` (and listening to `player_audio` first) to an MP4.

    The player's line, if any, plays first; the NPC answers 0.5 s after it ends.
    """
    config = ServerConfig(cache_dir=cache_dir) if cache_dir else ServerConfig()
    runtime = Runtime(config)
    try:
        if portrait is not None:
            info, cached = runtime.store.register(Path(portrait).read_bytes(), display_name=Path(portrait).stem)
            character_id = info.character_id
            log.info("character %s (%s)", character_id, "cached rig" if cached else "new rig")
        else:
            character_id = "default"
        npc = load_audio(npc_audio, INTERNAL_RATE)
        player = load_audio(player_audio, INTERNAL_RATE) if player_audio else np.zeros(0, np.float32)
        player_start = lead_in_s
        npc_start = lead_in_s + (len(player) / INTERNAL_RATE + 0.5 if len(player) else 0.0)
        duration = npc_start + len(npc) / INTERNAL_RATE + tail_s
        session = runtime.open_session(SessionOptions(character_id=character_id,
                                                      output=OutputOptions(fps=fps, width=size, height=size)))
        if emotion is not None:
            session.set_dialogue_state(None, emotion, 1.0, 300)
        track = np.zeros(int(duration * INTERNAL_RATE) + 1, np.float32)
        p0 = int(player_start * INTERNAL_RATE)
        track[p0:p0 + len(player)] += 0.8 * player[: len(track) - p0]
        n0 = int(npc_start * INTERNAL_RATE)
        track[n0:n0 + len(npc)] += npc[: len(track) - n0]
        # NPC audio is known in advance: place it at its time on the session clock.
        session.push_audio(AudioChannel.NPC, encode_pcm16(npc), INTERNAL_RATE, sample_index=n0)
        n_frames = int(np.ceil(duration * fps))
        step = INTERNAL_RATE // 50  # the player's mic arrives in 20 ms chunks, as it would live
        sent = 0
        with Mp4Writer(out, fps, size, size, audio=np.clip(track, -1, 1), audio_rate=INTERNAL_RATE) as writer:
            for _ in tqdm(range(n_frames), desc=f"rendering {Path(out).name}", unit="frame", disable=not progress):
                t = session.next_pts()
                if sent < len(player):
                    until = int((t - player_start) * INTERNAL_RATE)
                    if sent == 0 and until > 0:
                        session.set_dialogue_state(Phase.LISTENING)
                    while sent < min(until, len(player)):
                        chunk = player[sent:sent + step]
                        session.push_audio(AudioChannel.PLAYER, encode_pcm16(chunk), INTERNAL_RATE)
                        sent += len(chunk)
                frame = session.render_next()
                writer.write(decode_frame(frame.encoded.data, frame.encoded.width, frame.encoded.height,
                                          frame.encoded.pixel_format, frame.encoded.flip_y))
        runtime.close_session(session)
    finally:
        runtime.close()
    return Path(out)
