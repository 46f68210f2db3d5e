"""Stop signals in the server's helper processes (render workers, the render service).

A terminal's Ctrl-C (SIGINT), `timeout`, and systemd's default `KillMode=control-group` (SIGTERM) signal
every process of the group at once. The server answers by draining its streams for a few seconds and
then stopping its helpers in order: workers first, the render service last. A helper that died at the
signal would take the drain's frames with it, and the server would start a replacement on its way
out. So helpers ignore SIGINT and SIGTERM; they end when the server tells them to, or when its pipe
closes (the server is gone, even by SIGKILL). SIGKILL still ends them, and is what the server uses when
one does not stop in time.
"""

from __future__ import annotations

import signal


def leave_stopping_to_the_server() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # pragma: no cover - not the main thread / not POSIX
            pass
