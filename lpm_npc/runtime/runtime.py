"""The runtime: characters, renderer and live sessions, usable in-process or behind gRPC."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import torch

from .. import __version__
from ..character.store import CharacterInfo, CharacterStore
from ..config import MAX_SIZE, SUPPORTED_FPS, ServerConfig, SessionOptions
from ..errors import CapacityError
from ..render.renderer import TorchRenderer
from .session import PerformSession

log = logging.getLogger(__name__)

RESUME_TTL_S = 600.0
RESUME_MAX = 512
MAX_PREPARED = 64


class ResumeStore:
    """Motion/emotion state of ended sessions, kept for a while so a reconnect continues it."""

    def __init__(self, ttl_s: float = RESUME_TTL_S, max_entries: int = RESUME_MAX):
        self._ttl = ttl_s
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, token: str, state: dict) -> None:
        with self._lock:
            self._items[token] = (time.monotonic(), state)
            self._items.move_to_end(token)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def take(self, token: str) -> dict | None:
        with self._lock:
            item = self._items.pop(token, None)
        if item is None or time.monotonic() - item[0] > self._ttl:
            return None
        return item[1]


def available_backends() -> list[str]:
    backends = ["torch-cpu"]
    if torch.cuda.is_available():
        backends.append("torch-cuda")
    return backends


class Runtime:
    """Owns the character store, the renderer and the session registry."""

    def __init__(self, config: ServerConfig | None = None):
        self.config = config or ServerConfig()
        self.store = CharacterStore(self.config.cache_dir)
        self.renderer = TorchRenderer(device=self.config.device)
        self.resume = ResumeStore()
        self._sessions: dict[str, PerformSession] = {}
        self._prepared: OrderedDict[str, object] = OrderedDict()  # LRU of renderer-ready rigs
        self._lock = threading.Lock()

    # -- sessions -------------------------------------------------------------------------------
    def open_session(self, options: SessionOptions, seed: int | None = None) -> PerformSession:
        """Validate, load the character and start a session. Raises LpmError subclasses."""
        options = options.validated()
        with self._lock:
            if len(self._sessions) >= self.config.max_sessions:
                raise CapacityError(
                    f"the server is at its capacity of {self.config.max_sessions} sessions; "
                    "close an NPC session or start another server (--max-sessions)."
                )
        rig = self.store.get(options.character_id)
        prepared = self._prepare(options.character_id, rig)
        resume_state = self.resume.take(options.resume_token) if options.resume_token else None
        session = PerformSession(options, rig, prepared, self.renderer, resume_state=resume_state,
                                 seed=seed)
        with self._lock:
            if len(self._sessions) >= self.config.max_sessions:
                raise CapacityError(
                    f"the server is at its capacity of {self.config.max_sessions} sessions."
                )
            self._sessions[session.session_id] = session
        log.info("session %s opened: character=%s %dx%d@%d %s", session.session_id,
                 options.character_id, options.output.width, options.output.height,
                 options.output.fps, options.output.pixel_format.value)
        return session

    def close_session(self, session: PerformSession) -> None:
        with self._lock:
            removed = self._sessions.pop(session.session_id, None)
        if removed is not None:
            self.resume.put(session.session_id, session.state_dict())
            log.info("session %s closed after %d frames", session.session_id, session.frames_rendered)

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def sessions(self) -> list[PerformSession]:
        with self._lock:
            return list(self._sessions.values())

    # -- characters -----------------------------------------------------------------------------
    def delete_character(self, character_id: str) -> bool:
        deleted = self.store.delete(character_id)
        with self._lock:
            self._prepared.pop(character_id, None)
        return deleted

    def list_characters(self) -> list[CharacterInfo]:
        return self.store.list()

    def _prepare(self, character_id: str, rig):
        with self._lock:
            prepared = self._prepared.get(character_id)
            if prepared is not None:
                self._prepared.move_to_end(character_id)
        if prepared is None:
            prepared = self.renderer.prepare(rig)
            with self._lock:
                self._prepared[character_id] = prepared
                while len(self._prepared) > MAX_PREPARED:
                    self._prepared.popitem(last=False)  # live sessions keep their own reference
        return prepared

    # -- info -----------------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "version": __version__,
            "backends": available_backends(),
            "active_backend": self.renderer.name,
            "max_sessions": self.config.max_sessions,
            "active_sessions": self.active_sessions,
            "max_width": MAX_SIZE,
            "max_height": MAX_SIZE,
            "supported_fps": list(SUPPORTED_FPS),
            "max_message_bytes": self.config.max_message_bytes,
        }

    def close(self) -> None:
        self.store.close()
