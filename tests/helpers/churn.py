"""Processes that change files while they are backed up.

    python churn.py append FILE            append log lines as fast as possible
    python churn.py volatile DIR           create, rewrite, truncate and delete files in DIR
Both run until SIGTERM.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

stop = {"now": False}
signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))


def append(path: str) -> None:
    with open(path, "a", buffering=1) as f:
        i = 0
        while not stop["now"]:
            i += 1
            f.write(f"{time.time():.6f} INFO request {i} served\n")
            if i % 200 == 0:
                time.sleep(0.001)


def volatile(d: str) -> None:
    rnd = random.Random(os.getpid())
    os.makedirs(d, exist_ok=True)
    while not stop["now"]:
        p = os.path.join(d, f"v{rnd.randrange(40)}.dat")
        op = rnd.random()
        try:
            if op < 0.4:
                with open(p, "wb") as f:
                    f.write(os.urandom(rnd.choice([1000, 200_000, 3_000_000])))
            elif op < 0.7 and os.path.exists(p):
                os.truncate(p, rnd.randrange(max(1, os.path.getsize(p))))
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass
        time.sleep(0.0005)


if __name__ == "__main__":
    {"append": append, "volatile": volatile}[sys.argv[1]](sys.argv[2])
