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
Its output is logged, one event per line (the last 50 lines).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable

from .log import event


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
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        return f"{which}-hook could not start: {e}"
    reason = None
    while True:
        try:
            out, _ = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - t0 > timeout:
                reason = f"{which}-hook timed out after {timeout:g}s (HOOK_TIMEOUT) and was killed"
            elif should_stop():
                reason = f"{which}-hook interrupted"
            else:
                continue
            _kill_group(proc)
            out, _ = proc.communicate()
            break
    for line in out.decode(errors="replace").splitlines()[-50:]:
        event(f"hook.{which}.output", f"{which}-hook: {line}")
    if reason is None and proc.returncode != 0:
        reason = f"{which}-hook exited with status {proc.returncode}"
    dur = round(time.monotonic() - t0, 3)
    if reason:
        event(f"hook.{which}.failed", reason, level=logging.ERROR, duration_s=dur)
    else:
        event(f"hook.{which}.done", f"{which}-hook finished", duration_s=dur)
    return reason


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
