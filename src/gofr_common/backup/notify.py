"""Notifications through apprise: short, actionable messages, and one send to one URL.

Messages are built from plain inputs (the project, the host, what happened, the error, the last
good backup). ``send`` is synchronous and bounded by its timeout; observe.py runs it in the
background. Nothing here logs or returns a URL with its token: errors name the redacted URL and
have the URL's pieces scrubbed from apprise's own text.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .cli import human_size
from .observe_config import redact_url, scrub

# apprise's notify types
FAILURE, WARNING, SUCCESS, INFO = "failure", "warning", "success", "info"


@dataclass
class Message:
    category: str  # failure | warning | recovery | success | drill | remote (NOTIFY_ON words)
    kind: (
        str  # failed | incomplete | stale | recovered | ok | drill_failed | drill_ok | remote_lag | remote_ok
    )
    title: str
    body: str
    notify_type: str
    key: str = ""  # what "the same failure" means, for repeat suppression


def human_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    if s >= 60:
        return f"{s // 60} minutes"
    return f"{s} seconds"


def failure_key(text: str | None) -> str:
    """The same failure, whatever figures or times it quotes: digits do not count."""
    return re.sub(r"\d+", "#", (text or "").strip())[:500]


def hostname() -> str:
    return socket.gethostname() or "?"


def last_good_line(last_success: dict[str, Any] | None, now: datetime) -> str:
    if not last_success or not last_success.get("time"):
        return "Last good backup: none yet."
    age = (now - datetime.fromisoformat(last_success["time"])).total_seconds()
    size = human_size(last_success.get("size_bytes"))
    return (
        f"Last good backup: {last_success.get('filename', '?')} ({size}), "
        f"{human_age(age)} old (at {last_success['time']})."
    )


def advice_for_error(error: str, prefix: str) -> str:
    e = error.lower()
    if "no data found" in e:
        return f"check that the data volume is mounted and {prefix}PATHS points at it"
    if "space" in e or "no space left" in e:
        return "free space on the backup volume (or lower the retention), then run `gofr-backup now`"
    if "lock" in e:
        return f"another gofr-backup run held the lock; if that is expected, raise {prefix}LOCK_TIMEOUT"
    if "not writable" in e or "permission denied" in e:
        return (
            "make the backup volume writable by the backup user (see the error), then run `gofr-backup now`"
        )
    if "verification" in e:
        return "the archive did not read back correctly: check the backup disk, then run `gofr-backup now`"
    if "hook" in e:
        return f"fix the hook ({prefix}PRE_HOOK) or its timeout, then run `gofr-backup now`"
    return "fix the cause above, then run `gofr-backup now` to confirm"


def _head(project: str, host: str) -> str:
    return f"gofr-backup {project}@{host}"


def _compose(lines: list[str]) -> str:
    return "\n".join(x for x in lines if x)


def failed(
    project: str,
    host: str,
    prefix: str,
    error: str,
    when: str,
    trigger: str,
    last_success: Any,
    now: datetime,
) -> Message:
    return Message(
        "failure",
        "failed",
        f"{_head(project, host)}: backup FAILED",
        _compose(
            [
                f"The backup of {project} on {host} ({trigger}) failed at {when}.",
                f"Error: {error}",
                last_good_line(last_success, now),
                f"What to do: {advice_for_error(error, prefix)}. `gofr-backup status` and the "
                "service log (docker logs) have the details.",
            ]
        ),
        FAILURE,
        failure_key(error),
    )


def incomplete(
    project: str, host: str, prefix: str, filename: str, warnings: list[str], last_success: Any, now: datetime
) -> Message:
    unreadable = [w for w in warnings if "could not be read" in w or "could not be opened" in w]
    summary = next((w for w in warnings if "path(s) could not be read" in w), None)
    shown = [summary] if summary else unreadable[:10]
    return Message(
        "warning",
        "incomplete",
        f"{_head(project, host)}: backup INCOMPLETE (unreadable files)",
        _compose(
            [
                f"The backup of {project} on {host} completed, but some files could not be read, "
                f"so {filename} is marked incomplete.",
                *(f"Unreadable: {w}" for w in shown),
                last_good_line(last_success, now),
                "What to do: make those files readable by the backup user (same uid as the app, or a "
                "shared group: see the README, 'Permissions'); the next complete backup clears this.",
            ]
        ),
        WARNING,
        failure_key(summary or ";".join(unreadable)),
    )


def stale(
    project: str,
    host: str,
    age_s: float | None,
    gap_s: float,
    last_error: str | None,
    last_success: Any,
    now: datetime,
) -> Message:
    since = f"for {human_age(age_s)}" if age_s is not None else "since the service started"
    return Message(
        "failure",
        "stale",
        f"{_head(project, host)}: backups are STALE",
        _compose(
            [
                f"No backup of {project} on {host} has succeeded {since}: more than two schedule "
                f"intervals ({human_age(2 * gap_s)}).",
                f"Last error: {last_error}" if last_error else "",
                last_good_line(last_success, now),
                "What to do: check `gofr-backup status` and the service log (docker logs); is the "
                "service running and its schedule right? Run `gofr-backup now` to make one now.",
            ]
        ),
        FAILURE,
        "stale",
    )


def recovered(project: str, host: str, entry: dict[str, Any], since: str | None) -> Message:
    return Message(
        "recovery",
        "recovered",
        f"{_head(project, host)}: backups OK again",
        _compose(
            [
                f"The backup of {project} on {host} succeeded again"
                + (f" (failing since {since})" if since else "")
                + f": {entry.get('filename')}, {human_size(entry.get('size_bytes'))}, "
                f"{entry.get('file_count')} files.",
                "What to do: nothing.",
            ]
        ),
        SUCCESS,
    )


def succeeded(project: str, host: str, entry: dict[str, Any]) -> Message:
    dur = entry.get("duration_s")
    return Message(
        "success",
        "ok",
        f"{_head(project, host)}: backup OK",
        _compose(
            [
                f"The backup of {project} on {host} succeeded: {entry.get('filename')}, "
                f"{human_size(entry.get('size_bytes'))}, {entry.get('file_count')} files"
                + (f", {dur:.1f} s" if isinstance(dur, int | float) else "")
                + (", verified" if entry.get("verified") else "")
                + ".",
            ]
        ),
        SUCCESS,
    )


def drill_failed(project: str, host: str, drill: dict[str, Any], archive: str | None) -> Message:
    err = drill.get("error") or "unknown error"
    if drill.get("checked") is False:  # nothing known about the archive: the drill's surroundings
        return Message(
            "drill",
            "drill_failed",
            f"{_head(project, host)}: restore drill COULD NOT RUN",
            _compose(
                [
                    f"A restore drill of {project} on {host} could not run at {drill.get('at')}.",
                    f"Error: {err}",
                    "What to do: give the drill room (free space, or point DRILL_DIR elsewhere), then "
                    "run `gofr-backup drill`.",
                ]
            ),
            FAILURE,
            failure_key(err),
        )
    return Message(
        "drill",
        "drill_failed",
        f"{_head(project, host)}: restore drill FAILED",
        _compose(
            [
                f"A restore drill of {project} on {host} failed at {drill.get('at')}"
                + (f" ({archive})" if archive else "")
                + ".",
                f"Error: {err}",
                "What to do: that backup may not restore. Run `gofr-backup verify --all`, make a "
                "fresh backup with `gofr-backup now`, and check the backup disk.",
            ]
        ),
        FAILURE,
        failure_key(err),
    )


def drill_ok(project: str, host: str, drill: dict[str, Any]) -> Message:
    secs = drill.get("restore_seconds")
    return Message(
        "drill",
        "drill_ok",
        f"{_head(project, host)}: restore drill OK again",
        f"A restore drill of {project} on {host} succeeded at {drill.get('at')}"
        + (f" in {secs:.1f} s" if isinstance(secs, int | float) else "")
        + ".\nWhat to do: nothing.",
        SUCCESS,
    )


def remote_lag(
    project: str,
    host: str,
    url: str,
    error: str | None,
    last_upload: str | None,
    now: datetime,
    not_whole: bool = False,
) -> Message:
    """The off-site stage failed; ``not_whole``: its sync ran but left restore points on the
    remote that cannot be restored from it (the same slot: a later whole sync clears it)."""
    if last_upload:
        age = human_age((now - datetime.fromisoformat(last_upload)).total_seconds())
        lag = f"The last successful upload was {age} ago (at {last_upload})."
    else:
        lag = "No upload has succeeded yet."
    if not_whole:
        return Message(
            "remote",
            "remote_lag",
            f"{_head(project, host)}: off-site copy NOT WHOLE",
            _compose(
                [
                    f"The off-site copy of {project}'s backup on {host} in {url} has restore points "
                    "that cannot be restored from it; the local backup is fine.",
                    f"Error: {error}" if error else "",
                    "What to do: nothing brings an archive gone from both places back; the next full "
                    "gives whole remote restore points again, and remote retention removes the broken "
                    "ones in time (`gofr-backup list --remote` marks them).",
                ]
            ),
            WARNING,
            failure_key(error),
        )
    return Message(
        "remote",
        "remote_lag",
        f"{_head(project, host)}: off-site copy LAGGING",
        _compose(
            [
                f"The upload of {project}'s backup on {host} to {url} failed; the local backup is fine.",
                f"Error: {error}" if error else "",
                lag,
                "What to do: check the store's credentials and the network; the next run, or "
                "`gofr-backup sync`, uploads everything that is missing.",
            ]
        ),
        WARNING,
        failure_key(error),
    )


def remote_ok(project: str, host: str, url: str) -> Message:
    return Message(
        "remote",
        "remote_ok",
        f"{_head(project, host)}: off-site copy up to date again",
        f"The off-site copy of {project} on {host} in {url} is up to date again.\nWhat to do: nothing.",
        SUCCESS,
    )


# -- sending ----------------------------------------------------------------------------------------
class _Capture(logging.Handler):
    """apprise's warnings, per thread: the reason a send failed, kept off stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())


