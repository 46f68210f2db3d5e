"""Writing what the product shows: MP4 with muxed audio (ffmpeg from imageio-ffmpeg) and PNG sheets."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .audio.wav import write_wav

log = logging.getLogger(__name__)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def composite(rgba: np.ndarray, background: tuple[int, int, int] = (40, 44, 52)) -> np.ndarray:
    """RGBA -> RGB over a flat background (what a billboard with alpha shows)."""
    if rgba.shape[-1] == 3:
        return rgba
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, np.float32)
    return (rgba[..., :3].astype(np.float32) * a + bg * (1.0 - a)).round().astype(np.uint8)


class Mp4Writer:
    """Streams RGB(A) frames into an H.264 MP4; optional audio track muxed at the end."""

    def __init__(self, path: str | Path, fps: int, width: int, height: int,
                 audio: np.ndarray | None = None, audio_rate: int = 16000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        self._tmp = tempfile.TemporaryDirectory(prefix="lpm-npc-")
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgba",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None and len(audio):
            wav = Path(self._tmp.name) / "audio.wav"
            write_wav(wav, audio, audio_rate)
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(self.path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray, opaque: bool = True) -> None:
        """Append one (H, W, 3|4) uint8 frame. `opaque=False` composites alpha over a backdrop."""
        if frame.shape[-1] == 3:
            frame = np.concatenate([frame, np.full(frame.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        elif not opaque:
            rgb = composite(frame)
            frame = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        if frame.shape[:2] != (self.height, self.width):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        assert self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frame).data)

    def close(self) -> Path:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        code = self._proc.wait()
        self._tmp.cleanup()
        if code != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path}: {err.strip()}")
        return self.path

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def contact_sheet(frames: Sequence[np.ndarray], labels: Sequence[str] | None = None, columns: int = 6,
                  cell: int = 256) -> np.ndarray:
    """A labelled grid of frames (RGB uint8) for humans to look at."""
    n = len(frames)
    if n == 0:
        raise ValueError("no frames for the contact sheet")
    rows = (n + columns - 1) // columns
    label_h = 22 if labels else 0
    sheet = np.full((rows * (cell + label_h), columns * cell, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        img = cv2.resize(composite(frame), (cell, cell), interpolation=cv2.INTER_AREA)
        y = r * (cell + label_h)
        sheet[y + label_h:y + label_h + cell, c * cell:(c + 1) * cell] = img
        if labels:
            cv2.putText(sheet, str(labels[i])[:40], (c * cell + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(composite(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
