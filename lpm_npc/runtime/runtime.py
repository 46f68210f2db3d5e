"""The runtime: characters, renderer and live sessions, usable in-process or behind gRPC."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

from .. import __version__
from ..audio import feature_kernel
from ..character.store import CharacterInfo, CharacterStore
from ..config import MAX_SIZE, SUPPORTED_FPS, ServerConfig, SessionOptions, auto_worker_processes, usable_cores
from ..errors import CapacityError
from ..render.backends import available_backends as _available_backends
from ..render.backends import make_renderer
from .calibration import measure_talking_frame_cost
from .capacity import Capacity, FrameCost
from .fronts import DirectoryResumeStore, FrontContext, LoadFigures, MemoryResumeStore
from .rig_cache import PreparedRigs
from .scheduler import FrameScheduler
from .session import PerformSession

log = logging.getLogger(__name__)

LOAD_PUBLISH_S = 0.2   # with several fronts: how often a front refreshes its figures in the shared load

# One front's resume store (the name tests and older code use); several fronts share a directory.
ResumeStore = MemoryResumeStore


def available_backends() -> list[str]:
    """'backend:device' renderers this machine can run (see lpm_npc.render.backends)."""
    return _available_backends()


class Runtime:
    """Owns the character store, the renderer and the session registry."""

    def __init__(self, config: ServerConfig | None = None, front: FrontContext | None = None):
        self.config = config or ServerConfig()
        # With several front processes on one port (runtime/fronts.py) this one is `front.slot`; admission,
        # the resume store and character deletes then count for the whole server.
        self.front = front if front is not None and front.count > 1 else None
        self.store = CharacterStore(self.config.cache_dir)
        self.renderer = make_renderer(self.config.backend, self.config.device, self.config.cache_dir)
        feature_kernel.warm_up()  # the speech features' compiled steps, before any session's audio
        self.resume = (DirectoryResumeStore(self.front.resume_dir) if self.front is not None
                       else MemoryResumeStore())
        self._sessions: dict[str, PerformSession] = {}
        self._prepared = PreparedRigs(self.config.idle_rig_cache_mb)  # renderer-ready rigs by character id
        self._lock = threading.Lock()
        self._opening_ms_per_s = 0.0  # admitted load of sessions still being opened
        self._opening_fps = 0         # and their frames per second (the server process's load)
        self.scheduler = FrameScheduler(self.renderer, workers=self.config.render_threads,
                                        coalesce_s=self.config.coalesce_ms / 1000.0)
        # Sessions sharded over worker processes (runtime/workers.py); None = all in this process.
        self.pool = None
        if self.config.worker_processes > 0:
            from .workers import WorkerPool

            self.pool = WorkerPool(self.config, service=front.service if front is not None else None)
        self.capacity: Capacity | None = None
        if self.config.frame_cost_fixed_ms > 0 and self.config.frame_cost_per_mpx_ms > 0:
            self.capacity = self._capacity(FrameCost(self.config.frame_cost_fixed_ms,
                                                     self.config.frame_cost_per_mpx_ms))
        self._closed = threading.Event()
        if self.front is not None:
            self.publish_load()
            threading.Thread(target=self._publish_periodically, name="front-load", daemon=True).start()

    # -- capacity -------------------------------------------------------------------------------
    def _makers(self) -> int:
        """Frame makers working at once: the worker processes (one frame thread each), or the render threads."""
        return max(1, self.config.worker_processes or self.config.render_threads)

    def _budget_ms_per_s(self) -> float:
        return 1000.0 * self._makers() * self.config.utilisation

    def _capacity(self, cost: FrameCost) -> Capacity:
        """The makers' budget, and with worker processes the server process's own (one core)."""
        front = self.config.front_cost_ms if self.pool is not None else 0.0
        return Capacity(cost, self._budget_ms_per_s(), front_ms_per_frame=max(0.0, front),
                        front_budget_ms_per_s=1000.0 * self.config.utilisation if front > 0 else 0.0)

    def calibrate(self) -> Capacity:
        """Measure what a talking NPC's frame costs here, with every frame maker working at once (the
        render threads of this process, which share one GIL; or the worker processes, which share the
        cores), so the budget promises only what they can make together."""
        if self.capacity is not None:
            return self.capacity
        from ..config import DEFAULT_CHARACTER_ID

        self._meet_sibling_fronts()
        if self.pool is not None:
            cost = self.pool.calibrate()
        else:
            rig = self.store.get(DEFAULT_CHARACTER_ID)
            prepared = self._prepare(DEFAULT_CHARACTER_ID, rig)
            cost = measure_talking_frame_cost(rig, prepared, self.renderer, makers=self._makers())
        cost = FrameCost(cost.fixed_ms + self.config.serve_cost_fixed_ms,
                         cost.per_mpx_ms + self.config.serve_cost_per_mpx_ms)
        self.capacity = self._capacity(cost)
        cap = self.capacity
        log.info("capacity: %.0f frame-maker ms/s, %.2f ms + %.2f ms/Mpx per frame with serving%s; about %d NPCs "
                 "at 256x256@30, %d at 512x512@30", cap.budget_ms_per_s, cap.cost.fixed_ms, cap.cost.per_mpx_ms,
                 f"; the server process sends at most {cap.max_frames_per_s:.0f} frames/s"
                 if cap.max_frames_per_s is not None else "",
                 cap.max_sessions_at(256, 256, 30), cap.max_sessions_at(512, 512, 30))
        return cap

    def _meet_sibling_fronts(self, timeout: float = 120.0) -> None:
        """With several fronts started together: wait until all are about to calibrate (see FrontContext)."""
        if self.front is None or not self.front.meet_to_calibrate:
            return
        if not self.front.load.meet(timeout):
            log.warning("the other front processes did not calibrate at the same time; this one measured alone")

    def committed_ms_per_s(self, exclude: PerformSession | None = None) -> float:
        with self._lock:
            return self._committed_locked(exclude)

    def _committed_fps_locked(self, exclude: PerformSession | None = None) -> int:
        """Frames per second the server process sends for live and opening sessions (caller holds the lock)."""
        return self._opening_fps + sum(s.output.fps for s in self._sessions.values()
                                       if not s.paused and s is not exclude)

    def _committed_locked(self, exclude: PerformSession | None = None) -> float:
        """Live sessions' load plus the sessions being opened right now (caller holds self._lock)."""
        if self.capacity is None:
            return 0.0
        sessions = [s for s in self._sessions.values() if not s.paused and s is not exclude]
        return self._opening_ms_per_s + sum(
            self.capacity.load_ms_per_s(s.output.width, s.output.height, s.output.fps) for s in sessions)

    # -- several fronts: the whole server's load ---------------------------------------------------
    def _own_figures_locked(self) -> LoadFigures:
        """This front's committed load (caller holds self._lock)."""
        return LoadFigures(self._committed_locked(), float(self._committed_fps_locked()), len(self._sessions),
                           self.capacity.budget_ms_per_s if self.capacity is not None else 0.0)

    def publish_load(self) -> None:
        """Write this front's figures where the other fronts read them (no-op with one front)."""
        if self.front is None:
            return
        with self._lock, self.front.load.lock:
            self._publish_locked()

    def _publish_locked(self) -> None:
        """(caller holds self._lock and the shared lock) A closed front publishes nothing: `close` cleared it."""
        if self.front is not None and not self._closed.is_set():
            self.front.load.publish(self.front.slot, self._own_figures_locked())

    def _publish_periodically(self) -> None:
        while not self._closed.wait(LOAD_PUBLISH_S):
            self.publish_load()

    def _others(self) -> LoadFigures:
        """The other fronts' figures (exact while the caller holds the shared lock); none with one front."""
        return self.front.load.others(self.front.slot) if self.front is not None else LoadFigures()

    def admit(self, width: int, height: int, fps: int, replacing: PerformSession | None = None) -> None:
        """Raise CapacityError if a (width, height, fps) stream would overload the renderer."""
        self._reserve(width, height, fps, replacing, hold=False)

    def _reserve(self, width: int, height: int, fps: int, replacing: PerformSession | None = None,
                 hold: bool = True) -> tuple[float, int]:
        """Admit a stream; with `hold` its load counts as committed until `_release`d (once the session
        is registered, or its opening failed), and is returned as (ms/s, fps). Many NPCs opened at once
        (a scene loading) would otherwise all be checked against the same committed load before any of
        them is counted, and all be admitted."""
        cap = self.capacity
        if cap is None or not self.config.admission:
            return (0.0, 0)
        need = cap.load_ms_per_s(width, height, fps)
        with self._lock, self._shared_lock():
            others = self._others()   # the other fronts' (all zero with one front)
            committed = self._committed_locked(exclude=replacing) + others.ms_per_s
            budget = cap.budget_ms_per_s + others.budget_ms_per_s
            sending = self._committed_fps_locked(exclude=replacing)   # this process's own: its own limit
            makers_fit = committed + need <= budget
            front_fits = cap.max_frames_per_s is None or sending + fps <= cap.max_frames_per_s
            if makers_fit and front_fits:
                if hold:
                    self._opening_ms_per_s += need
                    self._opening_fps += fps
                    self._publish_locked()   # the other fronts see the reservation before the lock is let go
                return (need, fps) if hold else (0.0, 0)
        advice = ("Lower the size or fps of far NPCs (Control ACTION_SET_OUTPUT), pause hidden ones "
                  "(ACTION_PAUSE), or start another server")
        if not makers_fit:
            fits = int(cap.max_sessions_at(width, height, fps) * budget / max(1e-9, cap.budget_ms_per_s))
            raise CapacityError(
                f"rendering capacity is full: live sessions commit {committed:.0f} of "
                f"{budget:.0f} render-ms per second and a {width}x{height}@{fps} stream needs "
                f"{need:.0f} more (this server fits about {fits} such streams). {advice}{self._more_hint()}.")
        which = "the server process" if self.front is None else f"front process {self.front.slot}"
        another = ("" if self.front is None else
                   f" (the server has {self.front.count} front processes on this port; the kernel picks one "
                   f"per connection, so a new connection may land on one with room)")
        raise CapacityError(
            f"{which} is at its sending capacity: it sends {sending} frames per second for live "
            f"sessions and can send about {cap.max_frames_per_s:.0f} on time ({cap.front_ms_per_frame:.2f} ms "
            f"of its time each, config front_cost_ms), so a {fps} fps stream would make every NPC late{another}. "
            f"{advice}.")

    def _shared_lock(self):
        """The lock over all fronts' figures (a no-op context with one front)."""
        return self.front.load.lock if self.front is not None else contextlib.nullcontext()

    def _release(self, reserved: tuple[float, int]) -> None:
        with self._lock:
            self._release_locked(reserved)

    def _release_locked(self, reserved: tuple[float, int]) -> None:
        self._opening_ms_per_s -= reserved[0]
        self._opening_fps -= reserved[1]

    def _more_hint(self) -> str:
        """How this machine could give more, when the server leaves cores unused."""
        cores = usable_cores()
        if self.pool is None and cores > 1 and self.config.device == "cpu":
            return (f"; this server makes frames in one process (one Python GIL), so it uses about one of this "
                    f"machine's {cores} cores: `lpm-npc serve --workers auto` shards sessions over "
                    f"{auto_worker_processes(self.config.device)} processes")
        return ""

    # -- sessions -------------------------------------------------------------------------------
    def open_session(self, options: SessionOptions, seed: int | None = None) -> PerformSession:
        """Validate, load the character and start a session. Raises LpmError subclasses."""
        options = options.validated()
        with self._lock:
            if len(self._sessions) + self._others().sessions >= self.config.max_sessions:
                raise CapacityError(
                    f"the server is at its capacity of {self.config.max_sessions} sessions; "
                    "close an NPC session or start another server (--max-sessions)."
                )
        o = options.output
        reserved = self._reserve(o.width, o.height, o.fps)
        try:
            # Loads (or builds and caches on disk) the rig here: a worker process loads it from the cache.
            rig = self.store.get(options.character_id)
            resume_state = self.resume.take(options.resume_token) if options.resume_token else None
            if self.pool is not None:
                session = self.pool.open_session(options, self._new_session_id(), seed=seed,
                                                 resume_state=resume_state)
            else:
                prepared = self._prepare(options.character_id, rig)
                session = PerformSession(options, rig, prepared, self.renderer, resume_state=resume_state,
                                         seed=seed, session_id=self._new_session_id())
        except BaseException:
            self._release(reserved)
            raise
        with self._lock, self._shared_lock():
            self._release_locked(reserved)  # from here on the session itself counts (same lock hold)
            full = len(self._sessions) + self._others().sessions >= self.config.max_sessions
            if not full:
                self._sessions[session.session_id] = session
            self._publish_locked()
        if full:
            if getattr(session, "remote", False):
                session.close()
            raise CapacityError(f"the server is at its capacity of {self.config.max_sessions} sessions.")
        log.info("session %s opened: character=%s %dx%d@%d %s", session.session_id,
                 options.character_id, options.output.width, options.output.height,
                 options.output.fps, options.output.pixel_format.value)
        return session

    def _new_session_id(self) -> str:
        """16 hex digits; with several fronts, then the front's slot (`...-f2`: which process serves it)."""
        sid = uuid.uuid4().hex[:16]
        return sid if self.front is None else f"{sid}-f{self.front.slot}"

    def close_session(self, session: PerformSession) -> None:
        with self._lock:
            removed = self._sessions.pop(session.session_id, None)
        self.publish_load()
        if removed is not None and getattr(session, "remote", False):
            # The worker answers with the state later; the resume store gets it then.
            session.close(lambda state, sid=session.session_id: self.resume.put(sid, state))
            log.info("session %s closed after %d frames", session.session_id, session.frames_rendered)
        elif removed is not None:
            self.resume.put(session.session_id, session.state_dict())
            log.info("session %s closed after %d frames", session.session_id, session.frames_rendered)
            self._let_go_of_idle_rigs()

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
        self._prepared.discard(character_id)
        return deleted

    def list_characters(self) -> list[CharacterInfo]:
        return self.store.list()

    def _prepare(self, character_id: str, rig):
        prepared = self._prepared.get(character_id)
        if prepared is None:
            prepared = self._prepared.put(character_id, self.renderer.prepare(rig))
            self._let_go_of_idle_rigs(keep=character_id)
        return prepared

    def _let_go_of_idle_rigs(self, keep: str | None = None) -> None:
        """Idle prepared rigs beyond `config.idle_rig_cache_mb` go (rig_cache.py); those of live sessions stay
        (a session holds its own reference: letting go of it would only make the next session prepare
        a second copy)."""
        with self._lock:
            in_use = {s.options.character_id for s in self._sessions.values()}
        self._prepared.trim(in_use | ({keep} if keep else set()))

    # -- info -----------------------------------------------------------------------------------
    def info(self) -> dict:
        """What GetServerInfo answers: with several fronts, the whole server's sessions and load."""
        others = self._others_now()
        return {
            "version": __version__,
            "backends": available_backends(),
            "active_backend": self.renderer.name,
            "max_sessions": self.config.max_sessions,
            "active_sessions": self.active_sessions + others.sessions,
            "max_width": MAX_SIZE,
            "max_height": MAX_SIZE,
            "supported_fps": list(SUPPORTED_FPS),
            "max_message_bytes": self.config.max_message_bytes,
            "capacity_pixels_per_s": (self.capacity.pixels_per_s(self.capacity.budget_ms_per_s + others.budget_ms_per_s)
                                      if self.capacity else 0),
            "committed_pixels_per_s": (self.capacity.pixels_per_s(self.committed_ms_per_s() + others.ms_per_s)
                                       if self.capacity else 0),
        }

    def _others_now(self) -> LoadFigures:
        if self.front is None:
            return LoadFigures()
        with self.front.load.lock:
            return self._others()

    def worker_pids(self) -> list[int]:
        """Process ids of the live render workers (empty without worker processes)."""
        return self.pool.pids() if self.pool is not None else []

    def close(self) -> None:
        self._closed.set()   # before clear() takes the shared lock: a publish after that sees it and skips
        if self.front is not None:
            self.front.load.clear(self.front.slot)
        if self.pool is not None:
            self.pool.close()
        self.scheduler.close()
        self.store.close()
