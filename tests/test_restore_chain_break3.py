"""A new user breaking the chain restore's plan helper (plan_worker): real processes, real file
descriptors, real working directories; every restored tree compared with the live one."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from gofrtest import snapshot, write
from test_restore_chain import T0, TAR, Chain

from gofr_common.backup.restore import Link, RestoreRequest, restore_chain

pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")


def _chain3(tmp_path: Path, files: int = 600) -> Chain:
    """A full of ``files`` files in 10 directories, a day that changes a third of them, a day that
    adds one: a 3-archive chain (so the helper reads the middle one)."""
    data = tmp_path / "data"
    for i in range(files):
        write(data / "storage" / f"d{i % 10}" / f"f{i}.txt", f"x{i}", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    for i in range(0, files, 3):
        write(data / "storage" / f"d{i % 10}" / f"f{i}.txt", f"y{i}", 0o644, T0 + 5)
    ch.day(1)
    write(data / "storage" / "new.txt", "n", 0o644, T0 + 9)
    ch.day(2)
    return ch


def test_a_restore_in_a_process_with_more_than_1024_descriptors(tmp_path: Path) -> None:
    """A long-lived process (a service using the library) holds 1,100 descriptors: the helper's
    pipe is above 1023, where select.select raises ValueError. That ValueError, raised from the
    full's pass, was taken for a corrupt stream: the restore was refused and the good full was
    recorded as bad in the manifest (verified: false). Now the chain restores exactly."""
    ch = _chain3(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("cannot hold 1,100 descriptors")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        links = [Link(w.path, w.sha256, e) for w, e in zip(ch.results, ch.entries, strict=True)]
        restore_chain(ch.cfg, links, RestoreRequest(target=tmp_path / "out"))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert snapshot(tmp_path / "out" / "storage") == snapshot(ch.data / "storage")
    manifest = json.loads((ch.backups / "manifest.json").read_text())
    assert all(e.get("verified") is not False for e in manifest["backups"]), manifest


def _restore_exactly(ch: Chain, tmp_path: Path, how: list[str], env: dict[str, str], cwd: Path) -> None:
    """``python -P <how> restore <day 3> --target <tmp>/out --yes`` (the CLI, started as ``how``
    says, from ``cwd``) succeeds and restores the live tree."""
    r = subprocess.run(
        [sys.executable, "-P", *how, "restore", ch.results[2].filename]
        + ["--target", str(tmp_path / "out"), "--yes"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert snapshot(tmp_path / "out" / "storage") == snapshot(ch.data / "storage")


def test_the_helper_runs_no_code_from_the_working_directory(tmp_path: Path) -> None:
    """The CLI (as its console script: the working directory not on sys.path) restores a chain
    from a directory holding a json.py. The helper (``python -m``) put the working directory
    first on its sys.path and ran that json.py (as root, in a restore); now it does not."""
    ch = _chain3(tmp_path, files=30)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "ran"
    (cwd / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('not json')\n")
    _restore_exactly(ch, tmp_path, ["-m", "gofr_common.backup"], ch.env, cwd)
    assert not marker.exists(), "the helper ran json.py from the restore's working directory"


def test_the_helper_imports_the_standard_library_as_the_restore_does(tmp_path: Path) -> None:
    """gofr_common installed in a site-packages directory that also holds a module named like a
    standard library one (a json.py: old PyPI backports such as pathlib or typing do this). The
    restore imports the standard library's (site-packages comes after it on sys.path); the
    helper was given that directory first on its PYTHONPATH and imported (ran) the other one."""
    import shutil

    ch = _chain3(tmp_path, files=30)
    site = tmp_path / "site-packages"
    shutil.copytree(Path(__file__).resolve().parents[1] / "src" / "gofr_common", site / "gofr_common")
    marker = tmp_path / "ran"
    (site / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('not json')\n")
    env = {k: v for k, v in ch.env.items() if k != "PYTHONPATH"}
    code = f"import sys; sys.path.append({str(site)!r}); from gofr_common.backup.cli import main; sys.exit(main())"
    _restore_exactly(ch, tmp_path, ["-c", code], env, tmp_path)
    assert not marker.exists(), "the helper imported site-packages/json.py instead of the standard library's"


def test_a_frozen_application_starts_no_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library inside a frozen application (PyInstaller, cx_Freeze): sys.executable is the
    application, here one that runs until it is stopped whatever its arguments (a service). The
    helper was that application started again: the incrementals' pass waited for its plan until
    the restore was stopped. Now no helper is started (the plan stays partial) and the chain
    restores exactly."""
    import time

    ch = _chain3(tmp_path, files=30)
    app = tmp_path / "app"
    app.write_text("#!/bin/sh\nexec sleep 600\n")
    app.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(app))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    links = [Link(w.path, w.sha256, e) for w, e in zip(ch.results, ch.entries, strict=True)]
    t0 = time.monotonic()
    restore_chain(
        ch.cfg, links, RestoreRequest(target=tmp_path / "out"), should_stop=lambda: time.monotonic() - t0 > 20
    )
    assert snapshot(tmp_path / "out" / "storage") == snapshot(ch.data / "storage")