_capture = _Capture()
_setup_lock = threading.Lock()
_set_up = False


def _apprise_logging() -> None:
    global _set_up
    with _setup_lock:
        if not _set_up:
            lg = logging.getLogger("apprise")
            lg.addHandler(_capture)
            lg.propagate = False  # never onto stderr through the root logger, with a host in it
            _set_up = True


def send(url: str, msg: Message, timeout: float) -> str | None:
    """Send ``msg`` to one apprise URL within about ``timeout`` seconds; None, or why it failed
    (secrets scrubbed)."""
    import apprise

    _apprise_logging()
    where = redact_url(url)
    try:
        plugin = apprise.Apprise.instantiate(url)
    except Exception:  # noqa: BLE001
        plugin = None
    if plugin is None:
        return f"{where}: not a valid apprise URL"
    # every socket operation is bounded; observe.py stops waiting at the deadline anyway
    plugin.socket_connect_timeout = max(0.1, timeout)
    plugin.socket_read_timeout = max(0.1, timeout)
    _capture.local.lines = []
    try:
        ok = plugin.notify(body=msg.body, title=msg.title, notify_type=msg.notify_type)
    except Exception as e:  # noqa: BLE001 - a plugin's bug is a failed send, never a failed backup
        ok = False
        _capture.local.lines.append(f"{type(e).__name__}: {e}")
    lines, _capture.local.lines = _capture.local.lines, None
    if ok:
        return None
    why = "; ".join(dict.fromkeys(scrub(x, url) for x in lines))[:300] or "the notifier reported failure"
    return f"{where}: {why}"
