"""The sandbox against hostile programs: each is stopped, reported, and harms nothing."""
import os
import time
from pathlib import Path

import pytest

from lsp_env.sandbox import SandboxLimits, run_python

# Reaches the `os` module's globals without importing anything, a classic escape from restricted builtins.
OS_GLOBALS = ("g = [c for c in ().__class__.__base__.__subclasses__() "
              "if c.__name__ == '_wrap_close'][0].__init__.__globals__\n")


def test_a_normal_program_runs_and_returns_its_value():
    result = run_python("import math\ndef f(x):\n    print('side effect')\n    return [math.isqrt(x), x % 7]", "f(50)")
    assert result.ok and result.value == "[7, 1]" and result.stdout == "side effect\n"


def test_runs_are_deterministic_across_processes():
    code = "def f():\n    return list({'apple', 'pear', 'fig', 'kiwi', 'plum'})"
    assert run_python(code, "f()").value == run_python(code, "f()").value


def test_a_program_error_is_reported():
    result = run_python("def f(x):\n    return 1 / x", "f(0)")
    assert result.status == "error" and "ZeroDivisionError" in result.error


def test_runaway_recursion_is_an_error():
    result = run_python("def f(n):\n    return f(n + 1)", "f(0)")
    assert result.status == "error" and "RecursionError" in result.error


def test_infinite_loop_hits_the_cpu_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass", limits=SandboxLimits(cpu_seconds=1))
    assert result.status == "cpu_limit"
    assert time.monotonic() - start < 5


def test_wall_clock_timeout_kills_the_program():
    start = time.monotonic()
    result = run_python("while True:\n    pass", limits=SandboxLimits(timeout=0.5, cpu_seconds=30))
    assert result.status == "timeout"
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("code", ["x = bytearray(10 ** 10)", "x = 'a' * 10 ** 11", "x = [0] * 10 ** 9"])
def test_huge_allocations_hit_the_memory_limit(code):
    assert run_python(code).status == "memory_limit"


def test_output_flood_is_cut_off():
    assert run_python("print('x' * 10 ** 6)").status == "output_limit"
    assert run_python("def f():\n    return 'y' * 10 ** 6", "f()").status == "output_limit"


@pytest.mark.parametrize("module", ["os", "subprocess", "socket", "shutil", "ctypes", "sys", "importlib", "time",
                                    "multiprocessing", "threading", "signal", "pathlib"])
def test_dangerous_imports_are_blocked(module):
    for code in (f"import {module}", f"__import__('{module}')", f"from {module} import *"):
        result = run_python(code)
        assert result.status == "blocked", (code, result)


def test_fork_bomb_is_blocked_and_leaves_no_process_behind():
    children_before = _children()
    result = run_python(OS_GLOBALS + "while True:\n    g['fork']()")
    assert result.status == "blocked" and "os.fork" in result.error
    assert _children() == children_before


def test_shell_commands_are_blocked(tmp_path):
    marker = tmp_path / "pwned"
    result = run_python(OS_GLOBALS + f"g['system']('touch {marker}')")
    assert result.status == "blocked" and "os.system" in result.error
    result = run_python(OS_GLOBALS + f"g['execv']('/bin/sh', ['sh', '-c', 'touch {marker}'])")
    assert result.status == "blocked"
    assert not marker.exists()


def test_blocked_errors_count_even_when_caught(tmp_path):
    result = run_python(OS_GLOBALS + "try:\n    g['fork']()\nexcept Exception:\n    pass\ndef f():\n    return 1", "f()")
    assert result.status == "blocked"


def test_file_writes_outside_the_sandbox_are_blocked(tmp_path):
    target = tmp_path / "written.txt"
    for code in (f"open({str(target)!r}, 'w').write('x')",
                 OS_GLOBALS + f"g['open']({str(target)!r}, g['O_WRONLY'] | g['O_CREAT'])",
                 OS_GLOBALS + f"g['sys'].modules['io'].open({str(target)!r}, 'w')",
                 OS_GLOBALS + f"g['remove']({str(Path(__file__))!r})"):
        assert run_python(code).status == "blocked", code
    assert not target.exists() and Path(__file__).exists()


def test_file_reads_outside_the_sandbox_are_blocked():
    for code in ("open('/etc/passwd').read()",
                 OS_GLOBALS + "g['sys'].modules['io'].open('/etc/passwd').read()",
                 OS_GLOBALS + "g['listdir']('/')"):
        assert run_python(code).status == "blocked", code


def test_writes_inside_the_sandbox_folder_are_allowed_and_removed():
    code = OS_GLOBALS + ("io = g['sys'].modules['io']\nio.open('notes.txt', 'w').write('hi')\n"
                         "def f():\n    return io.open('notes.txt').read(), g['getcwd']()")
    result = run_python(code, "f()")
    assert result.ok, result
    assert "'hi'" in result.value
    folder = eval(result.value)[1]  # the result is our own tuple repr
    assert not os.path.exists(folder)


def test_network_access_is_blocked():
    for code in ("import socket\nsocket.create_connection(('127.0.0.1', 80))",
                 OS_GLOBALS + "g['sys'].modules['_socket']",
                 "import urllib.request"):
        assert run_python(code).status in ("blocked", "error"), code
    assert run_python("import socket").status == "blocked"


def test_signals_and_limit_changes_are_blocked():
    assert run_python(OS_GLOBALS + "g['kill'](1, 9)").status == "blocked"
    code = OS_GLOBALS + "r = g['sys'].modules['resource']\nr.setrlimit(r.RLIMIT_CPU, (100, 100))"
    assert run_python(code).status == "blocked"


def _children() -> set[int]:
    """The pids of this process's live children (from /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                children.add(int(entry.name))
    return children
