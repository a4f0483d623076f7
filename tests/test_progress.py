"""Progress: a bar on a terminal (a real pseudo-terminal here), log lines otherwise."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from gofrtest import SRC, cli_env, write


def _env(tmp_path: Path) -> dict[str, str]:
    write(tmp_path / "data" / "s" / "blob.bin", os.urandom(24 << 20))
    for i in range(300):
        write(tmp_path / "data" / "s" / "docs" / f"d{i}.txt", "x" * 5000)
    return cli_env(
        tmp_path / "data",
        tmp_path / "b",
        **{"GOFR_{P}_BACKUP_PATHS": "s:s", "GOFR_{P}_BACKUP_COMPRESSION_LEVEL": "9"},
    )


def test_log_lines_when_not_a_terminal(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "GOFR_BACKUP_LOG_FORMAT": "json", "GOFR_BACKUP_PROGRESS_SECONDS": "0.01"}
    r = subprocess.run(
        [sys.executable, "-m", "gofr_common.backup", "now"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    prog = [e for e in events if e["event"] == "progress"]
    assert {e["operation"] for e in prog} >= {"backup", "verify"}, [e["message"] for e in prog]
    backup = [e for e in prog if e["operation"] == "backup"]
    assert all(e["total_bytes"] == backup[0]["total_bytes"] for e in backup)
    assert backup == sorted(backup, key=lambda e: e["done_bytes"]) and "MB/s" in backup[0]["message"]


def test_bar_on_a_terminal(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["PYTHONPATH"] = str(SRC)
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "gofr_common.backup", "now"], env)
    out = b""
    while True:
        try:
            b = os.read(fd, 65536)
        except OSError:
            break
        if not b:
            break
        out += b
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\r[" in text and "MB/s" in text and "ETA" in text and "backup: 100%" in text
