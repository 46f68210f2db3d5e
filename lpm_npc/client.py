"""Python client: one object owns the channel; unary calls and the Perform stream side by side.

    with NpcClient("127.0.0.1:50051") as client:
        cid = client.register_character(open("hero.png", "rb").read()).character_id
        with client.perform(character_id=cid, width=512, fps=30) as stream:
            stream.send_audio(AudioChannel.NPC, pcm16, 16000)
            for msg in stream:
                ...
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Iterator

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .audio.pcm import encode_pcm16
from .types import AudioChannel, Emotion, Phase, PixelFormat
from .v1 import lpm_npc_pb2 as pb
from .v1 import lpm_npc_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
_CLOSE = object()

_CHANNEL = {AudioChannel.PLAYER: pb.AUDIO_CHANNEL_PLAYER, AudioChannel.NPC: pb.AUDIO_CHANNEL_NPC}
_PIXEL = {PixelFormat.RGBA8: pb.PIXEL_FORMAT_RGBA8, PixelFormat.BGRA8: pb.PIXEL_FORMAT_BGRA8,
          PixelFormat.JPEG: pb.PIXEL_FORMAT_JPEG}
_PHASE = {Phase.IDLE: pb.PHASE_IDLE, Phase.LISTENING: pb.PHASE_LISTENING,
          Phase.THINKING: pb.PHASE_THINKING, Phase.SPEAKING: pb.PHASE_SPEAKING}
_EMOTION = {e: getattr(pb, f"EMOTION_{e.name}") for e in Emotion}


class PerformStream:
    """One NPC session. Send with the methods below; iterate to receive ServerMessages."""

    def __init__(self, stub: pb_grpc.NpcServiceStub, config: pb.SessionConfig, timeout: float | None = None,
                 max_queued: int = 4096):
        self._requests: queue.Queue = queue.Queue(maxsize=max_queued)
        self._requests.put(pb.ClientMessage(config=config))
        self._closed = False
        self._lock = threading.Lock()
        self._call = stub.Perform(self._request_iter(), timeout=timeout)

    def _request_iter(self) -> Iterator[pb.ClientMessage]:
        while True:
            item = self._requests.get()
            if item is _CLOSE:
                return
            yield item

    # -- sending --------------------------------------------------------------------------------
    def send(self, message: pb.ClientMessage) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the stream is closed for sending")
            self._requests.put(message)

    def send_audio(self, channel: AudioChannel, samples: np.ndarray | bytes, sample_rate: int,
                   sample_index: int | None = None, text: str = "", num_channels: int = 1) -> None:
        """Send PCM: float samples in -1..1 or int16 are converted to s16le; bytes go as they are."""
        if isinstance(samples, (bytes, bytearray)):
            pcm = bytes(samples)
        elif samples.dtype == np.int16:
            pcm = samples.astype("<i2").tobytes()
        else:
            pcm = encode_pcm16(samples)
        msg = pb.ClientMessage()  # filled in place: a nested constructor copies the chunk again
        chunk = msg.audio
        chunk.channel, chunk.pcm, chunk.sample_rate = _CHANNEL[channel], pcm, sample_rate
        chunk.num_channels, chunk.text = num_channels, text
        if sample_index is not None:
            chunk.sample_index = sample_index
        self.send(msg)

    def set_state(self, phase: Phase | None = None, emotion: Emotion | None = None, intensity: float = 1.0,
                  transition_ms: int = 300, direction: str = "") -> None:
        self.send(pb.ClientMessage(state=pb.DialogueState(
            phase=_PHASE.get(phase, pb.PHASE_UNSPECIFIED),
            emotion=_EMOTION.get(emotion, pb.EMOTION_UNSPECIFIED),
            intensity=intensity, transition_ms=transition_ms, direction=direction)))

    def interrupt(self) -> None:
        self.send(pb.ClientMessage(control=pb.Control(action=pb.Control.ACTION_INTERRUPT)))

    def pause(self) -> None:
        self.send(pb.ClientMessage(control=pb.Control(action=pb.Control.ACTION_PAUSE)))

    def resume(self) -> None:
        self.send(pb.ClientMessage(control=pb.Control(action=pb.Control.ACTION_RESUME)))

    def set_output(self, width: int = 0, height: int = 0, fps: int = 0) -> None:
        self.send(pb.ClientMessage(control=pb.Control(action=pb.Control.ACTION_SET_OUTPUT, width=width,
                                                      height=height, fps=fps)))

    def close_send(self) -> None:
        """Half-close: the server finishes showing queued NPC speech, then ends the stream."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._requests.put(_CLOSE)

    def cancel(self) -> None:
        self.close_send()
        self._call.cancel()

    # -- receiving ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[pb.ServerMessage]:
        return iter(self._call)

    def __next__(self) -> pb.ServerMessage:
        return next(self._call)

    def __enter__(self) -> "PerformStream":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


class NpcClient:
    """Owns one gRPC channel to an lpm-npc server."""

    def __init__(self, address: str = "127.0.0.1:50051", max_message_bytes: int = 32 * 1024 * 1024,
                 own_connection: bool = False):
        """`own_connection`: a TCP connection of this client's own, not one shared with other channels to
        the same address (gRPC shares them by default). A server with several front processes
        (`serve --fronts`) spreads connections, not streams, so NPCs meant to spread need their own."""
        self.address = address
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if own_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.NpcServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float = 30.0) -> None:
        # wait_for_ready holds the call until the connection is up; unlike grpc.channel_ready_future it
        # starts no polling thread (one left polling raised "Channel closed!" when the client closed)
        status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout,
                                   wait_for_ready=True).status
        if status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"server at {self.address} is not serving (health status {status})")

    def register_character(self, portrait: bytes, extra_references: list[bytes] | None = None,
                           display_name: str = "", timeout: float = 120.0) -> pb.CharacterInfo:
        return self.stub.RegisterCharacter(pb.RegisterCharacterRequest(
            portrait=portrait, extra_references=extra_references or [], display_name=display_name),
            timeout=timeout).character

    def list_characters(self) -> list[pb.CharacterInfo]:
        return list(self.stub.ListCharacters(pb.ListCharactersRequest(), timeout=30).characters)

    def delete_character(self, character_id: str) -> bool:
        return self.stub.DeleteCharacter(pb.DeleteCharacterRequest(character_id=character_id),
                                         timeout=30).deleted

    def server_info(self) -> pb.ServerInfo:
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)

    def perform(self, character_id: str = "default", width: int = 512, height: int = 0, fps: int = 30,
                pixel_format: PixelFormat = PixelFormat.RGBA8, flip_y: bool = False,
                alpha_matte: bool = False, lookahead_ms: int | None = None, send_rig: bool = False,
                stats_interval_ms: int = 1000, npc_sample_rate: int = 16000, resume_token: str = "",
                jpeg_quality: int = 0, timeout: float | None = None, rig_format: str = "arkit52") -> PerformStream:
        config = pb.SessionConfig(
            character_id=character_id, fps=fps, width=width, height=height or width,
            pixel_format=_PIXEL[pixel_format], flip_y=flip_y, alpha_matte=alpha_matte,
            jpeg_quality=jpeg_quality, send_rig=send_rig, stats_interval_ms=stats_interval_ms,
            npc_sample_rate=npc_sample_rate, resume_token=resume_token,
            rig_format=pb.RIG_FORMAT_NATIVE if rig_format == "native" else pb.RIG_FORMAT_ARKIT52)
        if lookahead_ms is not None:
            config.lookahead_ms = lookahead_ms
        return PerformStream(self.stub, config, timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "NpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
