"""The service's state file: ``{backup_dir}/.gofr-{project}.state.json``, written atomically
under its own lock. It records the last result, success, failure, warnings, the next run and the
off-site outcome; ``status`` reads it (and the manifest) without opening any archive.

On a full disk (ENOSPC, EDQUOT) no temp file can be written, yet a failure there is exactly what
``status`` must report: so the file is padded with trailing spaces (JSON ignores them) to at least
STATE_SLACK bytes more than its content, and when the atomic write fails for want of space, the
new content is written over the old in place, within the blocks the file already has (an
unpadded file of an older version too: its last block has room). The file is never read or
written through a symlink.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime
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
    """The state, or ``{"corrupt": why}`` when the file is damaged: not JSON, not an object, or a
    field of the wrong type (read from disk, so untrusted; ``status`` is unhealthy while it is, and
    the next write starts it afresh)."""
    p = state_path(config)
    try:
        d = json.loads(_read_nofollow(p))
    except FileNotFoundError:
        return {}
    except OSError as e:
        if e.errno == errno.ELOOP:  # writes never go through a link (O_NOFOLLOW): reads agree
            return {
                "corrupt": f"state file {p} is a symlink (to {_readlink(p)!r}): it is neither read nor "
                "written through; the next run replaces it with a file"
            }
        return {"corrupt": f"state file {p} unreadable: {e}"}
    except ValueError as e:
        return {"corrupt": f"state file {p} unreadable: {e}"}
    why = "it is not a JSON object" if not isinstance(d, dict) else field_problem(d)
    if why:
        return {
            "corrupt": f"state file {state_path(config)} is damaged: {why}; the next run writes it afresh"
        }
    return d


def _read_nofollow(p: Path) -> bytes:
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _readlink(p: Path) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return "?"


_TIME = "time"  # an ISO 8601 time with a UTC offset
_STR, _INT, _BOOL, _DICT, _LIST = str, int, bool, dict, list
# what each field may hold (absent or null is always allowed); {...}: an object with these fields
_FIELDS: dict[str, Any] = {
    "project": _STR,
    "pid": _INT,
    "enabled": _BOOL,
    "schedule": _STR,
    "started_at": _TIME,
    "next_run": _TIME,
    "next_drill": _TIME,
    "last_run": _TIME,
    "last_result": _STR,
    "last_scheduled_success": _TIME,
    "last_success": {"time": _TIME, "filename": _STR, "size_bytes": _INT, "path": _STR, "trigger": _STR},
    "last_failure": {"time": _TIME, "error": _STR, "trigger": _STR},
    "last_warnings": [_STR],
    "last_scrub": {
        "time": _TIME,
        "checked": [_STR],
        "bad": [_DICT],
        "could_not_check": [_DICT],
        "skipped": [_STR],
    },
    "remote_last_success": _TIME,
    "remote_last_failure": {"time": _TIME, "error": _STR},
    "remote_count": _INT,
    "remote_broken": {"time": _TIME, "error": _STR, "broken": [_STR], "lost": [_STR]},
    "restore_pending": {"time": _TIME, "error": _STR},
    "notify_active": _DICT,
    "verify_failures_total": _INT,
    "last_drill": {"at": _STR, "ok": _BOOL, "error": _STR, "archive": _STR, "restore_seconds": float},
    "last_spot_check": {"at": _STR, "ok": _BOOL, "error": _STR, "archive": _STR},
    DRILL_RUNNING: {"pid": _INT, "at": _STR, "archive": _STR, "path": _STR},
}


def field_problem(d: dict[str, Any], fields: dict[str, Any] = _FIELDS, where: str = "") -> str | None:
    """The first field of ``d`` that does not hold what ``fields`` says, in words (None: all do)."""
    for k, want in fields.items():
        v = d.get(k)
        if v is None:
            continue
        name = f"{where}{k}"
        if isinstance(want, dict):
            if not isinstance(v, dict):
                return f"{name} is {v!r:.60}, expected an object"
            inner = field_problem(v, want, f"{name}.")
            if inner:
                return inner
        elif isinstance(want, list):
            if not isinstance(v, list) or not all(_is(x, want[0]) for x in v):
                return f"{name} is {v!r:.60}, expected a list"
        elif not _is(v, want):
            return f"{name} is {v!r:.60}, expected {_WORDS[want]}"
    if not where and d.get("last_result") not in (None, "ok", "incomplete", "failed"):
        return f"last_result is {d['last_result']!r:.60}, expected ok, incomplete or failed"
    return None


_WORDS: dict[Any, str] = {
    _STR: "a string",
    _INT: "a whole number",
    _BOOL: "true or false",
    _DICT: "an object",
    float: "a number",
    _TIME: "an ISO 8601 time with a UTC offset",
}


def _is(v: Any, want: Any) -> bool:
    if want == _TIME:
        try:
            return isinstance(v, str) and datetime.fromisoformat(v).utcoffset() is not None
        except ValueError:
            return False
    if want is float:
        return isinstance(v, int | float) and not isinstance(v, bool)
    return isinstance(v, want) and (want is bool or not isinstance(v, bool))


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
    """Write ``text``, padded, over the existing file, within the space it already has allocated
    (``st_blocks``: a 300-byte file written by an older version, unpadded, still has the rest of
    its 4 KiB block), so no new block is needed. False when it does not fit or cannot be written."""
    try:
        fd = os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if len(text) > max(st.st_size, st.st_blocks * 512):
            return False
        size = max(st.st_size, len(text))  # the old content is overwritten to its end
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
    config: BackupConfig,
    when: str,
    error: str | None = None,
    count: int | None = None,
    broken: list[str] | None = None,
    lost: list[str] | None = None,
) -> None:
    """An off-site stage's outcome. A success clears ``remote_broken``; a sync that left the remote
    NOT whole (``broken``/``lost`` given: restore points it cannot restore, archives gone from it)
    is a failure that also sets ``remote_broken`` (``status`` is unhealthy while it is there). A
    failure that did not get as far as a sync (no ``broken``/``lost``) leaves it as it was."""

    def fn(st: dict[str, Any]) -> None:
        if error is None:
            st.update(remote_last_success=when, remote_count=count)
            st.pop("remote_broken", None)
            return
        st["remote_last_failure"] = {"time": when, "error": error}
        if broken is not None or lost is not None:
            st["remote_broken"] = {
                "time": when,
                "error": error,
                "broken": list(broken or []),
                "lost": list(lost or []),
            }
            if count is not None:
                st["remote_count"] = count

    update_state(config, fn)


def record_scrub(config: BackupConfig, report: Mapping[str, Any]) -> None:
    """What the last scrub re-verified and found (``status`` is unhealthy while it found bad)."""
    update_state(config, lambda st: st.update(last_scrub=dict(report)))
