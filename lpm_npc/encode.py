"""Frame encoder: RGBA pixels from the renderer -> the bytes an engine uploads to a texture."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .types import PixelFormat


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes
    width: int
    height: int
    stride: int  # bytes per row; 0 for JPEG
    pixel_format: PixelFormat
    flip_y: bool


class FrameEncoder:
    """Turns one (H, W, 4) uint8 RGBA image into RGBA8, BGRA8 or JPEG bytes, optionally flipped.

    flip_y puts the bottom image row first, which is what Unity's `Texture2D.LoadRawTextureData`
    and OpenGL-style textures expect.
    """

    def __init__(self, pixel_format: PixelFormat = PixelFormat.RGBA8, flip_y: bool = False,
                 jpeg_quality: int = 85):
        self.pixel_format = pixel_format
        self.flip_y = flip_y
        self.jpeg_quality = int(jpeg_quality)

    def encode(self, rgba: np.ndarray) -> EncodedFrame:
        if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 4) uint8 RGBA, got {rgba.shape} {rgba.dtype}")
        h, w = rgba.shape[:2]
        img = rgba[::-1] if self.flip_y else rgba
        if self.pixel_format is PixelFormat.RGBA8:
            data = np.ascontiguousarray(img).tobytes()
            return EncodedFrame(data, w, h, w * 4, self.pixel_format, self.flip_y)
        if self.pixel_format is PixelFormat.BGRA8:
            data = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGBA2BGRA).tobytes()
            return EncodedFrame(data, w, h, w * 4, self.pixel_format, self.flip_y)
        bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGBA2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:  # pragma: no cover - cv2 only fails on invalid input
            raise RuntimeError("JPEG encoding failed")
        return EncodedFrame(buf.tobytes(), w, h, 0, self.pixel_format, self.flip_y)


def decode_frame(data: bytes, width: int, height: int, pixel_format: PixelFormat,
                 flip_y: bool = False) -> np.ndarray:
    """Inverse of `FrameEncoder.encode` for clients and tests: bytes -> (H, W, 4) RGBA uint8."""
    if pixel_format is PixelFormat.JPEG:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("frame data is not a JPEG image")
        rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    else:
        arr = np.frombuffer(data, np.uint8)
        if arr.size != width * height * 4:
            raise ValueError(f"frame has {arr.size} bytes, expected {width * height * 4}")
        rgba = arr.reshape(height, width, 4)
        if pixel_format is PixelFormat.BGRA8:
            rgba = rgba[..., [2, 1, 0, 3]]
    if flip_y:
        rgba = rgba[::-1]
    return np.ascontiguousarray(rgba)
