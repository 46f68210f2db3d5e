"""Start `lpm-npc serve` as a child process (the way a game starts the sidecar) and wait for it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import NpcClient

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    def __init__(self, port: int | None = None, cache_dir: Path | None = None, extra_args: list[str] | None = None,
                 **popen):
        """`popen`: more `subprocess.Popen` arguments (`stderr=`, `start_new_session=`)."""
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lpm_npc", "serve", "--port", str(self.port)]
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        cmd += extra_args or []
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, env=env, **popen)

    def wait_ready(self, timeout: float = 120.0) -> NpcClient:
        deadline = time.monotonic() + timeout
        client = NpcClient(self.address)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sidecar exited with code {self.proc.returncode} during start-up")
            try:
                client.wait_ready(timeout=2.0)
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the sidecar did not become ready on {self.address} in {timeout:.0f} s")
                time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("sidecar did not stop in %.0f s; killing it", timeout)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
