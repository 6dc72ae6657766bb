"""A clean stop on SIGINT or SIGTERM (Ctrl-C, a scheduler, `kill`): `lsp train` and `Trainer.train` use it.

    with StopSignals() as stop:          # handlers installed in the main thread, the old ones put back after
        with stop.phase(abandonable=True):
            collect()                    # a first signal raises StopRequested here, at once
        train_step()                     # ... and elsewhere only where the loop calls `stop.check()`

The first signal asks the run to stop. A phase that may be abandoned (sampling, the reference pass, an
evaluation, the setup) is left at once; anything else (the optimizer step, the weight sync, a checkpoint)
finishes, and the loop stops at its next `check()`. The trainer then writes what a resume needs and closes
every process it started. A second signal stops at once: every process this one started is killed, and it
exits with 128 + the signal's number.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

import psutil

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_active: StopSignals | None = None  # the innermost StopSignals whose handlers are installed


class StopRequested(BaseException):
    """A stop signal arrived (its name in `args[0]`). A BaseException, as KeyboardInterrupt is: no `except
    Exception` on the way swallows it."""


class StopSignals:
    """First SIGINT/SIGTERM: stop at the next point a phase allows; second: stop now (see the module)."""

    def __init__(self, announce=print):
        self.announce = announce
        self.requested: str | None = None
        self.abandonable = False  # outside an abandonable phase a stop waits for the next check()
        self.deferred = False  # inside `polled()`: the handler never raises
        self._previous: dict[int, object] = {}
        self._outer: StopSignals | None = None

    def __enter__(self) -> StopSignals:
        global _active
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self.handler) for number in SIGNALS}
            self._outer, _active = _active, self
        return self

    def __exit__(self, *exc_info) -> None:
        global _active
        if self._previous:
            _active = self._outer
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    @contextlib.contextmanager
    def phase(self, abandonable: bool):
        """A phase of the run. With `abandonable` it does not start after a stop was asked for, and a signal
        raises `StopRequested` inside it; without, a signal waits for the loop's next `check()`."""
        if abandonable:
            self.check()
        before, self.abandonable = self.abandonable, abandonable
        try:
            yield
        finally:
            self.abandonable = before

    def check(self) -> None:
        """Raise `StopRequested` if a stop was asked for."""
        if self.requested:
            raise StopRequested(self.requested)

    def handler(self, number: int, frame) -> None:
        """The signal handler: the first signal asks for a stop, the second stops at once."""
        name = signal.Signals(number).name
        if self.requested:
            self.announce(f"{name} again: stopping now, with every process this run started")
            stop_now(128 + number)
        self.requested = name
        self.announce(f"{name}: stopping{'' if self.abandonable else ' when this phase ends'}, then saving what "
                      f"a resume needs ({name} again stops at once)")
        if self.abandonable and not self.deferred:
            raise StopRequested(name)


@contextlib.contextmanager
def polled():
    """For waits inside C code that an exception raised by a signal handler would corrupt (Ray's `get` turns it
    into a SystemError): within, a stop signal only asks for the stop, and the `poll()` this yields raises it,
    from Python, where the phase may be abandoned. Without an active `StopSignals`, `poll()` does nothing."""
    stop = _active
    if stop is None:
        yield lambda: None
        return
    deferred, stop.deferred = stop.deferred, True
    try:
        yield lambda: stop.check() if stop.abandonable else None
    finally:
        stop.deferred = deferred


def reclaim_signals() -> None:
    """Install the active `StopSignals`' handlers again, where a library replaced them (`ray.init` installs a
    SIGTERM handler that exits at once): call it after starting such a library."""
    if _active is not None and threading.current_thread() is threading.main_thread():
        for number in SIGNALS:
            signal.signal(number, _active.handler)


def stop_now(code: int) -> None:
    """Kill every process this one started, then exit with `code` (no cleanup: what is saved stays)."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(code)


def end_processes(processes: list[psutil.Process], timeout_s: float = 10.0) -> None:
    """Wait up to `timeout_s` for `processes` to exit, then SIGTERM the rest, then SIGKILL what still lives.
    multiprocessing's resource tracker is left alone: it ends with this process, and cleans up after it."""
    processes = [process for process in processes if not _is_resource_tracker(process)]
    psutil.wait_procs([process for process in processes if is_alive(process)], timeout=timeout_s)
    for action in ("terminate", "kill"):
        alive = [process for process in processes if is_alive(process)]
        for process in alive:
            with contextlib.suppress(psutil.Error):
                getattr(process, action)()
        psutil.wait_procs(alive, timeout=1.0)


def is_alive(process: psutil.Process) -> bool:
    """Whether `process` still runs (a zombie does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_resource_tracker(process: psutil.Process) -> bool:
    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False
