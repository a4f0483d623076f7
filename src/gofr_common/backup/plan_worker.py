"""The helper process of a chain's restore plan (:meth:`extract.Superseded.start`).

While the restore's first pass extracts the full (most of a chain restore's time, and one core of
two busy), this process reads the member headers of the incrementals between the full and the
last archive, and prints what they store and hard-link as one JSON object on its standard
output::

    {"stored": {name: j, ...}, "linked": [[j, target], ...]}

``j`` counts from 0, the first archive it was given. It is a hint and never trusted: whatever it
says, the restore's own passes check every member, and a plan that proves wrong anywhere starts
the pass again writing everything (:class:`extract.Rewind`). It reads only, writes nothing but its
standard output, and dies with the restore (``PR_SET_PDEATHSIG``; it also stops once its parent
is gone).

Usage (by the restore only): ``python -m gofr_common.backup.plan_worker ARCHIVE...``
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
PATIENCE = 120.0  # seconds the incrementals' pass waits for the helper at least (see Helper.wait)


class Helper:
    """A running helper: its process and its standard output."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out: IO[bytes] | None = proc.stdout
        self.started = time.monotonic()

    def ready(self) -> bool:
        """Whether its output can be read (it has written, or it has ended)."""
        if self.out is None:
            return True
        p = select.poll()  # not select.select: it raises ValueError for a descriptor above 1023
        p.register(self.out, select.POLLIN)
        return bool(p.poll(0))

    def wait(self, should_stop: Any, at_least: float = PATIENCE) -> None:
        """Until it has written or ended, the restore is stopped, or it has been waited for as
        long as it has run already (the whole full's pass: its reading is lighter than that
        pass), and at least ``at_least`` seconds: a helper that hangs (a bug; a file system that
        stops answering) costs the plan its skips, never the restore."""
        give_up = time.monotonic() + max(at_least, time.monotonic() - self.started)
        while not self.ready():
            if should_stop() or time.monotonic() > give_up:
                return
            time.sleep(0.02)

    def result(self) -> tuple[dict[str, int], list[tuple[int, str]]] | None:
        """What it found, or None (it failed, was stopped, or printed something else)."""
        if self.out is None or not self.ready():
            return None
        try:
            raw = self.out.read()
            if self.proc.wait(timeout=10) != 0:
                return None
            found = json.loads(raw)
            stored = found["stored"]
            linked = [(int(j), str(name)) for j, name in found["linked"]]
            if not isinstance(stored, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in stored.items()
            ):
                return None
        except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired):
            return None
        return stored, linked

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.wait()
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
            self.out = None


def spawn(archives: list[Path]) -> Helper | None:
    """Start the helper on ``archives`` (None if it cannot be started: no plan from it)."""
    if not sys.executable or getattr(sys, "frozen", False):
        # an embedded interpreter, or a frozen application (PyInstaller, cx_Freeze: sys.executable
        # is the application itself, not a Python that runs -m): no helper, the plan stays partial
        return None
    # it imports what the restore imports, in the same order (where gofr_common is installed,
    # site-packages, comes after the standard library, as it does here: put first, a module
    # there named like one of the standard library's would be imported instead of it)
    paths = [p for p in sys.path if p]  # "": the working directory (-m, -c), never searched
    root = str(Path(__file__).resolve().parents[2])  # where gofr_common is imported from
    if root not in paths:
        paths.append(root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    try:
        proc = subprocess.Popen(
            # -P: the restore's working directory is not put on sys.path (a json.py there is not run)
            [sys.executable, "-P", "-m", "gofr_common.backup.plan_worker", *map(str, archives)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError:
        return None
    return Helper(proc)


def main(argv: list[str]) -> int:
    parent = os.getppid()
    with contextlib.suppress(Exception):  # Linux: die with the restore
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the restore's to handle
    if os.getppid() != parent:
        return 1
    from .extract import Superseded

    paths = [Path(a) for a in argv]
    plan = Superseded(len(paths) + 2)  # never the last archive: only what is stored and linked
    if not plan._read(paths, range(len(paths)), lambda: os.getppid() != parent):
        return 1
    sys.stdout.write(json.dumps({"stored": plan.stored, "linked": sorted(plan.linked)}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
