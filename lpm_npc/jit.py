"""numba's `njit` for the project's compiled CPU kernels (render/cpu_kernels.py, audio/feature_kernel.py).

`NUMBA_USABLE` is False when numba cannot be imported or `LPMNPC_NO_NUMBA=1` is set; the kernels'
callers then keep their torch / numpy steps, and `njit` is a no-op decorator so the modules still import.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

try:  # numba is a dependency; if it is missing or broken the callers keep their slower steps
    from numba import njit
    NUMBA_USABLE = os.environ.get("LPMNPC_NO_NUMBA", "") in ("", "0")
except Exception as exc:  # pragma: no cover - depends on the install
    log.warning("numba unavailable (%s): the CPU renderer and speech features use their slower steps", exc)
    NUMBA_USABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn
        return wrap(args[0]) if args and callable(args[0]) else wrap
