"""A cgroup per sandboxed run (`lsp_env.sandbox`): the kernel caps its tasks and accounts its CPU and memory.

    with RunCgroup.create(max_tasks=32) as cgroup:   # None where no cgroup can be written
        command = cgroup.wrap(command)                # the run's first process joins it before bwrap starts
        ...
        cgroup.cpu_seconds(), cgroup.peak_memory_bytes()

What the kernel counts cannot be forged by the program, unlike its exit code: a run is named "cpu_limit" or
"memory_limit" only when this accounting shows the limit was reached. Both cgroup versions work: v1's pids,
cpuacct and memory hierarchies, and v2 where this process's cgroup delegates the pids controller (v2 accounts
CPU in every cgroup, memory where that controller is delegated too).
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# The cgroup v1 controllers used, and a file that shows a cgroup of each works.
_V1 = {"pids": "pids.max", "cpuacct": "cpuacct.usage", "memory": "memory.max_usage_in_bytes"}


@dataclass
class RunCgroup:
    """The cgroup folders of one run, by controller (v1), or {"v2": folder}."""

    folders: dict[str, Path]

    @classmethod
    def create(cls, max_tasks: int) -> RunCgroup | None:
        """New cgroups under `cgroup_parents()`, capped at `max_tasks` tasks; None where there are none."""
        parents = cgroup_parents()
        if not parents:
            return None
        folders = {}
        try:
            for name, parent in parents.items():
                folders[name] = Path(tempfile.mkdtemp(prefix="lsp-sandbox-", dir=parent))
            (folders.get("pids") or folders["v2"]).joinpath("pids.max").write_text(str(max_tasks))
        except BaseException:
            cls(folders).remove()
            raise
        return cls(folders)

    def wrap(self, command: list[str]) -> list[str]:
        """`command`, started by a shell that first moves itself into every folder of the run."""
        joins = " && ".join(f'echo $$ > "${index + 1}/cgroup.procs"' for index in range(len(self.folders)))
        return ["/bin/sh", "-c", f'{joins} && shift {len(self.folders)} && exec "$@"', "sh",
                *map(str, self.folders.values()), *command]

    def cpu_seconds(self) -> float | None:
        if "cpuacct" in self.folders:
            return int(_read(self.folders["cpuacct"] / "cpuacct.usage") or 0) / 1e9
        if "v2" in self.folders:
            stat = dict(line.split() for line in _read(self.folders["v2"] / "cpu.stat").splitlines())
            return int(stat.get("usage_usec", 0)) / 1e6
        return None

    def peak_memory_bytes(self) -> int | None:
        if "memory" in self.folders:
            return int(_read(self.folders["memory"] / "memory.max_usage_in_bytes") or 0)
        if "v2" in self.folders and (value := _read(self.folders["v2"] / "memory.peak")):
            return int(value)
        return None

    def remove(self) -> None:
        """Remove the folders once the run's last task is gone (killed tasks leave a moment after being reaped)."""
        deadline = time.monotonic() + 2
        for folder in self.folders.values():
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)

    def __enter__(self) -> RunCgroup:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@functools.lru_cache(maxsize=None)
def cgroup_parents() -> dict[str, Path]:
    """Where this process may make a run's cgroups, by controller: v1's pids (required), cpuacct and memory
    hierarchies, or {"v2": this process's v2 cgroup} if it delegates the pids controller. Each is checked by
    making a cgroup there. {} where none can be made (e.g. no cgroup delegated to an unprivileged user)."""
    v1, v2 = {}, None
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for name in set(controllers.split(",")) & set(_V1):
            v1[name] = ROOT / controllers / path.lstrip("/")
        if controllers == "":
            for root in (ROOT, ROOT / "unified"):
                if "pids" in _read(root / path.lstrip("/") / "cgroup.subtree_control").split():
                    v2 = root / path.lstrip("/")
    usable = {name: folder for name, folder in v1.items() if _can_make(folder, _V1[name])}
    if "pids" in usable:
        return usable
    return {"v2": v2} if v2 is not None and _can_make(v2, "pids.max") else {}


def _can_make(parent: Path, control: str) -> bool:
    try:
        probe = Path(tempfile.mkdtemp(prefix="lsp-sandbox-", dir=parent))
    except OSError:
        return False
    try:
        return (probe / control).exists()
    finally:
        os.rmdir(probe)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
