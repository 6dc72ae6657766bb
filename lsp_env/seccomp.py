"""The code sandbox's seccomp filter (`lsp_env.sandbox`): a classic BPF program that bwrap installs.

An allow-list. A sandboxed program may make the system calls in `ALLOWED`, which are what CPython and its
standard library use to compute a value: memory, files inside the sandbox's own mounts, threads, time,
signals inside its PID namespace, polling, and sockets. Three of them are allowed by argument:
- `clone` only with CLONE_THREAD (threads; fork, vfork and a new process get EAGAIN);
- `socket` and `socketpair` only of a family in `SOCKET_FAMILIES` (AF_UNIX; a new network namespace isolates
  IP, but not e.g. AF_VSOCK, which reaches the host's VM port space), else EAFNOSUPPORT;
- `ioctl` only with a request in `IOCTL_REQUESTS` (is it a terminal, its size, bytes waiting, blocking and
  close-on-exec flags), else ENOTTY.

Every other call gets EPERM: tracing and reading other processes (ptrace, process_vm_readv, pidfd_getfd,
kcmp), kernel memory that no limit sees (SysV and POSIX IPC, keyrings, userfaultfd), and kernel interfaces
(bpf, perf events, io_uring, mount, namespaces), as well as any call a newer kernel adds. clone3 and other
architectures or ABIs (x32) get ENOSYS, so that the C library falls back to clone.
"""
from __future__ import annotations

import errno
import functools
import socket
import struct

ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore",
    # files and descriptors
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "lseek", "close", "close_range", "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock", "fsync",
    "fdatasync", "ftruncate", "truncate", "fallocate", "fadvise64", "sendfile", "copy_file_range",
    "open", "openat", "creat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access",
    "faccessat", "faccessat2", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
    "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "utimensat", "utime", "utimes", "umask", "getxattr",
    "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    # signals
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigsuspend",
    "sigaltstack", "restart_syscall", "kill", "tgkill", "tkill", "pause",
    # time
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time", "times",
    "getitimer", "setitimer", "alarm",
    # threads and this process
    "futex", "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "gettid", "sched_yield",
    "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "exit", "exit_group", "arch_prctl", "execve", "wait4", "waitid", "getpid",
    "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid", "getpgrp",
    "getpgid", "getsid", "uname", "sysinfo", "getrusage", "getrlimit", "setrlimit", "prlimit64", "getrandom",
    "getcpu", "getpriority", "setpriority",
    # sockets (of the families below) and polling
    "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt", "poll", "ppoll",
    "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "eventfd", "eventfd2",
)
SOCKET_FAMILIES = (socket.AF_UNIX,)
IOCTL_REQUESTS = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)  # TCGETS TIOCGWINSZ FIONREAD FIONBIO FIONCLEX FIOCLEX
CLONE_THREAD = 0x0001_0000

