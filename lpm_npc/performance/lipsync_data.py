"""Lip-sync corpus made by the project itself: eSpeak NG speech with exact phoneme timing.

Used by tools/make_lipsync_data.py (training set), tools/eval_lipsync.py and
lipsync_eval.lipsync_report (held-out set). Voices and languages are split: the held-out ones are
never trained on. Augmentation (speed/pitch resampling, reverb, band limits, noise, gain) keeps
the network from learning the synthesizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from lpm_npc.audio.features import HOP, RATE, row_time
from lpm_npc.audio.pcm import resample
from lpm_npc.audio.tts import SpeechClip, synthesize
from lpm_npc.performance.lipsync_model import V, phoneme_viseme

TRAIN_LANGS = ("en-us", "en", "de", "es", "fr", "it", "pt", "nl", "pl", "sv", "id", "sw")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt3",
                  "Andy", "Mario", "Alex", "anika", "steph", "max", "caleb", "linda")
HELDOUT_LANGS = ("en-GB-scotland", "en-US-nyc", "cs", "fi", "ro")
HELDOUT_VARIANTS = ("f5", "m6", "Andrea", "belinda", "klatt2", "john", "m8")

_WORDS = ["the", "a", "and", "to", "of", "in", "you", "it", "he", "she", "we", "they", "my", "your", "our", "this", "that", "what", "which", "who", "when", "where", "why", "how", "yes", "no", "maybe", "please", "thank", "sorry", "hello", "friend", "map", "bread", "water", "fire", "wood", "iron", "gold", "silver", "boat", "bridge", "mill", "moon", "sun", "stars", "sword", "bow", "arrow", "blade", "purse", "coin", "money", "market", "merchant", "bandit", "guard", "king", "queen", "prince", "baby", "mother", "father", "brother", "people", "place", "path", "road", "town", "home", "room", "wall", "window", "door", "book", "paper", "pepper", "apple", "banana", "potato", "tomato", "beer", "wine", "milk", "meal", "soup", "fish", "meat", "big", "small", "old", "new", "good", "bad", "happy", "sad", "angry", "afraid", "brave", "quiet", "loud", "warm", "cool", "blue", "green", "purple", "brown", "pink", "white", "black", "open", "close", "keep", "bring", "buy", "build", "begin", "bump", "beep", "bubble", "mumble", "maybe", "move", "prove", "food", "moon", "soon", "blue", "shoe", "through", "who", "do", "two", "true", "you", "few", "view", "cute", "see", "sea", "tea", "keep", "leave", "feed", "meet", "sweet", "green", "street", "cheese", "eat", "speed", "we", "me", "be", "free", "tree", "eight", "day", "way", "say", "may", "pay", "play", "stay", "they", "rain", "pain", "main", "brain", "came", "same", "name", "game", "go", "no", "so", "show", "slow", "boat", "coat", "road", "home", "hope", "rope", "note", "vote", "stone", "phone", "bone", "all", "call", "fall", "ball", "walk", "talk", "caught", "bought", "thought", "law", "saw", "draw", "arm", "car", "far", "star", "heart", "hard", "start", "part", "father", "calm", "palm", "out", "about", "house", "mouse", "town", "down", "now", "how", "cow", "loud", "round", "sound", "found", "mountain", "I", "my", "by", "fly", "sky", "high", "light", "night", "right", "time", "fine", "mine", "line", "wine", "five", "nine", "fish", "wish", "with", "this", "thin", "think", "thick", "sing", "bring", "king", "ring", "live", "give", "up", "cup", "but", "cut", "run", "fun", "sun", "mud", "love", "above", "come", "some", "money", "month", "off", "often", "fifth", "fever", "five", "very", "voice", "valley", "vivid", "favour", "fluffy", "fifty", "wolf", "woman", "wood", "would", "wool", "water", "west", "wet", "wait", "weep", "wave"]

_SYLL_C = list("pbmfvtdnkgslrhjwzSs") + ["sh", "ch", "th", "ph", "qu", "v", "m", "b", "p", "f"]
_SYLL_V = ["a", "e", "i", "o", "u", "a", "o", "u", "ai", "au", "ei", "ou", "oo", "ee", "y"]


@dataclass
class Utterance:
    """One synthesized, augmented line: 16 kHz audio, per-hop viseme labels and phoneme times."""

    samples: np.ndarray
    labels: np.ndarray                  # (n_hops,) viseme index at each row centre
    phonemes: list[tuple[float, str]]   # (t_s in `samples`, eSpeak symbol)
    voice: str
    text: str
    aug: dict = field(default_factory=dict)


def english_sentence(rng: np.random.Generator, n_min: int = 5, n_max: int = 14) -> str:
    n = int(rng.integers(n_min, n_max + 1))
    words = [str(rng.choice(_WORDS)) for _ in range(n)]
    out = []
    for i, w in enumerate(words):
        out.append(w)
        if i < n - 1 and rng.random() < 0.12:
            out[-1] += str(rng.choice([",", ".", "?", "!"]))
    return " ".join(out).capitalize() + str(rng.choice([".", "?", "!"]))


def pseudo_sentence(rng: np.random.Generator) -> str:
    """Pronounceable nonsense in Latin script (each language reads it by its own rules)."""
    words = []
    for _ in range(int(rng.integers(4, 10))):
        syl = "".join(str(rng.choice(_SYLL_C)) + str(rng.choice(_SYLL_V)) for _ in range(int(rng.integers(1, 4))))
        words.append(syl)
    return " ".join(words).capitalize() + "."


def viseme_labels(phonemes: list[tuple[float, str]], n_hops: int) -> np.ndarray:
    """Viseme at each row centre from phoneme start times (before the first / after '_': sil)."""
    t = np.asarray(row_time(np.arange(n_hops)), np.float64)
    labels = np.full(n_hops, V["sil"], np.int64)
    times, classes = [], []
    cur = V["sil"]
    for ts, sym in phonemes:
        c = phoneme_viseme(sym)
        if c is None:
            continue
        if c == cur and times:
            continue
        times.append(ts)
        classes.append(c)
        cur = c
    if not times:
        return labels
    k = np.searchsorted(np.asarray(times), t, side="right") - 1
    ok = k >= 0
    labels[ok] = np.asarray(classes)[k[ok]]
    return labels


def _reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = float(rng.uniform(0.15, 0.7))
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[: int(0.002 * RATE)] = 0.0
    ir[0] = 1.0
    ir *= float(rng.uniform(0.1, 0.5)) / np.sqrt(np.sum(ir[1:] ** 2) + 1e-9)
    ir[0] = 1.0
    return fftconvolve(x, ir)[: x.size].astype(np.float32)


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n).astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 1:   # pinkish
        w = sosfilt(butter(1, 1000, "low", fs=RATE, output="sos"), w).astype(np.float32) * 3
    elif kind == 2:  # low rumble / hum
        w = sosfilt(butter(2, 300, "low", fs=RATE, output="sos"), w).astype(np.float32) * 5
    return w


def augment(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """Channel augmentation (no timing change): reverb, band limit, noise, gain."""
    aug: dict = {}
    if rng.random() < 0.35 * strength:
        x = _reverb(x, rng)
        aug["reverb"] = True
    r = rng.random()
    if r < 0.15 * strength:
        x = sosfilt(butter(4, [300, 3400], "band", fs=RATE, output="sos"), x).astype(np.float32)
        aug["band"] = "phone"
    elif r < 0.3 * strength:
        fc = float(rng.uniform(2500, 5000))
        x = sosfilt(butter(4, fc, "low", fs=RATE, output="sos"), x).astype(np.float32)
        aug["band"] = f"lp{fc:.0f}"
    elif r < 0.4 * strength:
        x = sosfilt(butter(2, float(rng.uniform(150, 500)), "high", fs=RATE, output="sos"), x).astype(np.float32)
        aug["band"] = "hp"
    speech_rms = float(np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2))) if np.any(np.abs(x) > 1e-4) else 0.1
    if rng.random() < 0.6 * strength:
        snr = float(rng.uniform(8, 40))
        nz = _noise(x.size, rng)
        nz *= speech_rms / (np.sqrt(np.mean(nz ** 2)) + 1e-9) * 10 ** (-snr / 20)
        x = x + nz
        aug["snr_db"] = round(snr, 1)
    gain = float(10 ** (rng.uniform(-28, 2) / 20))
    x = np.clip(x * gain, -1.0, 1.0).astype(np.float32)
    aug["gain"] = round(gain, 3)
    return x, aug


def make_utterance(text: str, voice: str, rng: np.random.Generator, augment_strength: float = 1.0,
                   rate_wpm: int | None = None, pitch: int | None = None, speed: float | None = None,
                   pad_s: tuple[float, float] | None = None) -> Utterance:
    """Synthesize `text`, change speed, pad with silence, augment; labels follow every time change."""
    rate_wpm = int(rng.integers(110, 290)) if rate_wpm is None else rate_wpm
    pitch = int(rng.integers(15, 85)) if pitch is None else pitch
    clip: SpeechClip = synthesize(text, voice=voice, rate_wpm=rate_wpm, pitch=pitch)
    speed = float(rng.uniform(0.9, 1.1)) if speed is None and augment_strength > 0 else (speed or 1.0)
    # resampling by `speed` changes tempo and pitch together (a different vocal tract length)
    rate_in = int(round(clip.sample_rate * speed / 100.0)) * 100   # keeps the polyphase ratio small
    speed = rate_in / clip.sample_rate
    x = resample(clip.samples, rate_in, RATE)
    pre, post = pad_s if pad_s is not None else (float(rng.uniform(0.15, 0.6)), float(rng.uniform(0.2, 0.6)))
    x = np.concatenate([np.zeros(int(pre * RATE), np.float32), x, np.zeros(int(post * RATE), np.float32)])
    phon = [(pre + p.t / speed, p.symbol) for p in clip.phonemes]
    aug = {"rate_wpm": rate_wpm, "pitch": pitch, "speed": round(speed, 3)}
    if augment_strength > 0:
        x, a = augment(x, rng, augment_strength)
        aug.update(a)
    n_hops = x.size // HOP
    return Utterance(x, viseme_labels(phon, n_hops), phon, voice, text, aug)


def voice_name(lang: str, variant: str) -> str:
    return f"{lang}+{variant}"


HELDOUT_EN_LINES = (
    "Hello there, my friend. Would you bring me the big map, please?",
    "Maybe the old bridge by the mill will be open before the moon comes up.",
    "Keep your blade sharp and your purse empty, and the bandits will pass you by.",
    "Who knew? Two blue shoes. Oh no, go home.",
    "We see the keys. Eat cheese, Steve.",
    "Five fine violins arrived from the valley of fever.",
    "My brother bought a puppy, a parrot and a bowl of plums.",
    "The wolf would wait by the wood until the rain was over.",
)


def heldout_set(quick: bool, seed: int = 1234, augment_strength: float = 0.0) -> list[Utterance]:
    """Held-out voices / languages (never trained on); English lines plus pseudo-text elsewhere."""
    rng = np.random.default_rng(seed)
    out: list[Utterance] = []
    lines = HELDOUT_EN_LINES[:4] if quick else HELDOUT_EN_LINES
    en_langs = ("en-GB-scotland", "en-US-nyc")
    variants = HELDOUT_VARIANTS[:3] if quick else HELDOUT_VARIANTS
    for i, line in enumerate(lines):
        for j, var in enumerate(variants[: 2 if quick else 3]):
            lang = en_langs[(i + j) % 2]
            v = voice_name(lang, variants[(i + j) % len(variants)])
            out.append(make_utterance(line, v, rng, augment_strength, rate_wpm=int(rng.integers(140, 200)),
                                      pitch=int(rng.integers(30, 70)), speed=1.0, pad_s=(0.5, 0.6)))
    for lang in (HELDOUT_LANGS[2:4] if quick else HELDOUT_LANGS[2:]):
        for k in range(1 if quick else 3):
            v = voice_name(lang, variants[k % len(variants)])
            out.append(make_utterance(pseudo_sentence(rng), v, rng, augment_strength,
                                      rate_wpm=int(rng.integers(140, 200)), pitch=int(rng.integers(30, 70)),
                                      speed=1.0, pad_s=(0.5, 0.6)))
    return out
