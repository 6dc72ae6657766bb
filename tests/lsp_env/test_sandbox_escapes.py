"""Hostile programs against the code sandbox, each judged from outside the sandboxed process.

After each run the test looks only at what it holds itself: files in folders it owns and in the interpreter's
folders, listeners it opened, a process it started, a secret in its own environment, the host's process table
and settings. What a program prints is believed only as evidence against it.
"""
from __future__ import annotations

import os
import platform
import secrets
import site
import socket
import subprocess
import sys
import time
from pathlib import Path
from string import Template

import pytest

from lsp_env.cgroups import cgroup_parents
from lsp_env.sandbox import SandboxLimits, run_python
from lsp_env.seccomp import ALLOWED, SYSCALLS

LIMITS = SandboxLimits(timeout=1.5, cpu_seconds=1, memory_mb=256)
SENTINEL = "sentinel-5b1e-only-in-this-file"  # in an output only if the program read this file
SYSCTL = Path("/proc/sys/kernel/printk_ratelimit_burst")
OS_GLOBALS = ("g = [c for c in ().__class__.__base__.__subclasses__() "
              "if c.__name__ == '_wrap_close'][0].__init__.__globals__\n")
_NUMBERS = SYSCALLS.get(platform.machine(), (0, {}))[1]
ALLOWED_NUMBERS = sorted({_NUMBERS[name] for name in (*ALLOWED, "clone", "clone3", "fork", "vfork", "socket",
                                                      "socketpair", "ioctl") if name in _NUMBERS})
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def hostile(name, code, call=None, status=None, later=False, slow=False, accounted=False):
    """One program; `status`: the statuses it may end with; `later`: it acts after the run, so look again;
    `accounted`: it needs a cgroup of the run (the task cap, and limits confirmed by the kernel's accounting)."""
    marks = [pytest.mark.slow] if slow else []
    if accounted:
        marks.append(pytest.mark.skipif(not cgroup_parents(), reason="no cgroup can be made here"))
    return pytest.param(code, call, status, later, id=name, marks=marks)


HOST_PACKAGES = sorted({*site.getsitepackages(), *site.getsitepackages([sys.base_prefix]),
                        *(path for path in sys.path if path.endswith("-packages"))})


