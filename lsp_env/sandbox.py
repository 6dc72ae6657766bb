"""Run untrusted Python in a separate, limited process (standard library only).

    result = run_python("def f(x):\\n    return x * 2", call="f(21)")
    result.status, result.value   # ("ok", "42")

Layers of protection, from the outside in:

- a fresh interpreter (`-S -s -B`, an empty environment) started in its own
  session, in a temporary working directory that is deleted afterwards;
- a wall-clock timeout, after which the whole process group is killed (it is
  killed at the end of every run too, so nothing outlives a call);
- OS limits set by the child before any untrusted code runs (`resource`):
  CPU seconds, address space, file size, open files, processes, core dumps;
- an audit hook (`sys.addaudithook`, which cannot be removed) that blocks
  process creation, signals, sockets, `ctypes`, new imports, rlimit changes
  and any file access outside the temporary directory; a blocked attempt
  makes the run "blocked" even if the program catches the error;
- restricted builtins: no `open`, `input`, `exec`, `eval`, `compile`, and an
  `__import__` that only hands out a few pure modules loaded beforehand.

The `status` of a result says what happened: "ok", "error" (the program
raised), "blocked" (it tried something forbidden), "timeout", "cpu_limit",
"memory_limit", "output_limit" or "crashed" (it died without a report).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Pure modules untrusted code may import (they are loaded before the hook goes in).
ALLOWED_MODULES = (
    "math", "cmath", "itertools", "functools", "collections", "heapq", "bisect", "re", "string", "operator",
    "statistics", "fractions", "decimal", "random", "json", "copy", "dataclasses", "typing", "enum", "numbers",
    "textwrap", "unicodedata", "array",
)

_RUNNER = r'''
import builtins, io, json, os, resource, sys
request = json.loads(sys.stdin.read())
limits = request["limits"]
MB = 1024 * 1024
for name, value in ((resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1)),
                    (resource.RLIMIT_AS, (limits["memory_mb"] * MB,) * 2),
                    (resource.RLIMIT_FSIZE, (limits["file_mb"] * MB,) * 2),
                    (resource.RLIMIT_NOFILE, (32, 32)),
                    (resource.RLIMIT_NPROC, (0, 0)),
                    (resource.RLIMIT_CORE, (0, 0))):
    resource.setrlimit(name, value)
allowed = request["allowed_modules"]
for module in allowed:
    __import__(module)
home = os.path.realpath(os.getcwd())
blocked = []
real_stdout, dumps = sys.stdout, json.dumps  # bound before the program could replace them
DENIED = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
          "subprocess.", "socket.", "ctypes.", "resource.", "_thread.start", "sys.addaudithook", "code.__new__",
          "gc.get_", "builtins.input", "os.chdir", "os.chroot", "os.set", "signal.", "mmap.", "winreg.", "pty.")
PATH_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.truncate", "os.utime", "os.listdir", "os.scandir", "shutil.")

class Blocked(Exception):
    pass

def inside_home(path):
    if isinstance(path, int):
        return path in (0, 1, 2)
    path = os.path.realpath(os.fsdecode(path))
    return path == home or path.startswith(home + os.sep)

def deny(reason):
    blocked.append(reason)
    raise Blocked(reason)

def hook(event, args):
    if event == "import" or event.startswith(DENIED):
        deny(event + " is not allowed in the sandbox")
    if event == "open" and not inside_home(args[0]):
        deny(f"opening {args[0]!r} outside the sandbox folder is not allowed")
    if event.startswith(PATH_EVENTS) and args and args[0] is not None and not inside_home(args[0]):
        deny(f"{event} outside the sandbox folder is not allowed")

def safe_import(name, globals=None, locals=None, fromlist=(), level=0):
    root = name.partition(".")[0]
    if level or root not in allowed:
        deny(f"import {name} is not allowed in the sandbox")
    return builtins.__import__(name, globals, locals, fromlist, level)

def forbidden(name):
    def stub(*args, **kwargs):
        deny(f"{name}() is not allowed in the sandbox")
    return stub

safe_builtins = dict(vars(builtins), __import__=safe_import)
for name in ("open", "input", "exec", "eval", "compile", "breakpoint", "help", "exit", "quit"):
    safe_builtins[name] = forbidden(name)
namespace = {"__builtins__": safe_builtins, "__name__": "__sandbox__"}
captured = io.StringIO()
sys.addaudithook(hook)
status, value, error = "ok", None, None
try:
    sys.stdout = captured
    code = builtins.compile(request["code"], "<program>", "exec")
    builtins.exec(code, namespace)
    if request["call"] is not None:
        value = repr(builtins.eval(request["call"], namespace))
except Blocked as exception:
    status, error = "blocked", str(exception)
except MemoryError:
    status, error = "memory_limit", "MemoryError"
except BaseException as exception:
    status, error = "error", f"{type(exception).__name__}: {exception}"[:1000]
finally:
    sys.stdout = real_stdout
if blocked and status != "memory_limit":
    status, error = "blocked", blocked[0]
stdout = captured.getvalue()
real_stdout.write(dumps({"status": status, "value": value, "stdout": stdout, "error": error}))
real_stdout.flush()
'''


@dataclass
class SandboxResult:
    """What a sandboxed run did. `value` is the `repr` of the `call` expression's value."""

    status: str
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
    memory_mb: int = 512  # address space (virtual memory) of the whole process
    file_mb: int = 1  # the largest file (and report) the program may write
    max_output_chars: int = 10_000  # longer values or prints count as "output_limit"


def run_python(code: str, call: str | None = None, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code`, then evaluate the expression `call` (if given) in its namespace, in the sandbox."""
    request = json.dumps({"code": code, "call": call, "allowed_modules": list(ALLOWED_MODULES),
                          "limits": {"cpu_seconds": limits.cpu_seconds, "memory_mb": limits.memory_mb,
                                     "file_mb": limits.file_mb}})
    with tempfile.TemporaryDirectory(prefix="sandbox-") as folder:
        report_path = Path(folder) / ".report"
        with open(report_path, "wb") as report:
            process = subprocess.Popen(
                [sys.executable, "-S", "-s", "-B", "-c", _RUNNER], cwd=folder, stdin=subprocess.PIPE,
                stdout=report, stderr=subprocess.DEVNULL, start_new_session=True,
                env={"PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "HOME": folder, "TMPDIR": folder})
            timed_out = False
            try:
                process.communicate(request.encode(), timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
        if timed_out:
            return SandboxResult("timeout", error=f"stopped after {limits.timeout:g} s of wall-clock time")
        return _result(process.returncode, report_path.read_bytes()[: limits.file_mb * 1024 * 1024], limits)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the child's whole process group (whatever it started) and reap the child."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _result(returncode: int, report: bytes, limits: SandboxLimits) -> SandboxResult:
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult("cpu_limit", error=f"used more than {limits.cpu_seconds} s of CPU time")
    if returncode == -signal.SIGXFSZ:
        return SandboxResult("output_limit", error=f"wrote more than {limits.file_mb} MB")
    try:
        fields = json.loads(report.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return SandboxResult("crashed", error=f"the program exited with code {returncode} without a report")
    result = SandboxResult(fields["status"], fields["value"], fields["stdout"], fields["error"])
    if len(result.stdout) + len(result.value or "") > limits.max_output_chars:
        return SandboxResult("output_limit", error=f"output longer than {limits.max_output_chars} characters")
    return result
