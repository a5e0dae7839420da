"""Hand back a thread's idle OpenMP workers before the model moves to another thread.

Each thread that runs a parallel torch operation gets its own team of OpenMP worker threads
(GNU OpenMP keeps a pool per calling thread). The review service loads the model in the main
thread, which leaves a pool there, and then scores on its batcher thread, which makes a second
one: with both pools on the same cores the batcher's passes ran far slower than the same
passes on the main thread (`bench/bench_service.py` prints the service's model time per text
beside the offline one; `tests/test_openmp.py` checks the pause on a live pool). Pausing the loading thread's pool (OpenMP 5.0 ``omp_pause_resource_all``, soft: the threads end,
the runtime stays usable and makes a new pool if that thread runs parallel work again) removes
the second pool, and the batcher's passes run as fast as the main thread's.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("howsure.backends")

OMP_PAUSE_SOFT = 1
"""``omp_pause_soft``: end the pool's threads but keep the runtime's state."""


def _openmp_libraries() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (libgomp, libiomp5, libomp)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return []
    names = ("libgomp", "libiomp", "libomp")
    return sorted(path for path in paths if path.startswith("/") and any(n in path.rsplit("/", 1)[-1] for n in names))


def release_thread_pool() -> bool:
    """Pause the OpenMP pool of the calling thread; True if a runtime did so. Never raises:
    without an OpenMP runtime that offers the call (or off Linux) there is nothing to release."""
    released = False
    for path in _openmp_libraries():
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.restype = ctypes.c_int
        pause.argtypes = [ctypes.c_int]
        if pause(OMP_PAUSE_SOFT) == 0:
            released = True
        else:
            log.debug("%s refused to pause its OpenMP threads", path)
    return released
