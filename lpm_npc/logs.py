"""Structured logging: human-readable by default, one JSON object per line with --log-format json."""

from __future__ import annotations

import json
import logging
import sys
import time


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (not the one at set-up), so a
    replaced stderr (an embedding host, a test runner's capture) never leaves it on a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "info", fmt: str = "text", prefix: str = "") -> None:
    """`prefix`: a process's name in every text line (a front process of several: "front-2")."""
    handler = StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        who = f"{prefix} " if prefix else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # mediapipe/absl and grpc are chatty at INFO
    for noisy in ("absl", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
