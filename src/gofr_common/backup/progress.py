"""Progress of long operations (backup, verify, restore): a bar with bytes, rate and ETA when
stderr is a terminal, otherwise one log line every few seconds. Off unless a command enables it."""

from __future__ import annotations

import os
import sys
import time

from .log import event

_enabled = False
_active: Progress | None = None


class Progress:
    def __init__(self, label: str, total: int, tty: bool, every: float) -> None:
        self.label, self.total, self.tty, self.every = label, max(total, 1), tty, every
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.show(now)

    def show(self, now: float, final: bool = False) -> None:
        el = max(now - self.t0, 1e-6)
        rate = self.done / el
        frac = min(self.done / self.total, 1.0)
        eta = (self.total - self.done) / rate if rate > 0 and not final else 0
        text = (
            f"{self.label}: {frac:4.0%} {self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB "
            f"{rate / 1e6:,.1f} MB/s ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        if self.tty:
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {text}   " + ("\n" if final else ""))
            sys.stderr.flush()
        elif not final:
            event("progress", text, operation=self.label, done_bytes=self.done, total_bytes=self.total)


SECONDS_VAR = "GOFR_BACKUP_PROGRESS_SECONDS"
MAX_SECONDS = 3600.0


def interval(value: str | None, tty: bool) -> float:
    """Seconds between progress reports: ``value`` (a number more than 0 and at most 3600), or
    0.2 on a terminal and 5 otherwise when it is unset or empty. Anything else raises ConfigError
    (configuration loading calls this, so a bad value stops every command with exit 2)."""
    from .errors import ConfigError

    if value is None or not value.strip():
        return 0.2 if tty else 5.0
    try:
        n = float(value)
    except ValueError:
        n = float("nan")
    if not 0 < n <= MAX_SECONDS:  # (also refuses nan)
        raise ConfigError(
            f"{SECONDS_VAR}={value!r} is not valid: expected a number of seconds more than 0 and at most "
            f"{MAX_SECONDS:.0f}"
        )
    return n


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def begin(label: str, total: int) -> None:
    global _active
    if _enabled:
        tty = sys.stderr.isatty()
        every = interval(os.environ.get(SECONDS_VAR), tty)
        _active = Progress(label, total, tty, every)


def advance(n: int) -> None:
    if _active is not None:
        _active.advance(n)


def end() -> None:
    global _active
    if _active is not None and _active.tty:
        _active.show(time.monotonic(), final=True)
    _active = None
