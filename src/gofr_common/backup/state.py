"""The service's state file: ``{backup_dir}/.gofr-{project}.state.json``, written atomically
under its own lock. It records the last result, success, failure, warnings, the next run and the
off-site outcome; ``status`` reads it (and the manifest) without opening any archive.

On a full disk (ENOSPC, EDQUOT) no temp file can be written, yet a failure there is exactly what
``status`` must report: so the file is padded with trailing spaces (JSON ignores them) to at least
STATE_SLACK bytes more than its content, and when the atomic write fails for want of space, the
new content is written over the old in place, within the blocks the file already has.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import BackupConfig
from .fsutil import atomic_write_bytes, file_lock, lock_is_held

STATE_SLACK = 2048  # spare bytes (trailing spaces) kept in the state file for a full disk
BLOCK = 4096
SCHEDULED = ("schedule", "catch-up")  # triggers of the service's own runs
DRILL_RUNNING = "drill_running"  # a restore drill that started and has not finished: {pid, at, archive, path}


def state_path(config: BackupConfig) -> Path:
    return config.layout.state


def read_state(config: BackupConfig) -> dict[str, Any]:
    try:
        d = json.loads(state_path(config).read_bytes())
        return d if isinstance(d, dict) else {"corrupt": "state file is not a JSON object"}
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        return {"corrupt": f"state file unreadable: {e}"}


def dead_drill(config: BackupConfig, st: dict[str, Any]) -> dict[str, Any] | None:
    """The state's ``drill_running`` when that drill is not running any more (nobody holds the drill
    lock: its process died, killed, out of memory, or with the host), else None."""
    running = st.get(DRILL_RUNNING)
    if not isinstance(running, dict) or lock_is_held(config.layout.drill_lock):
        return None
    return running


def dead_drill_error(running: dict[str, Any]) -> str:
    return (
        f"the restore drill of {running.get('archive')} started at {running.get('at')} did not finish: "
        "its process died (killed, out of memory, or the host restarted)"
    )


def update_state(config: BackupConfig, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    config.backup_dir.mkdir(parents=True, exist_ok=True)
    p = state_path(config)
    with file_lock(config.layout.state_lock, 30, "the state lock"):
        st = read_state(config)
        st.pop("corrupt", None)
        st["project"] = config.project
        fn(st)
        write_state(p, st)
        return st


def write_state(p: Path, st: dict[str, Any]) -> None:
    """Atomically, padded (see the module's docstring); on a full disk, in place."""
    text = (json.dumps(st, indent=1) + "\n").encode()
    size = -(-(len(text) + STATE_SLACK) // BLOCK) * BLOCK  # whole blocks, at least STATE_SLACK spare
    try:
        atomic_write_bytes(p, text.ljust(size))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not _in_place(p, text):
            raise


def _in_place(p: Path, text: bytes) -> bool:
    """Write ``text``, padded to the file's size, over the existing file (never growing it: no new
    block is needed on an ordinary file system). False when it does not fit or cannot be written."""
    try:
        fd = os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        if len(text) > size:
            return False
        view = memoryview(text.ljust(size))
        done = 0
        while done < size:
            done += os.pwrite(fd, view[done:], done)
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# -- what each outcome records ---------------------------------------------------------------------
def record_failure(config: BackupConfig, when: str, error: str, trigger: str) -> None:
    def fn(st: dict[str, Any]) -> None:
        st["last_result"] = "failed"
        st["last_run"] = when
        st["last_failure"] = {"time": when, "error": error, "trigger": trigger}

    update_state(config, fn)


def record_result(
    config: BackupConfig, when: str, status: str, entry: Mapping[str, Any], warnings: list[str]
) -> None:
    """A backup that was written and verified: ``ok``, or ``incomplete`` (some files unreadable)."""

    def fn(st: dict[str, Any]) -> None:
        st["last_result"] = status
        st["last_run"] = when
        st["last_warnings"] = warnings
        if status == "ok":
            st["last_success"] = {
                "time": entry["created"],
                "filename": entry["filename"],
                "size_bytes": entry["size_bytes"],
                "path": entry["path"],
                "trigger": entry["trigger"],
            }
            if entry["trigger"] in SCHEDULED:
                st["last_scheduled_success"] = entry["created"]

    update_state(config, fn)


def record_remote(
    config: BackupConfig, when: str, error: str | None = None, count: int | None = None
) -> None:
    if error is None:
        update_state(config, lambda st: st.update(remote_last_success=when, remote_count=count))
    else:
        update_state(config, lambda st: st.update(remote_last_failure={"time": when, "error": error}))


def record_scrub(config: BackupConfig, report: Mapping[str, Any]) -> None:
    """What the last scrub re-verified and found (``status`` is unhealthy while it found bad)."""
    update_state(config, lambda st: st.update(last_scrub=dict(report)))
