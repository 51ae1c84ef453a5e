"""The process's stop signals: SIGINT (Ctrl-C), SIGTERM and SIGHUP mean the same thing from `loadgen`'s first line
to its last: stop what is going on, keep what was measured, stop the engine, exit 130.

Signals belong to the process, not to a run, so this is loadgen's one process-wide object (`INTERRUPTS`); it
imports only the standard library so that `main` can install it before anything slow is imported.

What the first signal does depends on the phase, from the most specific hook to the least:
  - running a load point: the run's own stop (loadgen/point.py): cancel in-flight requests, summarise;
  - summarising (`deferred`): noted, and the summary is finished first (it takes moments);
  - inside the event loop (`guarded`): the command's main task is cancelled, so every `finally` runs (a launched
    engine is stopped, whether it is starting, waiting for readiness or serving); a step that blocks the loop
    (reading a dataset) sees it when it returns;
  - anywhere else (reading options, loading the tokenizer): KeyboardInterrupt at once.
A second signal, in any phase, runs the force hooks (SIGKILL of the launched engine's process group) and exits 130
at once; records already written stay on disk.

Tests only: LOADGEN_TEST_HOLD=PHASE:PATH makes `reach(PHASE)` create PATH.reached and wait until PATH exists, so a
test can send a signal in a phase that would otherwise pass in milliseconds (tests/test_signal_matrix.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import contextmanager
from typing import Any, Iterator, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_INTERRUPTED = 130  # whichever signal: 128 + SIGINT, the shell's code for Ctrl-C
HOLD_ENV = "LOADGEN_TEST_HOLD"


class Interrupts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hits = 0
        self.signal_name: str | None = None  # the first signal's
        self.phase = "preparing"
        self.phase_when_stopped: str | None = None
        self._run_stop: Callable[[], None] | None = None
        self._deferring = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._force: list[Callable[[], None]] = []

    @property
    def requested(self) -> bool:
        return self.hits > 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers for one command (main() may run more than once in a process: the tests call it); signal
        handlers can only be set from the main thread, elsewhere the defaults stay."""
        self.reset()
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                # Once stopped, the command is only exiting: a further signal is ignored, not allowed to kill the
                # interpreter's shutdown (Python resets its own handlers then) with a status other than 130.
                signal.signal(sig, signal.SIG_IGN if self.requested else handler)

    def enter(self, phase: str) -> None:
        self.phase = phase

    # -- hooks, innermost first ---------------------------------------------------------------------------------
    @contextmanager
    def run_stop(self, stop: Callable[[], None]) -> Iterator[None]:
        """While a load point runs, the first signal calls its stop (in the event loop)."""
        self._run_stop = stop
        try:
            yield
        finally:
            self._run_stop = None

    @contextmanager
    def deferred(self, phase: str) -> Iterator[None]:
        """A short phase that should finish: a signal is only noted (`requested` says so afterwards)."""
        previous, self.phase, self._deferring = self.phase, phase, True
        try:
            yield
        finally:
            self._deferring, self.phase = False, previous

    async def guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` as the task a first signal cancels; its cancellation comes out as KeyboardInterrupt."""
        self._task, self._loop = asyncio.current_task(), asyncio.get_running_loop()
        try:
            return await coro
        except asyncio.CancelledError:
            if not self.requested:
                raise
            raise KeyboardInterrupt from None
        finally:
            self._task = self._loop = None

    @contextmanager
    def on_force(self, kill: Callable[[], None]) -> Iterator[None]:
        """While a launched engine lives: a second signal kills it before exiting."""
        self._force.append(kill)
        try:
            yield
        finally:
            self._force.remove(kill)

    # -- the handler --------------------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: object) -> None:
        self.hits += 1
        if self.hits > 1:
            self.force()
        self.signal_name = signal.Signals(signum).name
        self.phase_when_stopped = self.phase
        what = ("finishing the summary first" if self._deferring else
                "cancelling in-flight requests, keeping what was measured" if self._run_stop is not None else
                "stopping the engine" if self._force else "stopping")
        _say(f"\nloadgen: {self.signal_name} while {self.phase}: {what} (again to exit at once)\n")
        if self._run_stop is not None or (self._task is not None and not self._deferring):
            loop = self._loop if self._loop is not None else _running_loop()
            if loop is not None:
                # Acted on from the loop, by whichever hook holds then: a run may have started meanwhile.
                loop.call_soon_threadsafe(self._act)
                return
        if self._deferring:
            return
        raise KeyboardInterrupt

    def _act(self) -> None:
        if self._run_stop is not None:
            self._run_stop()
        elif self._task is not None and not self._deferring and not self._task.done():
            self._task.cancel()

    def force(self) -> None:
        _say("\nloadgen: second stop signal: " + ("killing the engine and " if self._force else "") + "exiting now\n")
        for kill in reversed(self._force):
            try:
                kill()
            except Exception:  # exiting regardless: the engine's supervisor stops it once we are gone
                pass
        os._exit(EXIT_INTERRUPTED)

    # -- tests --------------------------------------------------------------------------------------------------
    def _hold_path(self, phase: str) -> str | None:
        wanted, _, path = os.environ.get(HOLD_ENV, "").partition(":")
        return path if wanted == phase and path else None

    def reach(self, phase: str) -> None:
        """Mark `phase`; under LOADGEN_TEST_HOLD, hold in it (blocking: for phases outside the loop or deferred)."""
        self.enter(phase)
        path = self._hold_path(phase)
        if path:
            open(path + ".reached", "w").close()
            while not os.path.exists(path):
                time.sleep(0.02)

    async def reach_async(self, phase: str) -> None:
        """`reach` inside the event loop: the hold is an await, so a signal cancels it like any other."""
        self.enter(phase)
        path = self._hold_path(phase)
        if path:
            open(path + ".reached", "w").close()
            while not os.path.exists(path):
                await asyncio.sleep(0.02)


def _say(text: str) -> None:
    """One unbuffered write: a handler that used sys.stderr could interrupt a write to it (the progress bar) and
    fail with a reentrant-call error inside whatever was running."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


INTERRUPTS = Interrupts()