# (AUDIT_ARCH, {name: number}) per machine, from the kernel's unistd headers. A name a machine lacks (aarch64
# has no open, fork or poll, only their *at and p* forms) is left out of its table.
_X86_64 = """
read 0 write 1 open 2 close 3 stat 4 fstat 5 lstat 6 poll 7 lseek 8 mmap 9 mprotect 10 munmap 11 brk 12
rt_sigaction 13 rt_sigprocmask 14 rt_sigreturn 15 ioctl 16 pread64 17 pwrite64 18 readv 19 writev 20 access 21
pipe 22 select 23 sched_yield 24 mremap 25 msync 26 mincore 27 madvise 28 dup 32 dup2 33 pause 34 nanosleep 35
getitimer 36 alarm 37 setitimer 38 getpid 39 sendfile 40 socket 41 connect 42 accept 43 sendto 44 recvfrom 45
sendmsg 46 recvmsg 47 shutdown 48 bind 49 listen 50 getsockname 51 getpeername 52 socketpair 53 setsockopt 54
getsockopt 55 clone 56 fork 57 vfork 58 execve 59 exit 60 wait4 61 kill 62 uname 63 fcntl 72 flock 73 fsync 74
fdatasync 75 truncate 76 ftruncate 77 getcwd 79 chdir 80 fchdir 81 rename 82 mkdir 83 rmdir 84 creat 85
link 86 unlink 87 symlink 88 readlink 89 chmod 90 fchmod 91 umask 95 gettimeofday 96 getrlimit 97
getrusage 98 sysinfo 99 times 100 getuid 102 getgid 104 geteuid 107 getegid 108 getppid 110 getpgrp 111
getgroups 115 getresuid 118 getresgid 120 getpgid 121 getsid 124 rt_sigpending 127 rt_sigtimedwait 128
rt_sigsuspend 130 sigaltstack 131 utime 132 statfs 137 fstatfs 138 sched_getparam 143 sched_getscheduler 145
getpriority 140 setpriority 141 sched_get_priority_max 146 sched_get_priority_min 147 arch_prctl 158 setrlimit 160 gettid 186 getxattr 191 lgetxattr 192
fgetxattr 193 listxattr 194 llistxattr 195 flistxattr 196 time 201
futex 202 sched_getaffinity 204 epoll_create 213 getdents64 217 set_tid_address 218 restart_syscall 219
fadvise64 221 clock_gettime 228 clock_getres 229 clock_nanosleep 230 exit_group 231 epoll_wait 232
epoll_ctl 233 tgkill 234 utimes 235 waitid 247 tkill 200 openat 257 mkdirat 258 newfstatat 262 unlinkat 263
renameat 264 linkat 265 symlinkat 266 readlinkat 267 fchmodat 268 faccessat 269 pselect6 270 ppoll 271
set_robust_list 273 get_robust_list 274 utimensat 280 epoll_pwait 281 eventfd 284 fallocate 285 accept4 288
eventfd2 290 epoll_create1 291 dup3 292 pipe2 293 preadv 295 pwritev 296 recvmmsg 299 prlimit64 302
sendmmsg 307 getcpu 309 renameat2 316 getrandom 318 copy_file_range 326 preadv2 327 pwritev2 328 statx 332
rseq 334 clone3 435 close_range 436 faccessat2 439 epoll_pwait2 441
"""
_AARCH64 = """
getxattr 8 lgetxattr 9 fgetxattr 10 listxattr 11 llistxattr 12 flistxattr 13 getcwd 17 eventfd2 19 epoll_create1 20 epoll_ctl 21 epoll_pwait 22 dup 23 dup3 24 fcntl 25 ioctl 29 flock 32
mkdirat 34 unlinkat 35 symlinkat 36 linkat 37 renameat 38 statfs 43 fstatfs 44 truncate 45 ftruncate 46
fallocate 47 faccessat 48 chdir 49 fchdir 50 fchmod 52 fchmodat 53 openat 56 close 57 pipe2 59 getdents64 61
lseek 62 read 63 write 64 readv 65 writev 66 pread64 67 pwrite64 68 preadv 69 pwritev 70 sendfile 71
pselect6 72 ppoll 73 readlinkat 78 newfstatat 79 fstat 80 fsync 82 fdatasync 83 utimensat 88 exit 93
exit_group 94 waitid 95 set_tid_address 96 futex 98 set_robust_list 99 get_robust_list 100 nanosleep 101
getitimer 102 setitimer 103 clock_gettime 113 clock_getres 114 clock_nanosleep 115 sched_getscheduler 120
sched_getparam 121 sched_getaffinity 123 sched_yield 124 sched_get_priority_max 125 sched_get_priority_min 126
restart_syscall 128 kill 129 tkill 130 tgkill 131 sigaltstack 132 rt_sigsuspend 133 rt_sigaction 134
rt_sigprocmask 135 rt_sigpending 136 rt_sigtimedwait 137 rt_sigreturn 139 getresuid 148 getresgid 150
setpriority 140 getpriority 141 times 153 getpgid 155 getsid 156 getgroups 158 uname 160 getrlimit 163 setrlimit 164 getrusage 165 umask 166
getcpu 168 gettimeofday 169 getpid 172 getppid 173 getuid 174 geteuid 175 getgid 176 getegid 177 gettid 178
sysinfo 179 socket 198 socketpair 199 bind 200 listen 201 accept 202 connect 203 getsockname 204
getpeername 205 sendto 206 recvfrom 207 setsockopt 208 getsockopt 209 shutdown 210 sendmsg 211 recvmsg 212
brk 214 munmap 215 mremap 216 clone 220 execve 221 mmap 222 fadvise64 223 mprotect 226 msync 227 mincore 232
madvise 233 accept4 242 recvmmsg 243 wait4 260 prlimit64 261 sendmmsg 269 renameat2 276 getrandom 278
copy_file_range 285 preadv2 286 pwritev2 287 statx 291 rseq 293 clone3 435 close_range 436 faccessat2 439
epoll_pwait2 441
"""
SYSCALLS = {machine: (audit_arch, {name: int(number) for name, number in zip(table.split()[::2],
                                                                               table.split()[1::2])})
            for machine, audit_arch, table in (("x86_64", 0xC000003E, _X86_64), ("aarch64", 0xC00000B7, _AARCH64))}

