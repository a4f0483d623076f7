"""One line per event: human-readable by default, JSON lines with GOFR_BACKUP_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from typing import Any, TextIO

from .fsutil import json_text

log = logging.getLogger("gofr_backup")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(r: logging.LogRecord) -> dict[str, Any]:
    """An event's own fields (any name, ``filename`` included: they are kept apart from the
    LogRecord's attributes), or the extras of a plain logging call."""
    fields = getattr(r, "fields", None)
    if isinstance(fields, dict):
        return fields
    return {k: v for k, v in r.__dict__.items() if k not in _RESERVED and k != "event"}


class _Human(logging.Formatter):
    def format(self, r: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(r.created).astimezone().isoformat(timespec="seconds")
        tail = "".join(f" {k}={_fmt(v)}" for k, v in _fields(r).items())
        return f"{ts} {r.levelname:<7} {r.getMessage()}{tail}"


class _Json(logging.Formatter):
    def format(self, r: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": datetime.fromtimestamp(r.created).astimezone().isoformat(timespec="milliseconds"),
            "level": r.levelname.lower(),
            "event": getattr(r, "event", "log"),
            "message": r.getMessage(),
        }
        d.update({k: v for k, v in _fields(r).items() if k not in d})
        return json_text(d, default=str)


def _fmt(v: Any) -> str:
    s = str(v)
    return json.dumps(s, ensure_ascii=False) if (" " in s or not s) else s


FORMAT_VAR = "GOFR_BACKUP_LOG_FORMAT"


def log_format(value: str | None) -> str:
    """``text`` (unset or empty too) or ``json``, any case; anything else raises ConfigError
    (configuration loading calls this, so a bad value stops every command with exit 2)."""
    from .errors import ConfigError

    fmt = (value or "text").strip().lower() or "text"
    if fmt not in ("text", "json"):
        raise ConfigError(f"{FORMAT_VAR}={value!r} is not valid: expected text or json")
    return fmt


def setup(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    fmt = log_format(os.environ.get(FORMAT_VAR))
    h = logging.StreamHandler(stream or sys.stdout)
    h.setFormatter(_Json() if fmt == "json" else _Human())
    log.handlers[:] = [h]
    log.setLevel(level)
    log.propagate = False


def event(name: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, message, extra={"event": name, "fields": fields})
