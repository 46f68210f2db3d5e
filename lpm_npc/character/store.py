"""Character registry: portrait bytes -> rig, cached on disk by content hash.

A character id is derived from the image bytes, so registering the same portrait twice gives the
same id and the second call loads the cached rig instead of running face landmarking again.
Registered characters survive a server restart (their rig and metadata live in the cache dir).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import DEFAULT_CHARACTER_ID
from ..errors import FailedPreconditionError, InvalidInputError, NotFoundError
from .default import DEFAULT_DISPLAY_NAME, default_portrait_png
from .landmarks import FaceLandmarker, decode_image
from .rig import RIG_FORMAT_VERSION, CharacterRig, build_rig

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 24 * 1024 * 1024
MAX_EXTRA_REFERENCES = 8
MAX_DISPLAY_NAME = 128


@dataclass(frozen=True)
class CharacterInfo:
    character_id: str
    display_name: str
    width: int
    height: int
    num_references: int
    face_score: float
    builtin: bool = False
    # per extra reference, in order: what it was used for or "unused: <reason>" (CharacterRig.references_used)
    references_used: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> "CharacterInfo":
        data = json.loads(text)
        data["references_used"] = tuple(data.get("references_used", ()))
        return cls(**data)


class CharacterStore:
    """Thread-safe registry of characters with an on-disk rig cache."""

    def __init__(self, cache_dir: Path, landmarker_factory: Callable[[], FaceLandmarker] = FaceLandmarker,
                 max_loaded: int = 64):
        self.cache_dir = Path(cache_dir) / f"rigs-v{RIG_FORMAT_VERSION}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._landmarker_factory = landmarker_factory
        self._landmarker: FaceLandmarker | None = None
        self._lock = threading.RLock()
        self._loaded: dict[str, CharacterRig] = {}
        self._max_loaded = max_loaded

    # -- public API ---------------------------------------------------------------------------
    def register(self, portrait: bytes, extra_references: Sequence[bytes] = (),
                 display_name: str = "") -> tuple[CharacterInfo, bool]:
        """Build (or load from cache) the rig for a portrait. Returns (info, cached)."""
        return self._register(portrait, extra_references, display_name, character_id=None)

    def ensure_default(self) -> CharacterInfo:
        info, _ = self._register(default_portrait_png(), (), DEFAULT_DISPLAY_NAME,
                                 character_id=DEFAULT_CHARACTER_ID)
        return info

    def get(self, character_id: str) -> CharacterRig:
        """The rig for an id; NotFoundError (with what to do) when unknown."""
        with self._lock:
            rig = self._loaded.get(character_id)
            if rig is not None:
                # Another process sharing this cache (a sibling front, runtime/fronts.py) may have deleted
                # it: the file on disk is the registry, what is held here only a copy.
                if character_id == DEFAULT_CHARACTER_ID or self._rig_path(character_id).exists():
                    return rig
                self._loaded.pop(character_id, None)
        if character_id == DEFAULT_CHARACTER_ID:
            self.ensure_default()
            return self._loaded[DEFAULT_CHARACTER_ID]
        path = self._rig_path(character_id)
        if not self._valid_id(character_id) or not path.exists():
            raise NotFoundError(
                f"unknown character id {character_id!r}: register the portrait first "
                f"(RegisterCharacter) or use {DEFAULT_CHARACTER_ID!r} for the built-in character."
            )
        rig = CharacterRig.load(path)
        self._remember(character_id, rig)
        return rig

    def info(self, character_id: str) -> CharacterInfo:
        self.get(character_id)
        return self._read_meta(character_id)

    def list(self) -> list[CharacterInfo]:
        infos = []
        for meta in sorted(self.cache_dir.glob("*.json")):
            try:
                infos.append(CharacterInfo.from_json(meta.read_text()))
            except (OSError, ValueError, TypeError):
                log.warning("skipping unreadable character metadata %s", meta)
        if not any(i.character_id == DEFAULT_CHARACTER_ID for i in infos):
            infos.insert(0, CharacterInfo(DEFAULT_CHARACTER_ID, DEFAULT_DISPLAY_NAME, 0, 0, 1, 0.0, True))
        return infos

    def delete(self, character_id: str) -> bool:
        if character_id == DEFAULT_CHARACTER_ID:
            raise FailedPreconditionError("the built-in default character cannot be deleted.")
        if not self._valid_id(character_id):
            return False
        with self._lock:
            self._loaded.pop(character_id, None)
            existed = False
            for path in (self._rig_path(character_id), self._meta_path(character_id)):
                try:
                    path.unlink()
                    existed = True
                except FileNotFoundError:   # never there, or a sibling front deleted it a moment ago
                    pass
        return existed

    def close(self) -> None:
        with self._lock:
            if self._landmarker is not None:
                self._landmarker.close()
                self._landmarker = None
            self._loaded.clear()

    # -- internals ----------------------------------------------------------------------------
    def _register(self, portrait: bytes, extra_references: Sequence[bytes], display_name: str,
                  character_id: str | None) -> tuple[CharacterInfo, bool]:
        if not portrait:
            raise InvalidInputError("portrait is empty: send the bytes of a PNG or JPEG image.")
        if len(portrait) > MAX_IMAGE_BYTES:
            raise InvalidInputError(
                f"portrait is {len(portrait)} bytes; the limit is {MAX_IMAGE_BYTES} bytes. "
                "Send a smaller image (1024 px is plenty)."
            )
        if len(extra_references) > MAX_EXTRA_REFERENCES:
            raise InvalidInputError(
                f"{len(extra_references)} extra references; at most {MAX_EXTRA_REFERENCES}."
            )
        if len(display_name) > MAX_DISPLAY_NAME:
            raise InvalidInputError(f"display_name is longer than {MAX_DISPLAY_NAME} characters.")
        digest = hashlib.sha256(portrait)  # the extra references are part of the character (and its id)
        for ref in extra_references:
            digest.update(hashlib.sha256(ref).digest())
        cid = character_id or "c_" + digest.hexdigest()[:20]

        with self._lock:
            if cid in self._loaded and self._meta_path(cid).exists():
                return self._read_meta(cid), True
            path = self._rig_path(cid)
            if path.exists() and self._meta_path(cid).exists():
                try:
                    rig = CharacterRig.load(path)
                    self._remember(cid, rig)
                    log.info("character %s loaded from cache", cid)
                    return self._read_meta(cid), True
                except Exception:  # a corrupt cache entry is rebuilt, not fatal
                    log.warning("rig cache %s unreadable; rebuilding", path, exc_info=True)
            image = decode_image(portrait)
            refs = [decode_image(r) for r in extra_references]
            rig = build_rig(image, self._get_landmarker(), refs)
            tmp = path.with_name(path.name + ".tmp")
            rig.save(tmp)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written rig behind
            info = CharacterInfo(
                character_id=cid,
                display_name=display_name or cid,
                width=int(rig.image.shape[1]),
                height=int(rig.image.shape[0]),
                num_references=int(rig.num_references),
                face_score=float(rig.face_score),
                builtin=cid == DEFAULT_CHARACTER_ID,
                references_used=tuple(rig.references_used),
            )
            meta_tmp = self._meta_path(cid).with_suffix(".json.tmp")
            meta_tmp.write_text(json.dumps(asdict(info)))
            os.replace(meta_tmp, self._meta_path(cid))
            self._remember(cid, rig)
            log.info("character %s registered (face score %.2f)", cid, info.face_score)
            return info, False

    def _get_landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = self._landmarker_factory()
        return self._landmarker

    def _remember(self, cid: str, rig: CharacterRig) -> None:
        with self._lock:
            self._loaded[cid] = rig
            while len(self._loaded) > self._max_loaded:
                self._loaded.pop(next(iter(self._loaded)))

    def _read_meta(self, cid: str) -> CharacterInfo:
        return CharacterInfo.from_json(self._meta_path(cid).read_text())

    @staticmethod
    def _valid_id(cid: str) -> bool:
        return cid == DEFAULT_CHARACTER_ID or (
            cid.startswith("c_") and len(cid) == 22 and all(c in "0123456789abcdef" for c in cid[2:])
        )

    def _rig_path(self, cid: str) -> Path:
        return self.cache_dir / f"{cid}.npz"

    def _meta_path(self, cid: str) -> Path:
        return self.cache_dir / f"{cid}.json"
