"""The built-in default character: a real portrait that ships inside scikit-image."""

from __future__ import annotations

import functools

import cv2
import numpy as np

DEFAULT_DISPLAY_NAME = "Astronaut (built-in)"


@functools.lru_cache(maxsize=1)
def default_portrait_png() -> bytes:
    """PNG bytes of `skimage.data.astronaut()` (Eileen Collins, NASA, public domain)."""
    from skimage import data

    rgb = np.ascontiguousarray(data.astronaut())
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("could not encode the default portrait")
    return buf.tobytes()
