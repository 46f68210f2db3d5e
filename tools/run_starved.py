"""Run a command while its whole process tree loses the CPU on a duty cycle, as a shared VM does.

    python tools/run_starved.py --stop-ms 150 --run-ms 100 -- .venv/bin/python -m pytest

Hypervisor steal on a shared CI machine stops everything in the VM for tens to hundreds of
milliseconds at a time. This tool reproduces that on any machine: it starts the command, then
stops the command and all its descendants (SIGSTOP) for `--stop-ms`, lets them run (SIGCONT) for
`--run-ms`, and so on until the command exits. Real-time tests must pass under it (see
tests/stalls.py): it is how the tests that failed only on a starved CI machine were found.
Exits with the command's exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stop-ms", type=float, default=150.0, help="how long the tree is stopped each cycle")
    ap.add_argument("--run-ms", type=float, default=100.0, help="how long it runs each cycle")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to run after --")
    if not os.path.isdir("/proc/self/task"):
        ap.error("needs Linux /proc to find the command's child processes")
    proc = subprocess.Popen(cmd)
    stopped: list[int] = []
    try:
        while proc.poll() is None:
            time.sleep(args.run_ms / 1000.0)
            stopped = _tree(proc.pid)
            _signal_all(stopped, signal.SIGSTOP)
            time.sleep(args.stop_ms / 1000.0)
            _signal_all(stopped, signal.SIGCONT)
            stopped = []
    except KeyboardInterrupt:
        _signal_all(stopped or _tree(proc.pid), signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
    finally:
        _signal_all(stopped, signal.SIGCONT)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
