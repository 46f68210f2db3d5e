"""The NPC-audio timeline: where each pushed chunk lands, and its per-hop target rows.

Audio is placed on a 16 kHz sample grid (t = sample / 16000 s). Chunks are turned into feature
rows by one causal FeatureExtractor as they arrive and into mouth/prosody target rows by the
ArticulationTracker; only those rows are kept (a bounded ring: rows behind the playhead are
trimmed), never the samples.

With `lipsync="learned"` the jaw / round / spread / press columns come from the learned network
(lipsync_model), optionally sharpened by the line's text (text_align). The network reads
`lookahead` hops of audio after a row, so the last `lookahead` rows of the queued audio are
provisional (computed as if silence followed, which is exact at the end of a line) and are
recomputed when the next contiguous chunk arrives.

Evaluation is lazy: `push()` only queues the samples; everything queued is turned into rows in one
block when a `window()` reads a row that is not final yet, or when more than `MAX_PENDING_S` of
audio is queued. A live stream of small chunks pushed ahead of playback thus runs the front end,
network and tracker once per (ahead - ~0.14 s) of audio instead of once per chunk (the per-run
cost, mostly fixed, dominated with 10-20 ms chunks). Every stage is causal and chunk-invariant, so
the rows a window sees are the same as if each chunk had been processed as it arrived (final rows
for any chunking, provisional rows computed from all audio pushed so far).
"""

from __future__ import annotations

import logging

import numpy as np

from lpm_npc.audio.features import HOP, RATE, WIN, FeatureExtractor, row_time
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.lipsync import NUM_TARGETS, ArticulationTracker, T
from lpm_npc.performance.lipsync_model import (
    StreamingVisemes,
    shared_net,
    visemes_to_targets,
)
from lpm_npc.performance.text_align import LineAligner

log = logging.getLogger(__name__)

KEEP_BEHIND_S = 0.3           # rows kept behind the playhead (blur / press windows)
MAX_AHEAD_S = 300.0           # NPC audio may be queued at most this far ahead of the playhead
CONTIGUOUS_TOL_S = 0.002      # a chunk starting this close to the previous end continues it
_RESET_GAP = WIN + HOP        # beyond this many samples of gap the extractor restarts
MAX_PENDING_S = 1.0           # queued, unprocessed audio is processed once it exceeds this