PROGRAMS = [
    # The audit hook's escapes: the real os through function globals, the runner's globals, random._os.
    hostile("hook_off_via_function_globals", OS_GLOBALS + "g['system']('touch $marker')"),
    hostile("runner_globals_rewritten", "import __main__\n__main__.request['limits'].clear()\nopen('$marker', 'w')"),
    hostile("random_os_system", "import random\nrandom._os.system('touch $marker')"),
    hostile("random_os_open", "import random\no = random._os\no.close(o.open('$marker', o.O_CREAT | o.O_WRONLY))"),
    # Shell commands and new processes.
    hostile("os_system", "import os\nprint(os.system('touch $marker'))"),
    hostile("subprocess_shell", "import subprocess\nsubprocess.run('touch $marker', shell=True)", status={"error"}),
    hostile("subprocess_python", "import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
                                 "'open(\"$marker\", \"w\")'])", status={"error"}),
    hostile("execv_python", "import os, sys\n"
                            "os.execv(sys.executable, [sys.executable, '-c', 'open(\"$marker\", \"w\")'])"),
    hostile("execv_shell", "import os\nos.execv('/usr/bin/sh', ['sh', '-c', 'touch $marker'])"),
    hostile("posix_spawn", "import os\nos.posix_spawn('/usr/bin/touch', ['touch', '$marker'], {})", status={"error"}),
    hostile("spawnl", "import os\nos.spawnl(os.P_WAIT, '/usr/bin/touch', 'touch', '$marker')", status={"error"}),
    hostile("pty_fork", "import pty\nif pty.fork()[0] == 0:\n    open('$marker', 'w')", status={"error"}),
    hostile("multiprocessing", "import multiprocessing as m\np = m.Process(target=open, args=('$marker', 'w'))\n"
                               "p.start()\np.join()", status={"error"}),
    hostile("ctypes_system", LIBC + "libc.system(b'touch $marker')"),
    hostile("ctypes_raw_clone", LIBC + "import os, platform\n"
                                "number = {'x86_64': 56, 'aarch64': 220}[platform.machine()]\n"
                                "pid = libc.syscall(number, 17, 0, 0, 0, 0)\n"
                                "if pid == 0:\n    open('$marker', 'w')\n    os._exit(0)\n"
                                "print(pid, ctypes.get_errno())"),
    hostile("ctypes_raw_clone3", LIBC + "import os\nargs = (ctypes.c_uint64 * 8)(0, 0, 0, 0, 17, 0, 0, 0)\n"
                                 "pid = libc.syscall(435, ctypes.byref(args), 64)\n"
                                 "if pid == 0:\n    open('$marker', 'w')\n    os._exit(0)\n"
                                 "print(pid, ctypes.get_errno())"),
    hostile("x32_abi_fork", LIBC + "import os\nif libc.syscall(0x40000000 + 57) == 0:\n"
                            "    open('$marker', 'w')\n    os._exit(0)"),
    # The network: the test's listeners, a public address, names.
    hostile("tcp_loopback", "import socket\nsocket.create_connection(('127.0.0.1', $port), timeout=0.5)"),
    hostile("tcp_host_address", "import socket\nsocket.create_connection(('$host_ip', $port), timeout=0.5)"),
    hostile("tcp_ipv6_loopback", "import socket\nsocket.create_connection(('::1', $port), timeout=0.5)"),
    hostile("udp_to_listener", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                               "for host in ('127.0.0.1', '$host_ip'):\n    s.sendto(b'ESCAPED', (host, $udp_port))"),
    hostile("tcp_public_address", "import socket\nfor address in (('1.1.1.1', 80), ('8.8.8.8', 53)):\n"
                                  "    try:\n        socket.create_connection(address, timeout=0.5)\n"
                                  "        print('ESCAPED', address)\n"
                                  "    except OSError as error:\n        print(error)"),
    hostile("dns_lookup", "import socket\nprint('ESCAPED', socket.getaddrinfo('example.com', 80))", status={"error"}),
    hostile("abstract_unix_socket", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0$abstract')"),
    hostile("unix_socket_file", "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('$unix_path')"),
    # Secrets: the host's files, the parent's environment, this file.
    hostile("etc_passwd", "print(open('/etc/passwd').read())", status={"error"}),
    hostile("parent_environ", "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", status={"error"}),
    hostile("every_environ", "import os\nfor pid in ['self', '1', str(os.getppid())] + os.listdir('/proc'):\n"
                             "    print(open(f'/proc/{pid}/environ').read())", status={"error"}),
    hostile("own_environ", "import os\nprint(dict(os.environ))", status={"ok"}),
    hostile("read_test_source", "print(open('$test_file').read())", status={"error"}),
    hostile("list_every_folder", "import os\nfor top in os.listdir('/'):\n    print(top, os.listdir('/' + top))"),
    # The game's process, the test's process and a bystander.
    hostile("kill_parent", "import os\nos.kill(os.getppid(), 9)\nprint('still here')", status={"ok"}),
    hostile("killpg_parent", "import os\nos.killpg(os.getpgid(os.getppid()), 9)"),
    hostile("kill_everything", "import os\nos.kill(-1, 9)\nprint('still here')"),
    hostile("kill_and_stop_host_pids", "import os\nfor pid in ($victim, $test_pid):\n"
                                       "    for sig in (9, 19):\n        try:\n            os.kill(pid, sig)\n"
                                       "        except OSError as error:\n            print(error)", status={"ok"}),
    hostile("signal_storm", "import os\nfor sig in range(1, 32):\n    for pid in (1, -1, $victim):\n"
                            "        try:\n            os.kill(pid, sig)\n        except OSError:\n            pass"),
    # Processes and threads that try to outlive the run.
    hostile("setsid_daemon", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n"
                             "    open('$marker', 'w')", later=True),
    hostile("double_fork_daemon", "import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n        os.setsid()\n"
                                  "        time.sleep(0.3)\n        open('$marker', 'w')", later=True),
    hostile("sleeping_child", "import os, time\nif os.fork() == 0:\n    time.sleep(30)"),
    hostile("thread_writes_later", "import threading, time\ndef later():\n    time.sleep(0.3)\n"
                                   "    open('$marker', 'w')\nthreading.Thread(target=later).start()", later=True),
    # Files outside: open, rename, link, symlinks, the interpreter's own folders, /dev/shm.
    hostile("open_outside", "open('$marker', 'w').write('ESCAPED')", status={"error"}),
    hostile("makedirs_then_write", "import os\nos.makedirs('$tmp', exist_ok=True)\nopen('$marker', 'w').write('x')"),
    hostile("rename_into", "import os\nopen('/tmp/x', 'w').write('x')\nos.rename('/tmp/x', '$marker')"),
    hostile("link_into", "import os\nopen('/tmp/x', 'w').write('x')\nos.link('/tmp/x', '$marker')"),
    hostile("symlink_out", "import os\nos.symlink('$marker', '/tmp/link')\nopen('/tmp/link', 'w').write('x')"),
    hostile("write_interpreter_prefix", "import os\nfor act in (lambda: open('$prefix_marker', 'w'),\n"
                                        "            lambda: os.mkdir('$prefix_marker'),\n"
                                        "            lambda: os.link(os.__file__, '$prefix_marker'),\n"
                                        "            lambda: os.symlink('/tmp', '$prefix_marker')):\n"
                                        "    try:\n        act()\n    except OSError as error:\n        print(error)"),
    hostile("tamper_interpreter", "import os, sys\nos.chmod(sys.executable, 0o777)\nos.utime(os.__file__, (0, 0))"),
    hostile("write_usr", "open('$usr_marker', 'w')", status={"error"}),
    hostile("dev_shm", "open('$shm_marker', 'w')", status={"error"}),
    hostile("remount_usr_writable", LIBC + "print(libc.mount(None, b'/usr', None, 32 | 4096, None))\n"
                                   "open('$usr_marker', 'w')", status={"error"}),
    hostile("write_sysctl", "open('$sysctl', 'w').write('11')", status={"error"}),
    hostile("sethostname", "import socket\nsocket.sethostname('escaped')", status={"error"}),
    hostile("new_user_namespace", LIBC + "if libc.unshare(0x10000000) == 0:\n    print('ESCAPED')"),
    hostile("chroot", "import os\nos.chroot('/tmp')", status={"error"}),
    # Forging the report.
    hostile("forge_status_line", "import json, os\nprint(json.dumps({'status': 'ok', 'value': '42', 'error': None}))\n"
                                 "os._exit(0)\ndef f():\n    return 1", call="f()", status={"error"}),
    hostile("forge_then_die", "import os, sys\nprint('{\"status\": \"ok\", \"value\": \"42\"}')\nsys.stdout.flush()\n"
                              "os.kill(os.getpid(), 9)", call="f()", status={"crashed"}),
    hostile("forge_memory_error", "import sys\nsys.stderr.write('MemoryError\\n')\nsys.exit(0)", call="f()",
            status={"error"}),
    hostile("raise_own_limits", "import resource\ntry:\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
                                "except ValueError:\n    pass\nx = [bytearray(10 ** 6) for _ in range(10 ** 4)]",
            status={"memory_limit"}),
    # Claiming a limit the run did not reach: the exit codes and the signal the limits produce.
    hostile("claim_memory_limit", "import os\nos._exit(3)", status={"error"}, accounted=True),
    hostile("claim_cpu_limit_by_exit_code", "import os\nos._exit(152)", status={"crashed"}, accounted=True),
    hostile("claim_cpu_limit_by_signal", "import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)",
            status={"crashed"}, accounted=True),
    # Kernel resources no rlimit sees: tasks, SysV and POSIX IPC.
    hostile("thread_flood", LIBC + "import threading, time\nlibc.mallopt(-8, 1)  # one malloc arena: small threads\n"
                                   "threading.stack_size(32768)\nstarted = 0\ntry:\n    for _ in range(300):\n"
                                   "        threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
                                   "        started += 1\nexcept RuntimeError:\n    pass\n"
                                   "print('ESCAPED' if started > 64 else 'capped', started)", accounted=True),
    hostile("sysv_ipc", LIBC + "made = [libc.msgget(0, 0o1600), libc.semget(0, 8, 0o1600), "
                               "libc.shmget(0, 1 << 20, 0o1600)]\nprint('ESCAPED' if max(made) >= 0 else 'denied', made)"),
    hostile("posix_message_queue", LIBC + "libc.mq_open.restype = ctypes.c_int\n"
                                          "q = libc.mq_open(b'/lsp-escape', 0o100 | 2, 0o600, None)\n"
                                          "print('ESCAPED' if q >= 0 else 'denied', q)"),
    # Reading or taking over another process: the sandbox's own init, through pidfds, kcmp, process_vm_*.
    hostile("pidfd_of_init", "import os\ntry:\n    fd = os.pidfd_open(1)\n    print('ESCAPED', fd)\n"
                             "except OSError as error:\n    print(error)"),
    hostile("process_vm_readv_of_init", LIBC + "import platform\n"
            "number = {'x86_64': 310, 'aarch64': 270}[platform.machine()]\n"
            "buffer = ctypes.create_string_buffer(8)\n"
            "class Iovec(ctypes.Structure):\n    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
            "local, remote = Iovec(ctypes.addressof(buffer), 8), Iovec(0x400000, 8)\n"
            "got = libc.syscall(number, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n"
            "print('ESCAPED' if got >= 0 else 'denied', got, ctypes.get_errno())"),
    hostile("kcmp_with_init", LIBC + "import os, platform\n"
                                     "number = {'x86_64': 312, 'aarch64': 272}[platform.machine()]\n"
                                     "got = libc.syscall(number, 1, os.getpid(), 0, 0, 0)\n"
                                     "print('ESCAPED' if got >= 0 else 'denied', got)"),
    # Sockets of any family but AF_UNIX, AF_VSOCK (the host VM's port space) first.
    hostile("vsock_bind", "import socket\ns = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n"
                          "s.bind((socket.VMADDR_CID_ANY, 5002))\nprint('ESCAPED')", status={"error"}),
    hostile("every_socket_family", "import socket\nmade = []\nfor family in range(1, 46):\n"
                                   "    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):\n"
                                   "        try:\n            socket.socket(family, kind).close()\n"
                                   "            made.append((family, kind))\n        except OSError:\n"
                                   "            pass\nprint('ESCAPED' if {f for f, _ in made} - {1} else 'unix only')"),
    # Every system call outside the seccomp allow-list, by number (with zero arguments), and ioctl requests
    # outside its list: each must be refused by the filter (EPERM, ENOTTY) before the kernel runs it.
    hostile("every_call_outside_the_allow_list", LIBC + f"allowed = {ALLOWED_NUMBERS!r}\nreached = []\n"
            "for number in range(600):\n    if number not in allowed:\n        ctypes.set_errno(0)\n"
            "        if libc.syscall(number, 0, 0, 0, 0, 0, 0) != -1 or ctypes.get_errno() != 1:\n"
            "            reached.append((number, ctypes.get_errno()))\n"
            "print('ESCAPED' if reached else 'refused', reached)"),
    hostile("ioctl_outside_the_list", LIBC + "import os\nfd = os.open('f', os.O_CREAT | os.O_RDWR)\n"
            "os.write(fd, b'abc')\nsize = ctypes.c_long(-1)\ngot = libc.ioctl(fd, 0x5460, ctypes.byref(size))\n"
            "print('ESCAPED' if got == 0 else 'refused', got, size.value, ctypes.get_errno())"),
    # The host's installed packages, through sys.path.
    hostile("import_host_packages", f"import sys\nsys.path[:0] = {HOST_PACKAGES!r}\n"
                                    "for name in ('pip', 'setuptools', '_pytest', 'torch', 'numpy', 'pettingzoo'):\n"
                                    "    try:\n        __import__(name)\n        print('ESCAPED', name)\n"
                                    "    except ImportError:\n        pass"),
    # Output floods: 1 GB on stdout, on stderr, as the value, on every descriptor.
    hostile("huge_stdout", "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 10 ** 6)",
            status={"output_limit"}),
    hostile("huge_stderr", "import sys\nfor _ in range(1000):\n    sys.stderr.write('x' * 10 ** 6)",
            status={"output_limit"}),
    hostile("huge_value", "def f():\n    return 'y' * 10 ** 7", call="f()", status={"output_limit"}),
    hostile("flood_every_fd", "import os\nwhile True:\n    for fd in range(64):\n        try:\n"
                              "            os.write(fd, b'z' * 65536)\n        except OSError:\n            pass",
            status={"output_limit"}),
    # ctypes, ptrace, descriptors, kernel interfaces.
    hostile("ctypes_segfault", "import ctypes\nctypes.string_at(0)", status={"crashed"}),
    hostile("ptrace", LIBC + "for pid in (1, $victim):\n    if libc.ptrace(16, pid, 0, 0) == 0:\n"
                             "        print('ESCAPED', pid)\nif libc.ptrace(0, 0, 0, 0) == 0:\n    print('ESCAPED')"),
    hostile("inherited_descriptors", "import os\nfor fd in range(3, 1024):\n    try:\n"
                                     "        os.write(fd, b'ESCAPED')\n    except OSError:\n        pass"),
    hostile("sysv_shared_memory", LIBC + "if libc.shmget(0, 1 << 30, 0o1600) >= 0:\n    print('ESCAPED')"),
    # Bombs and loops.
    hostile("fork_bomb", "import os\nwhile True:\n    os.fork()", status={"error"}),
    hostile("ctypes_fork_bomb", LIBC + "while libc.fork() >= 0:\n    pass"),
    hostile("thread_bomb", "import threading, time\nwhile True:\n"
                           "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
            status={"error", "memory_limit"}),
    hostile("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))", status={"memory_limit"}),
    hostile("mmap_bomb", "import mmap\nm = mmap.mmap(-1, 1 << 34)", status={"error"}),
    hostile("fill_tmp", "i = 0\nwhile True:\n    open(f'/tmp/{i}', 'wb').write(b'x' * 100000)\n    i += 1",
            status={"error"}),
    hostile("sleep_forever", "import time\ntime.sleep(60)", status={"timeout"}),
    hostile("cpu_loop", "while True:\n    pass", status={"cpu_limit"}),
    hostile("cpu_loop_ignoring_signals", "import signal\nfor sig in (signal.SIGXCPU, signal.SIGTERM):\n"
                                         "    signal.signal(sig, signal.SIG_IGN)\nwhile True:\n    pass",
            status={"timeout", "crashed"}, slow=True),
    hostile("cpu_loop_in_threads", "import threading\ndef spin():\n    while True:\n        pass\n"
                                   "for _ in range(4):\n    threading.Thread(target=spin).start()",
            status={"cpu_limit"}, slow=True),
]


class Host:
    """What the test holds outside the sandbox, and the checks that it is untouched."""

    def __init__(self, folder: Path):
        self.tcp = _listener(socket.SOCK_STREAM)
        self.udp = _listener(socket.SOCK_DGRAM)
        self.abstract = f"lsp-sandbox-test-{secrets.token_hex(4)}"
        self.unix_path = folder / "listener.sock"
        self.unix = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        self.unix[0].bind("\0" + self.abstract)
        self.unix[1].bind(str(self.unix_path))
        for listener in [self.tcp, *self.unix]:
            listener.listen()
        for listener in [self.tcp, self.udp, *self.unix]:
            listener.setblocking(False)
        self.inherited = folder / "inherited.txt"
        self.inherited_fd = os.open(self.inherited, os.O_WRONLY | os.O_CREAT)
        os.set_inheritable(self.inherited_fd, True)
        self.victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.passwd = Path("/etc/passwd").read_text().splitlines()[0] if Path("/etc/passwd").exists() else None
        self.watched = [os.path.realpath(sys.executable), os.__file__]
        self.settings = self.observe()

    def observe(self):
        """The host state that programs try to change: sysctl, hostname, interpreter files' modes and times."""
        stats = [os.stat(path) for path in self.watched]
        sysctl = SYSCTL.read_text() if SYSCTL.exists() else None
        return sysctl, socket.gethostname(), [(stat.st_mode, stat.st_mtime_ns) for stat in stats]

    def fields(self, folder: Path, token: str) -> dict:
        prefix = Path(os.path.realpath(sys.base_prefix))
        return dict(marker=folder / f"escaped-{token}", tmp=folder, port=self.tcp.getsockname()[1],
                    udp_port=self.udp.getsockname()[1], host_ip=_host_address(), abstract=self.abstract,
                    unix_path=self.unix_path, victim=self.victim.pid, test_pid=os.getpid(),
                    test_file=Path(__file__).resolve(), sysctl=SYSCTL,
                    prefix_marker=prefix / f"lsp-sandbox-escape-{token}",
                    usr_marker=Path("/usr/lib") / f"lsp-sandbox-escape-{token}",
                    shm_marker=Path("/dev/shm") / f"lsp-sandbox-escape-{token}")

    def assert_untouched(self, fields: dict):
        outside_files = [fields["marker"], fields["prefix_marker"], fields["usr_marker"], fields["shm_marker"]]
        assert [path for path in outside_files if os.path.lexists(path)] == []
        assert os.listdir(fields["tmp"]) == [], "a file appeared in the test's folder"
        for listener in [self.tcp, *self.unix]:
            with pytest.raises(BlockingIOError):
                listener.accept()
        with pytest.raises(BlockingIOError):
            self.udp.recv(1024)
        assert self.inherited.stat().st_size == 0
        assert self.victim.poll() is None and _state(self.victim.pid)[0] not in "Tt"
        assert _state(self.victim.pid)[1] == "0", "the bystander is being traced"
        assert self.observe() == self.settings

    def close(self):
        self.victim.kill()
        self.victim.wait()
        os.close(self.inherited_fd)
        for listener in [self.tcp, self.udp, *self.unix]:
            listener.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    held = Host(tmp_path_factory.mktemp("host"))
    yield held
    held.close()


@pytest.mark.parametrize("code, call, statuses, later", PROGRAMS)
def test_a_hostile_program_leaves_no_trace(code, call, statuses, later, host, tmp_path, monkeypatch):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("LSP_SANDBOX_SECRET", secret)
    token = secrets.token_hex(4)
    fields = host.fields(tmp_path, token)
    before = _sandbox_processes(token)
    try:
        result = run_python(Template(code).substitute(fields), call, LIMITS)
        if later:
            time.sleep(0.6)
        assert statuses is None or result.status in statuses, result
        output = " ".join(filter(None, (result.stdout, result.value, result.error)))
        assert secret not in output and SENTINEL not in output and "ESCAPED" not in result.stdout
        assert host.passwd is None or host.passwd not in output
        deadline = time.monotonic() + 2
        while (left := _sandbox_processes(token) - before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes left after the run: {left}"
        host.assert_untouched(fields)
    finally:
        for name in ("prefix_marker", "usr_marker", "shm_marker"):
            _remove(fields[name])


def test_the_corpus_holds_at_least_40_distinct_programs():
    names, sources = [p.id for p in PROGRAMS], [p.values[0] for p in PROGRAMS]
    assert len(set(names)) == len(names) and len(set(sources)) == len(sources) >= 40


def _listener(kind: int) -> socket.socket:
    """A socket on every IPv4 address (and IPv6, where the host has it), on one free port."""
    try:
        listener = socket.socket(socket.AF_INET6, kind)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
    except OSError:
        listener = socket.socket(socket.AF_INET, kind)
        listener.bind(("0.0.0.0", 0))
    return listener


def _host_address() -> str:
    """The host's address on its default route (nothing is sent), or loopback without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _state(pid: int) -> tuple[str, str]:
    """(state letter, TracerPid) of a host process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return status["State"].strip(), status["TracerPid"].strip()


def _sandbox_processes(token: str) -> set[int]:
    """Live host processes a run could leave: in a PID namespace below this one, descended from this test, or
    naming the run's token."""
    depth = len(Path("/proc/self/status").read_text().split("NSpid:")[1].splitlines()[0].split())
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            nspid = (entry / "status").read_text().split("NSpid:")[1].splitlines()[0].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        parents[int(entry.name)] = int(parent)
        if len(nspid) > depth or token.encode() in cmdline:
            found.add(int(entry.name))
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor == os.getpid():
            found.add(pid)
    return found


def _remove(path: Path) -> None:
    """Delete what an escape left in a shared folder."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif os.path.lexists(path):
        path.unlink()
