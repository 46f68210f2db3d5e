"""Names for the server's processes, as `top`, `ps -o comm` and /proc/PID/comm show them."""

from __future__ import annotations

import ctypes


def name_this_process(name: str) -> None:
    """Set this process's name (Linux; at most 15 characters): lpm-npc-front1, lpm-npc-worker,
    lpm-npc-render. `lpm-npc bench` tells the server's processes apart by it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)   # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
