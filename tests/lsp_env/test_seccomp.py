"""The sandbox's seccomp filter: its tables against the kernel's headers, and the program it assembles.

What the filter lets a program do is tested from outside, in `test_sandbox_escapes.py` (every call outside the
allow-list) and `test_sandbox.py` (what a normal program needs still works).
"""
import re
from pathlib import Path

import pytest

from lsp_env.seccomp import _JEQ, _RETURN, ALLOWED, SYSCALLS, _assemble, seccomp_filter

HEADERS = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
           "aarch64": Path("/usr/include/asm-generic/unistd.h")}
ABSENT_ON_AARCH64 = {"open", "creat", "stat", "lstat", "access", "mkdir", "rmdir", "unlink", "rename", "link",
                     "symlink", "readlink", "chmod", "utime", "utimes", "pipe", "dup2", "pause", "time", "alarm",
                     "arch_prctl", "getpgrp", "poll", "select", "epoll_create", "epoll_wait", "eventfd", "fork",
                     "vfork"}


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
def test_each_number_is_the_kernels(machine):
    header = HEADERS[machine]
    if not header.exists():
        pytest.skip(f"no {header} here")
    text = header.read_text()
    numbers = {name: int(number) for name, number in re.findall(r"#define __NR_(\w+)\s+(\d+)", text)}
    numbers |= {"newfstatat" if name == "fstatat" else name: int(number)
                for name, number in re.findall(r"#define __NR3264_(\w+)\s+(\d+)", text)}
    table = SYSCALLS[machine][1]
    assert {name: number for name, number in table.items() if numbers.get(name) != number} == {}
    assert {name for name in ALLOWED if name in numbers and name not in table} == set()


@pytest.mark.parametrize("machine", sorted(SYSCALLS))
def test_every_allowed_call_is_known_and_the_program_fits(machine):
    table = SYSCALLS[machine][1]
    lacking = ABSENT_ON_AARCH64 if machine == "aarch64" else set()
    assert {name for name in ALLOWED if name not in table} == lacking & set(ALLOWED)
    program = seccomp_filter(machine)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # the kernel's limit on a classic BPF program


def test_a_conditional_jump_past_bpf_reach_is_refused():
    far = [(_JEQ, 1, "end"), *[(_RETURN, "allow")] * 300, "end", (_RETURN, "eperm")]
    with pytest.raises(ValueError, match="BPF reaches 255"):
        _assemble(far)
