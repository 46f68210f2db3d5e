"""Learned lip-sync: causal audio -> viseme posteriors -> mouth target rows (ONNX, CPU or GPU).

Front end: a streaming log-mel spectrum with exactly the framing of `FeatureExtractor` (row k is
the 32 ms window ending at sample (k+1)*HOP), so its rows line up with the tracker's rows.
Network (tools/train_lipsync.py): a small dilated 1-D convolution stack with *valid* padding; the
output for the last input frame is the viseme posterior of the row `lookahead` hops earlier. So a
row uses audio up to `lookahead` hops after it and nothing later (the lookahead bound), and
streaming needs only the last `receptive - 1` input frames as state.

Visemes -> targets: the posterior-weighted mean of per-viseme prototypes gives jaw / round /
spread / press (f/v shows as a light lip press over a nearly closed jaw: the lower lip tucks
under the upper teeth). active / accent / onset stay from the ArticulationTracker.

One InferenceSession per process (ORT sessions are thread-safe for run()); state per NPC.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpm_npc.audio.features import HOP, NFFT, RATE, WIN
from lpm_npc.errors import FailedPreconditionError

log = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
MODEL_PATH = ASSET_DIR / "lipsync_v1.onnx"
CONFIG_PATH = ASSET_DIR / "lipsync_v1.json"

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "open", "spread", "round", "mid", "cons")
V = {name: i for i, name in enumerate(VISEMES)}
NUM_VISEMES = len(VISEMES)
# per-viseme (jaw, round, spread, press) prototypes
PROTOTYPES = np.array([
    [0.00, 0.0, 0.00, 0.00],   # sil
    [0.00, 0.0, 0.00, 1.00],   # PP  p b m
    [0.08, 0.0, 0.15, 0.45],   # FF  f v: lower lip tucked, mouth nearly closed
    [1.00, 0.0, 0.15, 0.00],   # open  a aI aU
    [0.50, 0.0, 0.90, 0.00],   # spread  i e E I j
    [0.40, 1.0, 0.00, 0.00],   # round  u o O w y
    [0.55, 0.0, 0.20, 0.00],   # mid  schwa, er
    [0.28, 0.0, 0.25, 0.00],   # cons  t d n s k l r h ...
], np.float32)

N_MELS = 32
FMIN, FMAX = 80.0, 7600.0
LOG_FLOOR = 1e-10
_VOWEL_CHARS = set("aAeEiIoOuUyYV@3&0269W")


def phoneme_viseme(symbol: str) -> int | None:
    """Viseme class of an eSpeak NG phoneme mnemonic (any language); None = continues the previous."""
    s = symbol.lstrip("'," + "%=")
    if not s:
        return None
    if s.startswith("_"):
        return V["sil"]
    base = s[0]
    tail_ok = len(s) == 1 or s[1] in ":;#-~'`"
    if base in "pbm" and tail_ok:
        return V["PP"]
    if base in "fvF" and tail_ok:
        return V["FF"]
    if base in _VOWEL_CHARS or base in "wj":
        if base in "aA&V6":
            return V["open"]
        if base in "eEiIj":
            return V["spread"]
        if base in "oOuUyY0299wW":
            return V["round"]
        return V["mid"]
    if base in ";^":
        return None
    return V["cons"]


def mel_filterbank(n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular mel filters (HTK mel scale)."""
    def hz2mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.fft.rfftfreq(NFFT, 1.0 / RATE)
    edges = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    fb = np.zeros((freqs.size, n_mels), np.float32)
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(c - lo, 1e-6)
        down = (hi - freqs) / max(hi - c, 1e-6)
        fb[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


class MelFrontEnd:
    """Streaming log10-mel rows (one per hop), framed exactly like FeatureExtractor."""

    _fb = mel_filterbank()
    _window = np.hanning(WIN).astype(np.float32)

    def __init__(self) -> None:
        self._buf = np.zeros(WIN, np.float32)
        self._pending = np.zeros(0, np.float32)

    @staticmethod
    def silent_row() -> np.ndarray:
        return np.full(N_MELS, np.log10(LOG_FLOOR), np.float32)

    def _frames(self, data: np.ndarray, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = data.size // HOP
        stream = np.concatenate([buf, data[:n * HOP]])
        idx = np.arange(n)[:, None] * HOP + HOP + np.arange(WIN)[None, :]
        return self._rows(stream[idx]), stream[-WIN:]

    def _rows(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[0] == 0:
            return np.zeros((0, N_MELS), np.float32)
        frames = frames - frames.mean(axis=1, keepdims=True)
        return self.rows_from_power(np.abs(np.fft.rfft(frames * self._window, NFFT)) ** 2)

    def rows_from_power(self, power: np.ndarray) -> np.ndarray:
        """Mel rows from (n, NFFT//2+1) power spectra of mean-removed, Hann-windowed frames."""
        return np.log10((power / WIN) @ self._fb + LOG_FLOOR).astype(np.float32)

    def push(self, samples: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
        """Mel rows of the hops these samples complete. `power`: their frames' power spectra when
        already computed (FeatureExtractor.last_power of the same samples: the same framing)."""
        x = np.asarray(samples, np.float32).reshape(-1)
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        n = data.size // HOP
        if n == 0:
            self._pending = data.copy()
            return np.zeros((0, N_MELS), np.float32)
        if power is not None and power.shape[0] == n:
            rows = self.rows_from_power(power)
            self._buf = np.concatenate([self._buf, data[:n * HOP]])[-WIN:]
        else:
            rows, self._buf = self._frames(data, self._buf)
        self._pending = data[n * HOP:].copy()
        return rows

    def peek_silence(self, n_hops: int) -> np.ndarray:
        """Rows of the next `n_hops` hops if only silence followed (state unchanged)."""
        data = np.concatenate([self._pending, np.zeros(n_hops * HOP, np.float32)])
        return self._frames(data[: n_hops * HOP], self._buf)[0]


@dataclass(frozen=True)
class LipSyncModelInfo:
    """What the runtime needs to know about an exported network (from the JSON beside it)."""

    receptive: int        # input frames per output frame
    lookahead: int        # output row = last input frame - lookahead
    sha256: str
    n_mels: int = N_MELS

    @property
    def lookahead_s(self) -> float:
        return self.lookahead * HOP / RATE


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class LipSyncNet:
    """The process-wide ONNX network (thread-safe `posteriors`)."""

    def __init__(self, model_path: Path = MODEL_PATH, config_path: Path = CONFIG_PATH, verify: bool = True):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a dependency
            raise FailedPreconditionError("onnxruntime is not installed: pip install onnxruntime") from e
        if not Path(model_path).is_file() or not Path(config_path).is_file():
            raise FailedPreconditionError(
                f"lip-sync model missing ({model_path}); run tools/train_lipsync.py or use lipsync='signal'")
        cfg = json.loads(Path(config_path).read_text())
        self.info = LipSyncModelInfo(int(cfg["receptive"]), int(cfg["lookahead"]), str(cfg["sha256"]),
                                     int(cfg.get("n_mels", N_MELS)))
        if verify and file_sha256(model_path) != self.info.sha256:
            raise FailedPreconditionError(
                f"{model_path} does not match the checksum in {config_path}; re-export with tools/train_lipsync.py")
        if self.info.n_mels != N_MELS:
            raise FailedPreconditionError(f"lip-sync model expects {self.info.n_mels} mel bands, front end has {N_MELS}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def posteriors(self, mels: np.ndarray) -> np.ndarray:
        """(T, N_MELS) log-mel rows -> (T - receptive + 1, NUM_VISEMES) viseme posteriors."""
        if mels.shape[0] < self.info.receptive:
            return np.zeros((0, NUM_VISEMES), np.float32)
        x = np.ascontiguousarray(mels.T[None], dtype=np.float32)
        return self.session.run(None, {self._input: x})[0][0].T


_NET: LipSyncNet | None = None
_NET_ERR: Exception | None = None
_NET_LOCK = threading.Lock()


def shared_net() -> LipSyncNet | None:
    """The process-wide network, or None (logged once) when the asset cannot be loaded."""
    global _NET, _NET_ERR
    with _NET_LOCK:
        if _NET is None and _NET_ERR is None:
            try:
                _NET = LipSyncNet()
                log.info("learned lip-sync loaded (lookahead %d hops)", _NET.info.lookahead)
            except Exception as e:  # noqa: BLE001 - fall back to the signal lip-sync
                _NET_ERR = e
                log.warning("learned lip-sync unavailable, using the signal one: %s", e)
        return _NET


def visemes_to_targets(post: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """(n, NUM_VISEMES) posteriors -> (n, 4) jaw / round / spread / press.

    `active` (the tracker's level relative to the running speech level, 0..1) gates the open
    shapes: breaths and room noise far below the voice keep the mouth closed.
    """
    out = post @ PROTOTYPES
    if active is not None:
        out[:, :3] *= np.clip(np.asarray(active, np.float32) * 2.0, 0.0, 1.0)[:, None]
    return out


class StreamingVisemes:
    """Per-session streaming state: audio in, final + provisional viseme posterior rows out.

    `push()` returns the posteriors of the rows that became final (row i is final once the
    audio of hop i + lookahead has arrived); `provisional()` gives the last `lookahead` rows as if
    silence followed (replaced when more audio comes).
    """

    def __init__(self, net: LipSyncNet):
        self.net = net
        self.front = MelFrontEnd()
        r = net.info.receptive
        self._ctx = np.tile(MelFrontEnd.silent_row(), (r - 1, 1))
        self.hops = 0   # mel rows pushed so far

    @property
    def final_rows(self) -> int:
        """Number of rows (from the start) that are final."""
        return max(self.hops - self.net.info.lookahead, 0)

    def push(self, samples: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
        return self.push_with_provisional(samples, provisional=False, power=power)[0]

    def push_with_provisional(self, samples: np.ndarray, provisional: bool = True,
                              power: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(final rows, provisional rows) after these samples, in one network run (`power`: see MelFrontEnd.push)."""
        mels = self.front.push(samples, power)
        empty = np.zeros((0, NUM_VISEMES), np.float32)
        if mels.shape[0] == 0:
            return empty, empty
        before = self.final_rows
        la = self.net.info.lookahead
        x = np.concatenate([self._ctx, mels])
        self._ctx = x[-(self.net.info.receptive - 1):]
        self.hops += mels.shape[0]
        n_final = self.final_rows - before
        n_prov = self.hops - self.final_rows
        if provisional and la:
            post = self.net.posteriors(np.concatenate([x, self.front.peek_silence(la)]))
            # outputs cover rows hops_before - L .. hops - 1; the last n_prov are provisional
            return post[post.shape[0] - la - n_final: post.shape[0] - la], post[post.shape[0] - n_prov:]
        post = self.net.posteriors(x)
        # outputs cover rows hops_before - L .. hops - 1 - L; drop those before row 0
        return post[post.shape[0] - n_final:], empty

    def provisional(self) -> np.ndarray:
        """Posteriors of rows final_rows .. hops - 1 assuming silence after the pushed audio."""
        n = self.hops - self.final_rows
        if n == 0:
            return np.zeros((0, NUM_VISEMES), np.float32)
        pad = self.front.peek_silence(self.net.info.lookahead)
        post = self.net.posteriors(np.concatenate([self._ctx, pad]))
        return post[post.shape[0] - n:]
