"""Where a stuck process was stuck: every thread's stack, written to its stderr before it is killed.

Each of the server's processes registers `faulthandler` on SIGUSR1 at start (`dump_stacks_on_signal`).
The dump is made by a C signal handler, without the GIL, so it works while Python code is stuck as well
as while a thread is blocked inside C. The hang checks (workers, fronts, the render service) call
`kill_with_stacks`, so the log says where the process hung, not only that it did. By hand:
`kill -USR1 <pid>` prints a running server process's stacks without stopping it.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import time

log = logging.getLogger(__name__)

DUMP_SIGNAL = signal.SIGUSR1
DUMP_WAIT_S = 0.5   # time given to the handler to write before the kill


def dump_stacks_on_signal() -> None:
    """Write every thread's stack to stderr on SIGUSR1 (the process goes on)."""
    try:
        faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=False)
    except (AttributeError, ValueError, RuntimeError, OSError) as exc:  # pragma: no cover - no stderr / not POSIX
        log.debug("no stack dumps on SIGUSR1 here (%s)", exc)


def kill_with_stacks(pid: int, what: str) -> None:
    """Ask process `pid` for its stacks (SIGUSR1), give it a moment to write them, then SIGKILL it.

    A stopped process (SIGSTOP) writes nothing until it runs again, which a kill prevents: it is just killed."""
    log.error("%s (pid %d): its threads' stacks follow on stderr, then it is killed", what, pid)
    try:
        os.kill(pid, DUMP_SIGNAL)
        time.sleep(DUMP_WAIT_S)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
