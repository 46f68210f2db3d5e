"""The session's frame clock: frame index <-> presentation time, across fps changes."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class FrameClock:
    """pts(n) = base_pts + (n - base_index) / fps. Changing fps keeps pts monotonic."""

    fps: int
    base_index: int = 0
    base_pts: float = 0.0

    def pts(self, index: int) -> float:
        return self.base_pts + (index - self.base_index) / self.fps

    def index_at(self, pts: float) -> int:
        """The first frame index whose pts is >= `pts`."""
        return self.base_index + max(0, math.ceil((pts - self.base_pts) * self.fps - 1e-9))

    def set_fps(self, fps: int, next_index: int) -> None:
        self.base_pts = self.pts(next_index)
        self.base_index = next_index
        self.fps = fps
