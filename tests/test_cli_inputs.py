"""Bad input to the CLI: one line on stderr that names what to fix, exit 2, nothing written, never
a traceback (issue 13). Under --json the error is also a JSON object on stdout."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

from gofrtest import cli_env, run_cli, write
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: "nothing written" means this is unchanged."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st_ = os.lstat(p)
            out[os.path.relpath(p, root)] = (st_.st_size, st_.st_mtime_ns)
    return out


def one_line_error(r: Any, code: int, *needles: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("gofr-backup: "), r.stderr
    for n in needles:
        assert n in line, (n, line)
    return line


def _setup(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    write(data / "s" / "a.txt", "a")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    assert run_cli("now", env=env).returncode == 0
    return data, backups, env


def test_restore_target_that_is_a_file(tmp_path: Path) -> None:
    # issue 13: `restore --target` pointing at an existing file gave a traceback
    data, backups, env = _setup(tmp_path)
    target = write(tmp_path / "not-a-dir", "x")
    before = tree(tmp_path)
    r = run_cli("restore", "--latest", "--yes", "--target", str(target), env=env)
    one_line_error(r, 2, "--target", "not a directory")
    assert tree(tmp_path) == before


def test_a_data_dir_that_is_a_file_is_not_a_directory(tmp_path: Path) -> None:
    # issue 13: a data dir that is a file was reported as "does not exist"
    f = write(tmp_path / "data", "I am a file")
    env = cli_env(f, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    before = tree(tmp_path)
    one_line_error(run_cli("now", env=env), 2, "DATA_DIR", "not a directory")
    assert tree(tmp_path) == before


def test_identity_that_does_not_exist(tmp_path: Path) -> None:
    # issue 13: --identity pointing at a missing file
    _, _, env = _setup(tmp_path)
    before = tree(tmp_path)
    missing = str(tmp_path / "no-such-key.txt")
    one_line_error(
        run_cli("verify", "--latest", "--identity", missing, env=env), 2, "--identity", "no such file"
    )
    one_line_error(
        run_cli("restore", "--latest", "--yes", "--identity", missing, env=env),
        2,
        "--identity",
        "no such file",
    )
    assert tree(tmp_path) == before


def test_read_only_commands_never_create_the_backup_dir_or_a_manifest(tmp_path: Path) -> None:
    # issue 13: list/verify/status with a missing --backup-dir created it (and a manifest.json)
    data = tmp_path / "data"
    write(data / "s" / "a.txt", "a")
    missing = tmp_path / "nowhere"
    afile = write(tmp_path / "afile", "x")
    env = cli_env(data, missing, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    before = tree(tmp_path)
    for args in (["list"], ["verify", "--all"], ["status"]):
        one_line_error(run_cli(*args, env=env), 2, str(missing), "does not exist")
        one_line_error(run_cli("--backup-dir", str(afile), *args, env=env), 2, "not a directory")
    assert tree(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("--backup-dir", str(empty), "list", env=env).returncode == 0
    assert run_cli("--backup-dir", str(empty), "status", env=env).returncode == 1  # nothing backed up
    assert list(empty.iterdir()) == []


def test_json_errors_are_json_on_stdout(tmp_path: Path) -> None:
    # issue 13: under --json, errors are also printed as JSON on stdout so that scripts can parse them
    _, backups, env = _setup(tmp_path)
    cases = [
        (["list", "--json", "--tier", "hourly"], 2),  # a usage error, from the argument parser
        (["restore", "no-such-archive.tar.gz", "--yes", "--json"], 2),
        (["now", "--json"], 1),  # a failed backup: no path exists
    ]
    (tmp_path / "data" / "s" / "a.txt").unlink()
    (tmp_path / "data" / "s").rmdir()
    for args, code in cases:
        r = run_cli(*args, env=env)
        line = one_line_error(r, code)
        doc = json.loads(r.stdout)
        assert doc == {"error": line.removeprefix("gofr-backup: "), "exit_code": code}


# each example is a real process (~0.1 s): 40 in `make test`, 400 in `make fuzz`
FUZZ_EXAMPLES = 400 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 40
COMMANDS = ["config", "now", "list", "verify", "restore", "prune", "status", "sync", "nope", ""]
FLAGS = [
    "--json",
    "--latest",
    "--all",
    "--dry-run",
    "--yes",
    "--tier",
    "--only",
    "--target",
    "--identity",
    "--remote",
    "--from-remote",
    "--interactive",
    "--project",
    "--data-dir",
    "--backup-dir",
    "-y",
]
VARS = [
    "SCHEDULE",
    "RETENTION_DAYS",
    "MAX_COUNT",
    "PATHS",
    "COMPRESSION",
    "COMPRESSION_LEVEL",
    "EXCLUDE",
    "LOCK_TIMEOUT",
    "UMASK",
    "SPACE_MARGIN",
    "ENABLE_WEEKLY",
    "REMOTE_URL",
    "HOOK_TIMEOUT",
    "DATA_DIR",
    "DIR",
]
text = st.text(alphabet=string.printable + "äé☃\u202e", max_size=12)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    argv=st.lists(st.one_of(st.sampled_from(COMMANDS + FLAGS), text), min_size=0, max_size=6),
    env=st.dictionaries(st.sampled_from(VARS), text, max_size=3),
)
@example(argv=["config", "\r"], env={})  # found by this fuzz: a raw \r split the one error line
@example(argv=["restore", "a\nb.tar.gz", "--yes"], env={})
def test_fuzz_cli_never_prints_a_traceback(tmp_path: Path, argv: list[str], env: dict[str, str]) -> None:
    # issue 13: generate argument vectors and environments, run the real entry point: no traceback ever
    if "run" in argv:
        return  # the service blocks by design
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "s" / "a.txt", "a")
    e = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    e.update({f"GOFR_PLOT_BACKUP_{k}": v.replace("\x00", "") for k, v in env.items()})
    r = run_cli(*[a.replace("\x00", "") for a in argv], env=e, input="", timeout=60, cwd=tmp_path)
    assert "Traceback" not in r.stderr, (argv, env, r.stderr)
    assert r.returncode in (0, 1, 2, 3), (argv, env, r.returncode, r.stderr)
    if r.returncode == 2:
        assert r.stderr.endswith("\n") and r.stderr.count("\n") == 1, r.stderr  # one line, whatever was typed
        assert r.stderr.startswith("gofr-backup: "), r.stderr


def test_an_empty_value_is_never_taken_as_no_option(tmp_path: Path) -> None:
    # `restore --latest --target "$COPY_DIR" --yes` with COPY_DIR unset restored IN PLACE over the
    # live data (`--target ''` was taken as no --target); `--identity ''` fell back to IDENTITY_FILE,
    # `drill ''` and `check-source ''` to the newest archive, `report --output ''` named "."
    data, backups, env = _setup(tmp_path)
    (data / "s" / "a.txt").write_text("live change")
    write(data / "s" / "new-since-the-backup.txt", "precious")
    before = tree(tmp_path)
    cases = [
        (["restore", "--latest", "--target", "", "--yes"], "--target"),
        (["restore", "--latest", "--target", "", "--dry-run"], "--target"),
        (["restore", "--latest", "--target=", "--yes", "--json"], "--target"),
        (["restore", "--latest", "--identity", "", "--yes"], "--identity"),
        (["verify", "--latest", "--identity", ""], "--identity"),
        (["drill", "--identity", ""], "--identity"),
        (["drill", ""], "NAME"),
        (["check-source", ""], "NAME"),
        (["check-source", "--identity", ""], "--identity"),
        (["restore", "", "--yes"], "NAME"),
        (["verify", ""], "NAME"),
        (["report", "--output", ""], "--output"),
    ]
    for args, flag in cases:
        r = run_cli(*args, env=env)
        one_line_error(r, 2, flag, "empty")
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert tree(tmp_path) == before, args
    assert (data / "s" / "a.txt").read_text() == "live change"