class RowRing:
    """Rows indexed by a global hop index, contiguous from `base`; grows only with queued audio."""

    def __init__(self, width: int, capacity: int = 1024):
        self._data = np.zeros((capacity, width), np.float32)
        self._off = 0     # array position of row `base`
        self._n = 0
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + self._n

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    def __len__(self) -> int:
        return self._n

    def append(self, g0: int, rows: np.ndarray) -> None:
        """Store rows starting at global index g0 (>= end); the gap in between is zeros."""
        if rows.shape[0] == 0:
            return
        if self._n == 0:
            self.base, self._off = g0, 0
        gap = g0 - self.end
        if gap < 0:
            rows = rows[-gap:]
            g0 = self.end
            gap = 0
            if rows.shape[0] == 0:
                return
        need = self._n + gap + rows.shape[0]
        if self._off + need > self.capacity:
            self._compact(need)
        start = self._off + self._n
        self._data[start:start + gap] = 0.0
        self._data[start + gap:start + gap + rows.shape[0]] = rows
        self._n = need

    def _compact(self, need: int) -> None:
        cap = self.capacity
        while need > cap:
            cap *= 2
        if cap != self.capacity:
            new = np.zeros((cap, self._data.shape[1]), np.float32)
        else:
            new = self._data
        new[: self._n] = self._data[self._off:self._off + self._n].copy()
        self._data, self._off = new, 0

    def trim_before(self, g: int) -> None:
        drop = min(max(g - self.base, 0), self._n)
        self._off += drop
        self._n -= drop
        self.base += drop
        if self._n == 0:
            self._off = 0

    def truncate_from(self, g: int) -> None:
        keep = min(max(g - self.base, 0), self._n)
        self._n = keep

    def window(self, g_lo: int, g_hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows with global index in [g_lo, g_hi) that exist, and their indices."""
        lo, hi = max(g_lo, self.base), min(g_hi, self.end)
        if hi <= lo:
            return np.zeros((0, self._data.shape[1]), np.float32), np.zeros(0, np.int64)
        a = self._off + lo - self.base
        return self._data[a:a + hi - lo], np.arange(lo, hi)

    def shrink(self) -> None:
        """Give memory back after a long queue drained (keeps the ring bounded in long sessions)."""
        if self.capacity > 4096 and self._n < self.capacity // 8:
            new = np.zeros((max(1024, self.capacity // 4), self._data.shape[1]), np.float32)
            new[: self._n] = self._data[self._off:self._off + self._n]
            self._data, self._off = new, 0


class NpcTimeline:
    """Placement of NPC chunks on the timeline, their target rows and the speech intervals."""

    def __init__(self, lipsync: str = "learned") -> None:
        if lipsync not in ("learned", "signal"):
            raise InvalidInputError(f"lipsync must be 'learned' or 'signal', got {lipsync!r}")
        self.net = shared_net() if lipsync == "learned" else None
        self.lipsync = "learned" if self.net is not None else "signal"
        self.extractor = FeatureExtractor()
        self._tracker = ArticulationTracker()
        self._rows = RowRing(NUM_TARGETS)
        self._queue: list[np.ndarray] = []   # pushed, not yet processed samples (contiguous, from _fed)
        self._queued = 0
        self._fed = 0                        # global sample index up to which audio has been processed
        self._visemes: StreamingVisemes | None = None
        self._final_g = 0                                  # first row whose learned columns are provisional
        self._tail = np.zeros((0, NUM_TARGETS), np.float32)  # tracker rows of the provisional hops
        self.aligner: LineAligner | None = None            # the current line's text alignment
        self._ext_start = 0            # global sample index of the extractor's first sample
        self._end: int | None = None   # global sample index where fed audio ends
        self.intervals: list[list[float]] = []  # [start_s, end_s] of placed audio, merged

    @property
    def rows(self) -> RowRing:
        """All rows of the audio pushed so far (processes any queued audio first)."""
        self.flush()
        return self._rows

    @property
    def tracker(self) -> ArticulationTracker:
        """The signal tracker, up to date with all audio pushed so far."""
        self.flush()
        return self._tracker

    @property
    def end_s(self) -> float | None:
        return None if self._end is None else self._end / RATE

    def place(self, n_samples: int, now_s: float, start_s: float | None) -> tuple[int, int, float]:
        """Decide where a chunk lands: (start sample index, samples to skip, late_s).

        A chunk whose explicit time has partly passed keeps its time: the past part is skipped
        (its frames are already out) and the rest stays in sync with the game's playback.
        Shifting it instead would push every later chunk back and lose sync for good.
        """
        now = int(round(now_s * RATE))
        late = 0.0
        skip = 0
        if start_s is None:
            start = now if self._end is None else max(self._end, now)
        else:
            start = int(round(start_s * RATE))
            if start < now:
                late = (now - start) / RATE
                skip = min(n_samples, now - start)
                start = now
            if self._end is not None and start < self._end:
                if self._end - start > CONTIGUOUS_TOL_S * RATE:
                    log.debug("NPC chunk at %.3f s overlaps queued audio ending %.3f s; appended after it",
                              start / RATE, self._end / RATE)
                start = self._end
            elif self._end is not None and start - self._end <= CONTIGUOUS_TOL_S * RATE:
                start = self._end
        if (start + n_samples - skip) / RATE - now_s > MAX_AHEAD_S:
            raise InvalidInputError(
                f"NPC audio queued {(start + n_samples - skip) / RATE - now_s:.1f} s ahead of playback "
                f"(max {MAX_AHEAD_S:.0f} s): push it closer to when it plays")
        return start, skip, late

    def push(self, samples: np.ndarray, start: int, text: str = "", text_voice: str | None = None) -> None:
        """Feed a placed chunk (16 kHz float32) starting at global sample `start`.

        `text` (learned lip-sync only): the line this audio speaks; a new text starts a new line
        alignment, the same text or none continues the current one.
        """
        restarted = self._end is None or start > self._end + _RESET_GAP
        if self._end is not None and start > self._end:
            gap = start - self._end
            if gap <= _RESET_GAP:
                self._feed(np.zeros(gap, np.float32))
            else:
                self._feed(np.zeros(_RESET_GAP, np.float32))   # finish the previous tail
                self.flush()
                self._restart(start)
        elif self._end is None:
            self.flush()
            self._restart(start)
        if self.net is not None:
            if text and (restarted or self.aligner is None or text != self.aligner.text):
                self.flush()    # queued audio belongs to the previous line's alignment
                self.aligner = LineAligner.for_text(text, voice=text_voice)
            elif restarted and not text:
                self.flush()
                self.aligner = None
        self._feed(samples)
        if self._queued > MAX_PENDING_S * RATE:
            self.flush()
        s0, s1 = start / RATE, (start + samples.size) / RATE
        if self.intervals and s0 - self.intervals[-1][1] <= 0.01:
            self.intervals[-1][1] = max(self.intervals[-1][1], s1)
        else:
            self.intervals.append([s0, s1])

    def _restart(self, start: int) -> None:
        aligned = start - start % HOP
        self.extractor.reset()
        if self.net is not None:
            self._visemes = StreamingVisemes(self.net)
            self._final_g = aligned // HOP
            self._tail = np.zeros((0, NUM_TARGETS), np.float32)
        self._ext_start = aligned
        self._end = aligned
        self._fed = aligned
        if start > aligned:
            self._feed(np.zeros(start - aligned, np.float32))

    def _feed(self, x: np.ndarray) -> None:
        """Queue samples (contiguous with what was queued before); processed by flush()."""
        if x.size == 0:
            return
        self._queue.append(np.array(x, np.float32, copy=True).reshape(-1))
        self._queued += x.size
        self._end += x.size

    def _ready_g(self) -> int:
        """First row index that processing more queued audio could add or change."""
        if self._visemes is not None:
            return self._final_g
        return self._fed // HOP

    def flush(self, upto: int | None = None) -> None:
        """Process queued audio up to global sample `upto` (hop-aligned; all of it when None)."""
        if not self._queued:
            return
        n = self._queued if upto is None else min(max(upto - self._fed, 0), self._queued)
        if n <= 0:
            return
        data = self._queue[0] if len(self._queue) == 1 else np.concatenate(self._queue)
        x, rest = data[:n], data[n:]
        self._queue = [rest] if rest.size else []
        self._queued = rest.size
        self._process(x)

    def _process(self, x: np.ndarray) -> None:
        g0 = self._ext_start // HOP + self.extractor.rows_emitted
        feats = self.extractor.push(x)
        self._fed += x.size
        if self._visemes is not None:
            # the network writes the mouth columns: the tracker only gives active / accent / onset
            self._feed_learned(x, self._tracker.rows(feats, mouth=False) if feats.shape[0] else None,
                               self.extractor.last_power)
        elif feats.shape[0]:
            self._rows.append(g0, self._tracker.rows(feats))

    def _feed_learned(self, x: np.ndarray, tracker_rows: np.ndarray | None, power: np.ndarray | None = None) -> None:
        """Replace the provisional rows: final ones for the hops now `lookahead` behind, the rest provisional.

        `power`: the extractor's spectra of the same hops (the mel front end frames them identically)."""
        if tracker_rows is None:   # no hop completed: nothing changes
            self._visemes.push(x)
            return
        final, prov = self._visemes.push_with_provisional(x, power=power)
        rows = np.concatenate([self._tail, tracker_rows])
        if self.aligner is not None:
            final = self.aligner.update(final)
            prov = self.aligner.peek(prov)
        post = np.concatenate([final, prov])
        n = min(rows.shape[0], post.shape[0])
        rows[:n, :4] = visemes_to_targets(post[:n], rows[:n, T["active"]])
        self._rows.truncate_from(self._final_g)
        self._rows.append(self._final_g, rows)
        k = final.shape[0]
        self._final_g += k
        self._tail = rows[k:].copy()

    def window(self, t_lo: float, t_hi: float) -> tuple[np.ndarray, np.ndarray]:
        """Target rows centred in [t_lo, t_hi] and their centre times."""
        g_lo = int(np.floor(t_lo * RATE / HOP)) - 1
        g_hi = int(np.ceil(t_hi * RATE / HOP)) + 2
        if self._queued and g_hi > self._ready_g():
            # a row this window reads may still change: process everything queued (one block: the
            # rows then stay final for as long as the queued audio reaches past the playhead)
            self.flush()
        rows, idx = self._rows.window(g_lo, g_hi)
        return rows, row_time(idx)

    def speaking_at(self, t: float, hangover_s: float) -> bool:
        for s0, s1 in reversed(self.intervals):
            if s0 <= t < s1 + hangover_s:
                return True
            if s1 + hangover_s < t:
                break
        return False

    def trim(self, t: float) -> None:
        self._rows.trim_before(int(np.floor((t - KEEP_BEHIND_S) * RATE / HOP)))
        self._rows.shrink()
        while len(self.intervals) > 1 and self.intervals[0][1] < t - 10.0:
            self.intervals.pop(0)

    def truncate(self, t: float) -> None:
        """Drop everything after `t` (barge-in): rows, intervals and the extractor's pending audio."""
        cut = int(round(t * RATE))
        self.flush()
        self._rows.truncate_from(int(np.ceil(t * RATE / HOP)))
        kept = []
        for s0, s1 in self.intervals:
            if s0 < t:
                kept.append([s0, min(s1, t)])
        self.intervals = kept
        if self._end is not None and self._end > cut:
            self._end = None  # the next chunk restarts the extractor
            self.aligner = None
