"""Names for the server's processes and threads, as `top`, `ps -o comm` and /proc/PID/comm show them."""

from __future__ import annotations

import ctypes


def name_this_thread(name: str) -> None:
    """Set the calling thread's name in the kernel (Linux; at most 15 characters), where `top -H`,
    `ps -L` and /proc/PID/task/TID/comm show it: a stuck thread of a live server can then be found."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)   # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def name_this_process(name: str) -> None:
    """Set this process's name (its main thread's): lpm-npc-front1, lpm-npc-worker, lpm-npc-render.
    `lpm-npc bench` tells the server's processes apart by it. Call it on the main thread."""
    name_this_thread(name)
