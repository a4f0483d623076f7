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


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def begin(label: str, total: int) -> None:
    global _active
    if _enabled:
        tty = sys.stderr.isatty()
        every = float(os.environ.get("GOFR_BACKUP_PROGRESS_SECONDS") or (0.2 if tty else 5.0))
        _active = Progress(label, total, tty, every)


def advance(n: int) -> None:
    if _active is not None:
        _active.advance(n)


def end() -> None:
    global _active
    if _active is not None and _active.tty:
        _active.show(time.monotonic(), final=True)
    _active = None
