"""Helpers shared by the Docker tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# every image, container and volume of a test run carries this id, and is removed at its end
RUN_ID = f"run{os.getpid()}-{uuid.uuid4().hex[:8]}"


def sh(
    *args: str, check: bool = True, timeout: float = 600, **kw: object
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r  # type: ignore[no-any-return]
