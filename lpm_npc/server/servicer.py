"""The gRPC service: a thin shell over `Runtime` / `PerformSession`.

Each Perform stream runs three cooperating pieces on the event loop:
  * a reader task that applies client messages to the session (bad ones -> non-fatal Error),
  * a pump task that paces frames on the wall clock and renders them in a thread pool,
  * the handler itself, writing from a bounded OutboundQueue (slow readers lose old frames).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import grpc

from ..errors import CapacityError, LpmError
from ..performance.direction import interpret_or_none, validate_direction
from ..runtime.runtime import Runtime
from ..runtime.scheduler import SchedulerClosedError, aligned_start
from ..performance.arkit import ARKIT_NAMES, rig_frame_fields
from ..runtime.workers import WorkerExitedError
from ..runtime.session import RIG_CHANNEL_NAMES, PerformSession, StageTimes, rig_weights
from ..types import EventType
from ..v1 import lpm_npc_pb2 as pb
from ..v1 import lpm_npc_pb2_grpc as pb_grpc
from . import convert
from .outbound import OutboundQueue
from .stats import StreamStats

log = logging.getLogger(__name__)

# After the client half-closes, keep streaming until queued NPC speech has been shown, plus this.
LINGER_AFTER_INPUT_S = 0.5
# A pump behind the clock renders back-to-back to catch up (frames that late are still shown by a
# client's jitter buffer); only beyond this it skips ahead, since such frames would arrive too late.
MAX_CATCH_UP_S = 0.1
FRAMES_IN_FLIGHT = 2  # per session in a worker process: the next request goes out before the last frame is back
SKIP_LOG_INTERVAL_S = 5.0  # at most one 'behind the clock' warning per session per interval


def frames_in_flight(session, runtime) -> int:
    """How many frame requests a session's pump keeps out at once: FRAMES_IN_FLIGHT for a session in a
    worker process whose frames a render service makes (this front's own, or with several fronts front
    0's, which this front only knows by its endpoint), else 1 (see `_pump`)."""
    pool = getattr(runtime, "pool", None)
    remote = getattr(session, "remote", False)
    return FRAMES_IN_FLIGHT if remote and pool is not None and pool.renders_through_service else 1


class _Stream:
    """State of one Perform stream shared by its reader, pump and writer."""

    def __init__(self, session: PerformSession, out: OutboundQueue):
        self.session = session
        self.out = out
        self.stats = StreamStats()
        self.input_done = asyncio.Event()
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()  # resume / output change
        self.t0 = time.monotonic()  # wall time of pts 0, set by the pump
        self.last_pts_us = 0
        self.pending_state: asyncio.Future | None = None  # a directed state being interpreted
        self.pump: asyncio.Task | None = None

    def error(self, exc: LpmError | str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
              fatal: bool = False) -> None:
        if isinstance(exc, LpmError):
            code, message = exc.status, exc.message
        else:
            message = exc
        self.out.put(pb.ServerMessage(error=pb.Error(code=code.value[0], message=message, fatal=fatal)))

    def event(self, etype: EventType, pts_s: float, detail: str = "") -> None:
        self.out.put(pb.ServerMessage(event=pb.Event(type=convert.EVENT_TO_PB[etype],
                                                     pts_us=int(round(pts_s * 1e6)), detail=detail)))


class NpcServicer(pb_grpc.NpcServiceServicer):
    def __init__(self, runtime: Runtime, executor: ThreadPoolExecutor):
        self.runtime = runtime
        self.executor = executor
        self.streams: set[_Stream] = set()
        self.draining = False

    # -- Perform ------------------------------------------------------------------------------
    async def Perform(self, request_iterator, context: grpc.aio.ServicerContext):
        loop = asyncio.get_running_loop()
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the server is shutting down; connect to another instance.")
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("msg") != "config":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the first message of a Perform stream must be `config` (SessionConfig), got "
                f"`{first.WhichOneof('msg') or 'an empty message'}`: configure the session before "
                "sending audio, state or control.")
        try:
            options = convert.session_options_from_pb(first.config)
            session = await loop.run_in_executor(self.executor, self.runtime.open_session, options)
        except LpmError as exc:
            if isinstance(exc, CapacityError):  # the operator should see refusals, not only the client
                log.info("session refused (%s): %s", exc.status.name, exc.message)
            await context.abort(exc.status, exc.message)

        out = OutboundQueue(self.runtime.config.outbound_queue_frames)
        stream = _Stream(session, out)
        self.streams.add(stream)
        o = session.output
        out.put(pb.ServerMessage(started=pb.SessionStarted(
            session_id=session.session_id, character_id=options.character_id, fps=o.fps,
            width=o.width, height=o.height, pixel_format=convert.PIXEL_FORMAT_TO_PB[o.pixel_format],
            lookahead_ms=options.lookahead_ms, npc_sample_rate=options.npc_sample_rate,
            resume_token=session.session_id,
            rig_channel_names=list(ARKIT_NAMES if options.rig_format == "arkit52" else RIG_CHANNEL_NAMES),
            server_version=self.runtime.info()["version"])))
        reader = asyncio.create_task(self._read(request_iterator, stream))
        pump = stream.pump = asyncio.create_task(self._pump(stream))
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                for message in item:
                    if isinstance(message, pb.ServerMessage):
                        await context.write(message)
                    elif isinstance(message, tuple):  # ("made", monotonic time the frame was made)
                        stream.stats.transport((time.monotonic() - message[1]) * 1000.0)
                    elif isinstance(message, list):  # the NPC audio chunks this frame is first to show
                        # Latency counts from when the chunk could first be shown: its arrival, or
                        # its own time on the session clock if the game sent it ahead of time.
                        now = time.monotonic()
                        for arrived, start_s in message:
                            ready = max(arrived, stream.t0 + start_s)
                            stream.stats.latency(max(0.0, now - ready) * 1000.0)
                if item and isinstance(item[0], pb.ServerMessage) and item[0].HasField("frame"):
                    stream.stats.frame_sent()
            if pump.done() and pump.exception() is not None:
                raise pump.exception()
        except asyncio.CancelledError:
            log.info("session %s: client went away", session.session_id)
            raise
        finally:
            stream.stop.set()
            reader.cancel()
            pump.cancel()
            self.streams.discard(stream)
            log.info("session %s: %d frames sent, %d skipped (render late), %d dropped for a "
                     "slow reader", session.session_id, stream.stats.frames_sent, session.frames_skipped,
                     out.dropped)
            self.runtime.close_session(session)

    async def _read(self, request_iterator, stream: _Stream) -> None:
        session = stream.session
        limit = self.runtime.config.max_audio_chunk_bytes
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("msg")
                try:
                    if kind == "audio":
                        a = msg.audio
                        if a.channel not in convert.CHANNEL_FROM_PB:
                            stream.error("audio chunk has no channel: set channel to PLAYER or NPC.")
                            continue
                        if len(a.pcm) > limit:
                            stream.error(f"audio chunk of {len(a.pcm)} bytes is over the {limit}-byte "
                                         "limit: send chunks of 20-200 ms.")
                            continue
                        events = session.push_audio(
                            convert.CHANNEL_FROM_PB[a.channel], a.pcm, a.sample_rate, a.num_channels,
                            a.sample_index if a.HasField("sample_index") else None, a.text,
                            arrived_at=time.monotonic())
                        for ev in events:
                            self._emit_event(stream, ev)
                    elif kind == "state":
                        await self._state_settled(stream)
                        s = msg.state
                        if s.phase not in convert.PHASE_FROM_PB or s.emotion not in convert.EMOTION_FROM_PB:
                            stream.error("unknown phase or emotion value; see the Phase and Emotion enums.")
                            continue
                        emotion = convert.EMOTION_FROM_PB[s.emotion]
                        intensity = s.intensity if (s.intensity > 0 or emotion is None) else 1.0
                        args = (convert.PHASE_FROM_PB[s.phase], emotion, intensity, s.transition_ms or 300,
                                s.direction)
                        if s.direction:
                            validate_direction(s.direction)
                            stream.pending_state = asyncio.ensure_future(self._apply_directed_state(stream, args))
                        else:
                            session.set_dialogue_state(*args)
                    elif kind == "control":
                        await self._state_settled(stream)
                        self._control(stream, msg.control)
                    elif kind == "config":
                        stream.error("the session is already configured; use Control "
                                     "ACTION_SET_OUTPUT to change size or fps.",
                                     grpc.StatusCode.FAILED_PRECONDITION)
                    else:
                        stream.error("empty ClientMessage: set one of config/audio/state/control.")
                except LpmError as exc:
                    stream.error(exc)
            await self._state_settled(stream)  # the client half-closed: its last direction still applies
        except asyncio.CancelledError:
            raise
        except Exception:  # the transport failed; the writer side notices and cleans up
            log.debug("session %s: read loop ended", session.session_id, exc_info=True)
        finally:
            if stream.pending_state is not None:
                stream.pending_state.cancel()
            stream.input_done.set()
            stream.wake.set()

    async def _apply_directed_state(self, stream: _Stream, args: tuple) -> None:
        """Interpret a state's direction off the event loop (the sentence model takes tens of ms, more
        when the render threads are busy), then apply the state on it.

        The reader does not wait for this: the NPC line a direction belongs to usually follows it
        within milliseconds, and holding its audio back made the line's first chunk late. Later state
        and control messages do wait (_state_settled), so those keep their order."""
        session = stream.session
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.executor, interpret_or_none, args[-1], session.next_pts())
            session.set_dialogue_state(*args, direction_result=result)
        except LpmError as exc:
            stream.error(exc)
        except Exception as exc:  # noqa: BLE001 - the stream and its reader go on without this state
            log.exception("session %s: applying a directed state failed", session.session_id)
            stream.error(f"internal error applying the dialogue state: {exc}", grpc.StatusCode.INTERNAL)

    @staticmethod
    async def _state_settled(stream: _Stream) -> None:
        if stream.pending_state is not None:
            pending, stream.pending_state = stream.pending_state, None
            await pending

    def _control(self, stream: _Stream, control: pb.Control) -> None:
        session = stream.session
        A = pb.Control
        if control.action == A.ACTION_INTERRUPT:
            session.interrupt()
        elif control.action == A.ACTION_PAUSE:
            session.pause()
            stream.event(EventType.PAUSED, session.next_pts())
        elif control.action == A.ACTION_RESUME:
            session.resume()
            stream.event(EventType.RESUMED, session.next_pts())
            stream.wake.set()
        elif control.action == A.ACTION_SET_OUTPUT:
            cur = session.output
            new = cur.with_changes(width=control.width or cur.width, height=control.height or cur.height,
                                   fps=control.fps or cur.fps).validated()
            if not session.paused:
                self.runtime.admit(new.width, new.height, new.fps, replacing=session)
            o = session.set_output(control.width, control.height, control.fps)
            stream.event(EventType.OUTPUT_CHANGED, session.next_pts(), f"{o.width}x{o.height}@{o.fps}")
            stream.wake.set()
        else:
            stream.error("control without an action: set ACTION_INTERRUPT, PAUSE, RESUME or SET_OUTPUT.")

    async def _pump(self, stream: _Stream) -> None:
        """Render frames at the session's rate on the wall clock, off the event loop.

        Stats go out every stats interval, also while paused: they double as the application
        heartbeat that keeps hour-long streams alive through proxies.
        """
        session, out = stream.session, stream.out
        lookahead = session.lookahead_s
        interval = session.options.stats_interval_ms / 1000.0
        # Start on the server-wide tick grid: sessions at the same fps become due together and are
        # rendered in one batched call.
        t0 = stream.t0 = aligned_start(session.output.fps)
        next_stats = t0 + interval
        linger_until: float | None = None
        last_skip_log = -1e9
        last_wall, last_times = 0.0, StageTimes()  # the last frame's request-to-result time and stage times
        # With a render service a frame passes the worker (motion), then the service (the batched
        # render of every worker's tick), so request to result can take longer than a frame interval.
        # A session in a worker process takes its frame index when the request is made
        # (FrameScheduler.request), so its next request goes out at its due time while the previous
        # frame is still being made, and the rate holds; a frame goes out as soon as it is back.
        # Elsewhere one request is in flight: in-process sessions take their index only when the
        # scheduler begins the frame, and for workers that render themselves two in flight gave
        # no clear gain on the 2-core VM (8 x 256^2, two rounds each: p95 57/97 ms against 66/61 ms).
        depth = frames_in_flight(session, self.runtime)
        inflight: deque = deque()

        async def deliver_oldest() -> None:
            nonlocal last_wall, last_times
            t_request, fut = inflight.popleft()
            frame = await fut
            last_wall, last_times = time.monotonic() - t_request, frame.times
            stream.stats.rendered(frame.times, frame.batch_size)
            stream.last_pts_us = frame.pts_us
            out.put_frame(*self._frame_messages(session, frame))
            for ev in frame.events:
                self._emit_event(stream, ev)

        try:
            while not stream.stop.is_set():
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = max(next_stats + interval, now)
                    self._send_stats(stream)
                if session.paused:
                    while inflight:
                        await deliver_oldest()
                    stream.wake.clear()
                    if stream.input_done.is_set():
                        break
                    try:
                        await asyncio.wait_for(stream.wake.wait(), timeout=max(0.0, next_stats - now))
                    except asyncio.TimeoutError:
                        continue
                    # Frames of the paused time cost nothing: jump the clock to now.
                    session.skip_to(session.clock.index_at(time.monotonic() - t0 - lookahead),
                                    count_as_dropped=False)
                    continue
                if stream.input_done.is_set() and not session.npc_audio_pending():
                    linger_until = linger_until or now + LINGER_AFTER_INPUT_S
                    if now >= linger_until:
                        break
                due = t0 + session.next_pts() + lookahead
                if due > now and inflight:
                    # A frame still being made goes out as soon as it is done, not when the next
                    # request is due (that held every frame back by up to one frame interval).
                    oldest = inflight[0][1]
                    await asyncio.wait((oldest,), timeout=due - now)
                    if oldest.done():
                        await deliver_oldest()
                        continue
                elif due > now:
                    await asyncio.sleep(due - now)
                elif now - due > MAX_CATCH_UP_S:
                    skipped = session.skip_to(session.clock.index_at(now - t0 - lookahead))
                    if now - last_skip_log >= SKIP_LOG_INTERVAL_S:
                        last_skip_log = now
                        t = last_times
                        log.warning("session %s: %.0f ms behind the clock, skipped %d frames (the frame before "
                                    "took %.0f ms from request to result: audio %.1f, motion %.1f, render %.1f, "
                                    "encode %.1f ms of work); the machine is short of CPU for its sessions",
                                    session.session_id, (now - due) * 1000.0, skipped, last_wall * 1000.0,
                                    t.audio * 1e3, t.motion * 1e3, t.render * 1e3, t.encode * 1e3)
                inflight.append((time.monotonic(), self.runtime.scheduler.request(session)))
                while len(inflight) >= depth or (inflight and inflight[0][1].done()):
                    await deliver_oldest()
            while inflight:  # the stream ends after the frames already asked for
                await deliver_oldest()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.draining and isinstance(exc, (SchedulerClosedError, WorkerExitedError)):
                # The server is going away and said so (SERVER_DRAINING): the stream just ends.
                log.info("session %s: the stream ends with the server (%s)", session.session_id, exc)
                return
            log.exception("session %s: render failed", session.session_id)
            stream.error(f"internal render error: {exc}", grpc.StatusCode.INTERNAL, fatal=True)
        finally:
            for _, fut in inflight:
                fut.cancel()
            out.close()

    @staticmethod
    def _emit_event(stream: _Stream, ev) -> None:
        stream.event(ev.type, ev.t_s, ev.detail)
        if ev.type is EventType.DIRECTION_APPLIED and ev.data is not None:
            stream.out.put(pb.ServerMessage(direction=convert.direction_result_pb(ev.data)))

    @staticmethod
    def _send_stats(stream: _Stream) -> None:
        s = stream.stats.take_interval()
        stream.out.put(pb.ServerMessage(stats=pb.Stats(
            fps=s["fps"], frames_sent=s["frames_sent"],
            frames_dropped=stream.out.dropped + stream.session.frames_skipped,
            queue_depth=stream.out.frames_waiting, latency_p50_ms=s["latency_p50_ms"],
            latency_p95_ms=s["latency_p95_ms"], latency_p99_ms=s["latency_p99_ms"], render_ms=s["render_ms"],
            render_batch_mean=s["batch_mean"], audio_ms=s["audio_ms"], motion_ms=s["motion_ms"],
            encode_ms=s["encode_ms"], transport_ms=s["transport_ms"], pts_us=stream.last_pts_us)))

    @staticmethod
    def _frame_messages(session: PerformSession, frame) -> list:
        e = frame.encoded
        # Fill the frame in place: `ServerMessage(frame=VideoFrame(data=...))` copies the finished
        # submessage (pixels included) a second time, ~0.4-0.9 ms per 256x256 RGBA frame.
        msg = pb.ServerMessage()
        vf = msg.frame
        vf.index, vf.pts_us, vf.pts_samples = frame.index, frame.pts_us, frame.pts_samples
        vf.width, vf.height, vf.stride = e.width, e.height, e.stride
        vf.format, vf.flip_y, vf.data = convert.PIXEL_FORMAT_TO_PB[e.pixel_format], e.flip_y, e.data
        messages: list = [msg]
        if session.options.send_rig:
            fields = rig_frame_fields(frame.motion.values)
            if session.options.rig_format != "arkit52":
                fields["weights"] = rig_weights(frame.motion).tolist()
            messages.append(pb.ServerMessage(rig=pb.RigFrame(
                index=frame.index, pts_us=frame.pts_us, pts_samples=frame.pts_samples, **fields)))
        if frame.shows_chunks:
            messages.append(frame.shows_chunks)
        messages.append(("made", time.monotonic()))
        return messages

    # -- characters and info -------------------------------------------------------------------
    async def RegisterCharacter(self, request, context):
        loop = asyncio.get_running_loop()
        try:
            info, cached = await loop.run_in_executor(
                self.executor, self.runtime.store.register, request.portrait,
                list(request.extra_references), request.display_name)
        except LpmError as exc:
            await context.abort(exc.status, exc.message)
        return pb.RegisterCharacterResponse(character=_info_pb(info), cached=cached)

    async def ListCharacters(self, request, context):
        infos = await asyncio.get_running_loop().run_in_executor(self.executor, self.runtime.list_characters)
        return pb.ListCharactersResponse(characters=[_info_pb(i) for i in infos])

    async def DeleteCharacter(self, request, context):
        try:
            deleted = self.runtime.delete_character(request.character_id)
        except LpmError as exc:
            await context.abort(exc.status, exc.message)
        if not deleted:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown character id {request.character_id!r}: nothing to delete.")
        return pb.DeleteCharacterResponse(deleted=True)

    async def GetServerInfo(self, request, context):
        return pb.ServerInfo(**self.runtime.info())

    # -- shutdown ------------------------------------------------------------------------------
    def announce_drain(self) -> None:
        self.draining = True
        for stream in list(self.streams):
            stream.event(EventType.SERVER_DRAINING, stream.session.next_pts(),
                         f"resume_token={stream.session.session_id}")

    async def stop_pumps(self, timeout_s: float = 2.0) -> None:
        """Stop making frames for the streams left after the drain (before the runtime closes)."""
        pumps = [s.pump for s in list(self.streams) if s.pump is not None and not s.pump.done()]
        for pump in pumps:
            pump.cancel()
        if pumps:
            await asyncio.wait(pumps, timeout=timeout_s)


def _info_pb(info) -> pb.CharacterInfo:
    return pb.CharacterInfo(character_id=info.character_id, display_name=info.display_name,
                            width=info.width, height=info.height, num_references=info.num_references,
                            face_score=info.face_score, builtin=info.builtin,
                            references_used=list(getattr(info, "references_used", ())))
