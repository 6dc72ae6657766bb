import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from algorithms.memory import PeakMemory, resident_gib
from algorithms.trainer import memory_metrics

ROOT = Path(__file__).resolve().parents[2]
linux_glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                 reason="reads /proc and calls glibc")


def in_fresh_process(script: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          check=True, cwd=str(ROOT)).stdout


@linux_glibc
def test_freed_memory_goes_back_to_the_operating_system():
    """Blocks freed in the middle of the heap stay resident until `release_freed_memory`; checked in a fresh
    process, from its own /proc status."""
    freed = float(in_fresh_process("""
        from algorithms.memory import release_freed_memory, resident_gib

        blocks = [bytearray(b"x" * 100_000) for _ in range(3000)]  # ~300 MB of heap blocks, below mmap's threshold
        keep = blocks[-1]  # holds the top of the heap, so that freeing the rest cannot shrink it
        del blocks
        before = resident_gib()
        release_freed_memory()
        print((before - resident_gib()) * 1024)
    """))
    assert freed > 200


@linux_glibc
def test_peak_memory_sees_a_freed_allocation_once_and_leaves_the_kernel_peak_alone():
    """A 400 MB buffer held for half a second and freed shows in the window it lived in, not in the next one;
    the process's own high-water mark (what `time -v` reports) still includes it."""
    out = in_fresh_process("""
        import time
        from algorithms.memory import PeakMemory, resident_gib

        peaks = PeakMemory(interval_s=0.01)
        base = resident_gib()
        buffer = bytearray(400 * 2**20)
        buffer[::4096] = b"x" * len(buffer[::4096])  # touch every page
        time.sleep(0.5)
        del buffer
        during = peaks.take()
        time.sleep(0.2)
        after = peaks.take()
        high_water = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2**20
        print(base, during, after, high_water)
    """)
    base, during, after, high_water = map(float, out.split())
    assert during - base > 0.35
    assert after - base < 0.1
    assert high_water - base > 0.35


@linux_glibc
def test_peak_memory_is_a_number_in_gib_here_and_the_iteration_peak_is_the_largest_phase():
    peaks = PeakMemory()
    try:
        assert 0.01 < peaks.take() < 1024 and resident_gib() is not None
    finally:
        peaks.close()
    metrics = memory_metrics({"collect": (2.0, None), "train": (3.5, None), "sync": (1.0, None)})
    assert metrics == {"memory/peak_gib": 3.5, "memory/peak_gib/collect": 2.0, "memory/peak_gib/train": 3.5,
                       "memory/peak_gib/sync": 1.0}
    assert memory_metrics({"collect": (2.0, None), "train": (3.5, None)}, by_phase=False) == {"memory/peak_gib": 3.5}
    assert memory_metrics({"collect": (None, None)}) == {}


def test_device_memory_is_logged_beside_resident_memory_when_a_device_reports_it():
    metrics = memory_metrics({"collect": (2.0, 0.5), "train": (3.0, 7.5)})
    assert metrics["memory/device_peak_gib"] == 7.5 and metrics["memory/device_peak_gib/collect"] == 0.5
    assert metrics["memory/peak_gib"] == 3.0