_LOAD, _JEQ, _JGE, _JSET, _JUMP, _RETURN = 0x20, 0x15, 0x35, 0x45, 0x05, 0x06
_NUMBER, _ARCH, _FIRST_ARGUMENT, _SECOND_ARGUMENT = 0, 4, 16, 24  # struct seccomp_data (arguments' low 32 bits)
_ACTIONS = {"allow": 0x7FFF_0000, **{name: 0x0005_0000 | code for name, code in (
    ("enosys", errno.ENOSYS), ("eagain", errno.EAGAIN), ("eperm", errno.EPERM),
    ("eafnosupport", errno.EAFNOSUPPORT), ("enotty", errno.ENOTTY))}}


@functools.lru_cache(maxsize=None)
def seccomp_filter(machine: str) -> bytes:
    """The filter for `machine` (a key of `SYSCALLS`), as bwrap's `--seccomp` reads it."""
    audit_arch, numbers = SYSCALLS[machine]
    code = [(_LOAD, _ARCH), (_JEQ, audit_arch, "native"), (_RETURN, "enosys"),
            "native", (_LOAD, _NUMBER), (_JGE, 0x4000_0000, "x32"),
            (_JEQ, numbers["clone"], "clone"), (_JEQ, numbers["socket"], "socket"),
            (_JEQ, numbers["socketpair"], "socket"), (_JEQ, numbers["ioctl"], "ioctl"), (_JUMP, "calls"),
            "x32", (_RETURN, "enosys"),
            "clone", (_LOAD, _FIRST_ARGUMENT), (_JSET, CLONE_THREAD, "allowed"), (_RETURN, "eagain"),
            "socket", (_LOAD, _FIRST_ARGUMENT), *[(_JEQ, family, "allowed") for family in SOCKET_FAMILIES],
            (_RETURN, "eafnosupport"),
            "ioctl", (_LOAD, _SECOND_ARGUMENT), *[(_JEQ, request, "allowed") for request in IOCTL_REQUESTS],
            (_RETURN, "enotty"),
            "allowed", (_RETURN, "allow"),
            "calls", *_return_if(numbers, "clone3", "enosys"), *_return_if(numbers, "fork", "eagain"),
            *_return_if(numbers, "vfork", "eagain"),
            *[item for name in ALLOWED for item in _return_if(numbers, name, "allow")],
            (_RETURN, "eperm")]
    return _assemble(code)


def _return_if(numbers: dict[str, int], name: str, action: str) -> list:
    """Return `action` when the call is `name` (nothing where the machine has no such call): a test and a
    return next to it, so that no jump of the long allow-list runs past BPF's 255-instruction reach."""
    return [(_JEQ, numbers[name], 0), (_RETURN, action)] if name in numbers else []


def _assemble(code: list) -> bytes:
    """BPF from instructions and labels (strings): (load, offset); (jump-if, value, label or 0) jumps to the
    label when the test holds, and else over the next instruction when the target is 0 (it holds: the next
    one runs); (jump, label); (return, action)."""
    labels, position = {}, 0
    for item in code:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    program, position = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        opcode = item[0]
        if opcode == _RETURN:
            program.append(struct.pack("=HBBI", opcode, 0, 0, _ACTIONS[item[1]]))
        elif opcode == _LOAD:
            program.append(struct.pack("=HBBI", opcode, 0, 0, item[1]))
        elif opcode == _JUMP:
            program.append(struct.pack("=HBBI", opcode, 0, 0, labels[item[1]] - position - 1))
        elif item[2] == 0:
            program.append(struct.pack("=HBBI", opcode, 0, 1, item[1]))
        else:
            offset = labels[item[2]] - position - 1
            if not 0 <= offset <= 255:
                raise ValueError(f"a conditional jump to {item[2]!r} of {offset} instructions (BPF reaches 255)")
            program.append(struct.pack("=HBBI", opcode, offset, 0, item[1]))
        position += 1
    return b"".join(program)
