"""PRE_HOOK / POST_HOOK: shell commands around each backup, with a timeout.

Each runs as ``/bin/sh -c COMMAND`` in its own process group (so a timeout kills its children too),
with the service's environment plus:
  GOFR_BACKUP_HOOK       pre | post
  GOFR_BACKUP_PROJECT, GOFR_BACKUP_TIER, GOFR_BACKUP_TRIGGER
and for the post-hook the outcome:
  GOFR_BACKUP_STATUS     ok | incomplete | failed | interrupted
  GOFR_BACKUP_ARCHIVE    the archive's path ("" when there is none)
  GOFR_BACKUP_ERROR      the error ("" when there is none)
  GOFR_BACKUP_SIZE_BYTES the archive's size ("" when there is none)
Its output is logged, one event per line (the last 50 lines). :func:`run_shell` is also how the
restore drill runs its probe (DRILL_COMMAND): output is kept to its last 64 KiB, however much a
command prints.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .log import event

TAIL_BYTES = 64 << 10  # the output kept of one command: its end
TAIL_LINES = 50
LINE_CHARS = 1000


@dataclass
class ShellResult:
    returncode: int | None  # None: it did not start, or was killed
    seconds: float
    reason: str | None = None  # why it failed: start error, timeout, interrupted, exit status
    lines: list[str] = field(default_factory=list)  # the last lines of its output
    output_bytes: int = 0  # everything it printed, of which only the end is kept


def run_shell(
    command: str,
    timeout: float,
    env: dict[str, str],
    should_stop: Callable[[], bool] = lambda: False,
    what: str = "command",
    timeout_var: str = "HOOK_TIMEOUT",
    kill_leftovers: bool = False,
    cwd: str | None = None,
) -> ShellResult:
    """``/bin/sh -c command`` in a process group of its own, stdin closed, stdout and stderr read
    as they come (the last TAIL_BYTES kept). It is done when the shell has exited and nothing holds
    its output open any more; past ``timeout`` seconds (or when ``should_stop``) the whole group is
    killed. ``kill_leftovers``: also kill what the command left running after it exited."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as e:
        return ShellResult(None, 0.0, f"{what} could not start: {e}")
    assert proc.stdout is not None
    tail = bytearray()
    total = [0]

    def drain() -> None:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        while chunk := os.read(fd, 1 << 16):
            total[0] += len(chunk)
            tail.extend(chunk)
            if len(tail) > 2 * TAIL_BYTES:
                del tail[: len(tail) - TAIL_BYTES]

    reader = threading.Thread(target=drain, name="gofr-shell-output", daemon=True)
    reader.start()
    reason = None
    while True:
        reader.join(0.2)
        if not reader.is_alive() and proc.poll() is not None:
            break
        if time.monotonic() - t0 > timeout:
            reason = f"{what} timed out after {timeout:g}s ({timeout_var}) and was killed"
        elif should_stop():
            reason = f"{what} interrupted"
        else:
            continue
        _kill_group(proc)
        break
    if kill_leftovers and reason is None:
        _kill_group(proc)
    reader.join(5.0)
    proc.stdout.close()
    if proc.poll() is None:  # pragma: no cover - killed above; reaped here
        proc.wait(5.0)
    text = bytes(tail[-TAIL_BYTES:]).decode(errors="replace")
    lines = [ln[:LINE_CHARS] for ln in text.splitlines()[-TAIL_LINES:]]
    if reason is None and proc.returncode != 0:
        reason = f"{what} exited with status {proc.returncode}"
    return ShellResult(
        None if reason and proc.returncode is None else proc.returncode,
        round(time.monotonic() - t0, 3),
        reason,
        lines,
        total[0],
    )


def run_hook(
    which: str,
    command: str,
    timeout: float,
    env_extra: dict[str, str],
    should_stop: Callable[[], bool] = lambda: False,
) -> str | None:
    """Run the hook; None on success, else a one-line reason."""
    env = {**os.environ, "GOFR_BACKUP_HOOK": which, **env_extra}
    event(f"hook.{which}.start", f"{which}-hook: running {command!r}")
    r = run_shell(command, timeout, env, should_stop, what=f"{which}-hook")
    for line in r.lines:
        event(f"hook.{which}.output", f"{which}-hook: {line}")
    if r.reason:
        event(f"hook.{which}.failed", r.reason, level=logging.ERROR, duration_s=r.seconds)
    else:
        event(f"hook.{which}.done", f"{which}-hook finished", duration_s=r.seconds)
    return r.reason


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGKILL:
            return
        try:  # the shell is gone; its children may not be
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
