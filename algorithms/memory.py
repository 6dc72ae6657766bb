"""Process memory: give freed memory back to the operating system between phases, and measure each phase's peak.

Both read or call Linux and glibc; elsewhere memory is not measured (None) and nothing is released.
"""
from __future__ import annotations

import os
import threading


def release_freed_memory() -> None:
    """Give memory that was freed back to the operating system (glibc only; elsewhere a no-op).

    glibc keeps freed blocks for reuse by the thread that freed them, so without this each phase of an iteration
    (sampling and judging in worker threads, the reference pass, the training step) adds its transient peak to
    the last ones': the process's resident memory then grows to their sum (benchmarks/RESULTS.md)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def resident_gib() -> float | None:
    """The process's resident memory now, in GiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE / 2**30
    except OSError:
        return None


class PeakMemory:
    """The largest resident memory of this process between two `take()` calls, sampled by a daemon thread.

    Sampling leaves the kernel's own high-water mark alone, so tools that read it (`time -v`, `getrusage`)
    still see the process's peak. Peaks shorter than `interval_s` can be missed; a phase's peak (activations
    held through a backward pass, a batch of KV caches) lasts seconds.
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._peak = resident_gib()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        if self._peak is not None:
            threading.Thread(target=self._sample, name="peak-memory", daemon=True).start()

    def take(self) -> float | None:
        """The peak (GiB) since the last call, then start a new window from the memory in use now."""
        now = resident_gib()
        with self._lock:
            peak = None if self._peak is None else max(self._peak, now)
            self._peak = now
        return peak

    def close(self) -> None:
        self._stopped.set()

    def _sample(self) -> None:
        while not self._stopped.wait(self.interval_s):
            now = resident_gib()
            with self._lock:
                self._peak = max(self._peak, now)


def _glibc():
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


_LIBC = _glibc()
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
