"""Engines that exit with the process that launched them, even when it was SIGKILLed.

    python -m backends.supervise PARENT_PID [--grace SECONDS] -- ARGV...

A serving framework is many processes (vLLM's API server, engine core and workers; LightLLM's router, detokenizer
and model ranks), and a parent that is SIGKILLed cannot stop any of them: the GPU they hold stays taken by nobody.
The supervisor is the leader of the engine's process group (ServerProcess starts it in a new session) and runs the
engine in that same group, so the launcher's SIGTERM / SIGKILL of the group reaches everything as before. When the
parent is gone it stops the group itself: SIGTERM, `--grace` seconds, then SIGKILL.

It learns of the parent's death two ways: Linux's parent-death signal (PR_SET_PDEATHSIG), and getppid() polled
every POLL_S (the only way on macOS, which has no prctl). The parent's pid comes on the command line because the
parent may already be dead when the supervisor starts: getppid() is then init's (or a subreaper's) pid, and the
comparison right after arming the signal closes that race.

It imports only the standard library, so ServerProcess can start it as a script (`python -I .../supervise.py`),
out of reach of an engine's PYTHONPATH.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

POLL_S = 0.2
DEFAULT_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` when our parent dies (Linux); False where that does not exist (macOS, or a libc
    without prctl), where callers poll getppid() instead. The kernel sends it when the parent *thread* that forked
    us exits: launch from a thread that lives as long as the child (loadgen launches from its main thread)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_alive(parent_pid: int) -> bool:
    """Whether our parent is still the process that launched us (a dead parent's children are re-parented)."""
    return os.getppid() == parent_pid


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Arm the parent-death signal, then check the parent is still there: if it died before the signal was armed
    the kernel will never send it. False means the parent is already gone and the caller should exit."""
    set_parent_death_signal(sig)
    return parent_alive(parent_pid)


class Supervisor:
    """Runs one engine in our process group and takes the whole group down once the parent is gone."""

    def __init__(self, parent_pid: int, argv: list[str], grace_s: float = DEFAULT_GRACE_S):
        self.parent_pid, self.argv, self.grace_s = parent_pid, argv, grace_s
        self.engine: subprocess.Popen | None = None

    def run(self) -> int:
        # SIGTERM reaches us with the group when the launcher stops the engine: the engine got it too, and we exit
        # when it does. A parent-death SIGTERM wakes the loop below, which checks the parent. SIGINT and SIGHUP
        # never come from a terminal (the group is a session of its own); were they sent to the group, the engine
        # decides and we follow it.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        if not die_with_parent(self.parent_pid):
            return 0  # the launcher died while we started: launch nothing
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)  # started by hand: a group of our own, so stopping it never touches the caller's
        try:
            self.engine = subprocess.Popen(self.argv, preexec_fn=_engine_dies_with_us)
        except OSError as exc:
            print(f"supervise: cannot start {self.argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
            return 127
        while True:
            try:
                code = self.engine.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if not parent_alive(self.parent_pid):
                    self.stop_group()
                continue
            return _exit_status(code)

    def stop_group(self) -> None:
        """The parent is gone: SIGTERM the group (us included: we ignore it), give the engine `grace_s` to exit,
        then SIGKILL the group, which ends us too."""
        pgid = os.getpgrp()
        print(f"supervise: parent {self.parent_pid} is gone; stopping the engine's process group", file=sys.stderr,
              flush=True)
        _signal_group(pgid, signal.SIGTERM)
        assert self.engine is not None
        try:
            self.engine.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)
        os._exit(0)  # not reached when we lead the group


def _engine_dies_with_us() -> None:
    """In the engine, before exec (we are single-threaded, so this is safe): should the supervisor itself be
    SIGKILLed, the engine still gets SIGTERM (its own children are then the launcher's group kill's to take)."""
    set_parent_death_signal(signal.SIGTERM)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_status(code: int) -> int:
    """The engine's exit status as ours, so the launcher reports what the engine did: a signal that ended the
    engine ends us the same way."""
    if code >= 0:
        return code
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    return 128 - code


def supervised_argv(argv: list[str], parent_pid: int, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """`argv` under a supervisor watching `parent_pid`. Started as a script in isolated mode (-I): it needs only
    the standard library, and an engine's PYTHONPATH (--engine-path) can then never shadow it."""
    return [sys.executable, "-I", os.path.abspath(__file__), str(parent_pid), "--grace", f"{grace_s:g}", "--", *argv]


def main(args: list[str]) -> int:
    usage = "usage: python -m backends.supervise PARENT_PID [--grace SECONDS] -- ARGV..."
    if "--" not in args:
        print(usage, file=sys.stderr)
        return 2
    split = args.index("--")
    head, argv = args[:split], args[split + 1:]
    try:
        parent_pid = int(head[0])
        grace_s = float(head[2]) if len(head) == 3 and head[1] == "--grace" else DEFAULT_GRACE_S
        if len(head) not in (1, 3) or not argv or parent_pid <= 0:
            raise ValueError
    except (IndexError, ValueError):
        print(usage, file=sys.stderr)
        return 2
    return Supervisor(parent_pid, argv, grace_s).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
