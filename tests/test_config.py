"""Every invalid value: one line on stderr naming the variable, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, run_cli, snapshot
from hypothesis import given
from hypothesis import strategies as st

from gofr_common.backup.config import BackupConfig
from gofr_common.backup.errors import ConfigError

BAD = [
    ("GOFR_PLOT_BACKUP_COMPRESSION", "lz4", "gzip, bzip2, xz, zstd, none"),
    ("GOFR_PLOT_BACKUP_COMPRESSION_LEVEL", "10", "from 1 to 9"),
    ("GOFR_PLOT_BACKUP_COMPRESSION_LEVEL", "0", "from 1 to 9"),
    ("GOFR_PLOT_BACKUP_COMPRESSION_LEVEL", "six", "whole number"),
    ("GOFR_PLOT_BACKUP_SCHEDULE", "0 2 * * * *", "exactly 5 cron fields"),
    ("GOFR_PLOT_BACKUP_SCHEDULE", "61 2 * * *", "not a valid cron"),
    ("GOFR_PLOT_BACKUP_SCHEDULE", "every day", "exactly 5"),
    ("GOFR_PLOT_BACKUP_RETENTION_DAYS", "0", "from 1 to 36500"),
    ("GOFR_PLOT_BACKUP_RETENTION_DAYS", "-3", "from 1 to 36500"),
    ("GOFR_PLOT_BACKUP_MAX_COUNT", "0", "from 1 to 100000"),
    ("GOFR_PLOT_BACKUP_WEEKLY_RETENTION_WEEKS", "0", "from 1 to 5200"),
    ("GOFR_PLOT_BACKUP_MONTHLY_RETENTION_MONTHS", "x", "whole number"),
    ("GOFR_PLOT_BACKUP_PATHS", "storage", "not name:path"),
    ("GOFR_PLOT_BACKUP_PATHS", "storage:storage,storage:other", "used twice"),
    ("GOFR_PLOT_BACKUP_PATHS", "../evil:storage", "one path segment"),
    ("GOFR_PLOT_BACKUP_PATHS", "a/b:storage", "one path segment"),
    ("GOFR_PLOT_BACKUP_PATHS", ".gofr-backup.json:storage", "one path segment"),
    ("GOFR_PLOT_BACKUP_PATHS", "a:storage,,b:auth", "name:path pairs"),
    ("GOFR_PLOT_BACKUP_PATHS", "root:/", "resolves to '/'"),
    ("GOFR_PLOT_BACKUP_ENABLED", "maybe", "true/false"),
    ("GOFR_PLOT_BACKUP_VERIFY_AFTER_BACKUP", "2", "true/false"),
    ("GOFR_PLOT_BACKUP_LOCK_TIMEOUT", "soon", "seconds"),
]


@pytest.mark.parametrize("var,value,allowed", BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_bad_value_one_line_exit_2_nothing_written(
    tmp_path: Path, var: str, value: str, allowed: str
) -> None:
    backups = tmp_path / "backups"
    (tmp_path / "data" / "storage").mkdir(parents=True)
    env = cli_env(tmp_path / "data", backups, **{var: value})
    r = run_cli("now", env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert var in lines[0] and allowed in lines[0]
    assert "Traceback" not in r.stderr
    assert not backups.exists()


@pytest.mark.parametrize("project", [None, "", "Plot", "plot_x", "-plot", "plot!", "a" * 80])
def test_bad_or_missing_project(tmp_path: Path, project: str | None) -> None:
    env = cli_env(tmp_path, tmp_path / "b")
    env.pop("GOFR_PROJECT")
    if project is not None:
        env["GOFR_PROJECT"] = project
    r = run_cli("now", env=env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "GOFR_PROJECT" in r.stderr
    assert not (tmp_path / "b").exists()


def test_usage_errors_are_one_line() -> None:
    r = run_cli("verify", env=cli_env(Path("/nonexistent"), Path("/nonexistent")))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("now", "--tier", "hourly", env=cli_env(Path("/x"), Path("/y")))
    assert r.returncode == 2 and "hourly" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_defaults_match_the_spec() -> None:
    c = BackupConfig.from_env(env={"GOFR_PROJECT": "plot"})
    assert (c.enabled, c.schedule, c.retention_days, c.max_count) == (True, "0 2 * * *", 30, 90)
    assert [(p.name, p.raw) for p in c.paths] == [
        ("storage", "storage"),
        ("auth", "auth"),
        ("logs", "../logs"),
    ]
    assert str(c.paths[2].path) == "/logs"  # ../logs is the data dir's sibling
    assert (c.compression, c.compression_level) == ("gzip", 6)
    assert (c.cleanup_on_start, c.verify_after_backup) == (True, True)
    assert (c.enable_weekly, c.weekly_retention_weeks, c.enable_monthly, c.monthly_retention_months) == (
        False,
        8,
        False,
        12,
    )
    assert (str(c.data_dir), str(c.backup_dir), c.lock_timeout) == ("/data", "/backups", 600)


def test_prefix_of_hyphenated_project_and_booleans() -> None:
    env = {
        "GOFR_PROJECT": "my-proj",
        "GOFR_MY_PROJ_BACKUP_ENABLED": "No",
        "GOFR_MY_PROJ_BACKUP_ENABLE_WEEKLY": "YES",
        "GOFR_MY_PROJ_BACKUP_COMPRESSION": "zstd",
        "GOFR_MY_PROJ_BACKUP_LOCK_TIMEOUT": "2m",
    }
    c = BackupConfig.from_env(env=env)
    assert c.enabled is False and c.enable_weekly is True
    assert c.compression_level == 3  # zstd's own default when no level is set
    assert c.lock_timeout == 120


def test_absolute_path_and_unknown_variable_warning(tmp_path: Path) -> None:
    env = {
        "GOFR_PROJECT": "iq",
        "GOFR_IQ_BACKUP_PATHS": "data:.,abs:/srv/x",
        "GOFR_IQ_BACKUP_RETENTON_DAYS": "3",
    }
    c = BackupConfig.from_env(env=env)
    assert [str(p.path) for p in c.paths] == ["/data", "/srv/x"]
    assert c.unknown_variables == ("GOFR_IQ_BACKUP_RETENTON_DAYS",)


@given(st.text(max_size=60))
def test_paths_parser_never_crashes(value: str) -> None:
    try:
        c = BackupConfig.from_env(env={"GOFR_PROJECT": "plot", "GOFR_PLOT_BACKUP_PATHS": value})
    except ConfigError as e:
        assert "GOFR_PLOT_BACKUP_PATHS" in str(e) and "\n" not in str(e).strip()
    else:
        names = [p.name for p in c.paths]
        assert len(names) == len(set(names)) and all("/" not in n for n in names)


@given(st.text(max_size=40))
def test_schedule_parser_never_crashes(value: str) -> None:
    try:
        c = BackupConfig.from_env(env={"GOFR_PROJECT": "plot", "GOFR_PLOT_BACKUP_SCHEDULE": value})
    except ConfigError as e:
        assert "GOFR_PLOT_BACKUP_SCHEDULE" in str(e)
    else:
        assert len(c.schedule.split()) == 5


# -- values refused at config load by every command: exit 2, one line, nothing written ------------
def _refused(tmp_path: Path, command: str, var: str, value: str, allowed: str, **other: str) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    (data / "storage").mkdir(parents=True)
    env = cli_env(data, backups, **{**other, var: value})
    before = snapshot(tmp_path)
    r = run_cli(command, env=env, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"gofr-backup: {var}={value!r} is not valid: "), lines[0]
    assert allowed in lines[0], lines[0]
    assert not backups.exists() and snapshot(tmp_path) == before, "something was written"


TZ_BAD = [
    ("TZ", "Mars/Olympus", "an IANA time zone name such as Europe/Berlin or UTC"),
    ("TZ", ":Mars/Olympus", "an IANA time zone name"),
    ("TZ", "../../../etc/passwd", "an IANA time zone name"),
    ("TZ", "/etc/hostname", "an IANA time zone name"),  # a file, not a zoneinfo file
]


@pytest.mark.parametrize("command", ["config", "now", "status", "run"])
@pytest.mark.parametrize("var,value,allowed", TZ_BAD, ids=[v for _, v, _ in TZ_BAD])
def test_an_unknown_time_zone_is_refused(
    tmp_path: Path, command: str, var: str, value: str, allowed: str
) -> None:
    """It used to fall back to the system zone without a word: archive names, `created` and the
    schedule in another zone than the operator asked for."""
    _refused(tmp_path, command, var, value, allowed)


@pytest.mark.parametrize("tz", ["Asia/Kolkata", ":Asia/Kolkata", "/usr/share/zoneinfo/Asia/Kolkata"])
def test_the_time_zone_is_honoured_in_each_spelling(app: dict[str, Any], tz: str) -> None:
    if tz.startswith("/") and not Path(tz).is_file():
        pytest.skip(f"{tz} is not installed here")
    r = run_cli("now", "--json", env={**app["env"], "TZ": tz})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["created"].endswith("+05:30")  # India: no DST, half-hour offset


NEVER = ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "15 3 31 2 *"]


@pytest.mark.parametrize("command", ["config", "now", "status", "run"])
@pytest.mark.parametrize("schedule", NEVER)
def test_a_schedule_that_never_fires_is_refused(tmp_path: Path, command: str, schedule: str) -> None:
    """`0 0 30 2 *` parses, but no day matches: `config` used to accept it, then `status` and `run`
    crashed (and the container restarted for ever)."""
    _refused(tmp_path, command, "GOFR_PLOT_BACKUP_SCHEDULE", schedule, "never fires")


@pytest.mark.parametrize("schedule", ["0 0 29 2 *", "0 0 30 2 1", "0 0 L 2 *"])
def test_a_rare_schedule_that_does_fire_is_accepted(tmp_path: Path, schedule: str) -> None:
    c = BackupConfig.from_env(env={"GOFR_PROJECT": "plot", "GOFR_PLOT_BACKUP_SCHEDULE": schedule})
    assert c.schedule == schedule  # Feb 29 (every 4 years); Mondays in February; Feb's last day


# (an endpoint on 127.0.0.1 where nothing listens: whatever happens, nothing leaves this machine)
REMOTE = {
    "GOFR_PLOT_BACKUP_REMOTE_URL": "s3://bucket/prefix",
    "GOFR_PLOT_BACKUP_REMOTE_ENDPOINT": "http://127.0.0.1:9",
}
OUT_OF_RANGE = [
    # variable, value, what the line must say is allowed, other variables needed
    ("GOFR_PLOT_BACKUP_RETENTION_DAYS", "1000000000", "from 1 to 36500", {}),
    ("GOFR_PLOT_BACKUP_RETENTION_DAYS", "36501", "from 1 to 36500", {}),
    ("GOFR_PLOT_BACKUP_MAX_COUNT", "100001", "from 1 to 100000", {}),
    ("GOFR_PLOT_BACKUP_WEEKLY_RETENTION_WEEKS", "5201", "from 1 to 5200", {}),
    ("GOFR_PLOT_BACKUP_MONTHLY_RETENTION_MONTHS", "1201", "from 1 to 1200", {}),
    ("GOFR_PLOT_BACKUP_LOCK_TIMEOUT", "25h", "at most 24h", {}),
    ("GOFR_PLOT_BACKUP_LOCK_TIMEOUT", "99999999999999999999", "at most 24h", {}),
    ("GOFR_PLOT_BACKUP_HOOK_TIMEOUT", "86401", "at most 24h", {}),
    ("GOFR_PLOT_BACKUP_REMOTE_MAX_LAG", "1001", "from 1 to 1000", REMOTE),
    ("GOFR_PLOT_BACKUP_REMOTE_RETENTION_DAYS", "1000000000", "from 1 to 36500", REMOTE),
    ("GOFR_PLOT_BACKUP_REMOTE_MAX_COUNT", "100001", "from 1 to 100000", REMOTE),
    ("GOFR_PLOT_BACKUP_REMOTE_WEEKLY_RETENTION_WEEKS", "5201", "from 1 to 5200", REMOTE),
    ("GOFR_PLOT_BACKUP_REMOTE_MONTHLY_RETENTION_MONTHS", "1201", "from 1 to 1200", REMOTE),
]


@pytest.mark.parametrize("command", ["config", "now"])
@pytest.mark.parametrize(
    "var,value,allowed,other",
    OUT_OF_RANGE,
    ids=[f"{v.split('BACKUP_')[1]}={x}" for v, x, _, _ in OUT_OF_RANGE],
)
def test_a_number_beyond_its_bound_is_refused(
    tmp_path: Path, command: str, var: str, value: str, allowed: str, other: dict[str, str]
) -> None:
    """RETENTION_DAYS=1000000000 used to pass config; the first prune then overflowed datetime."""
    _refused(tmp_path, command, var, value, allowed, **other)


@pytest.mark.parametrize(
    "var,value",
    [
        ("GOFR_PLOT_BACKUP_RETENTION_DAYS", "36500"),
        ("GOFR_PLOT_BACKUP_MAX_COUNT", "100000"),
        ("GOFR_PLOT_BACKUP_WEEKLY_RETENTION_WEEKS", "5200"),
        ("GOFR_PLOT_BACKUP_MONTHLY_RETENTION_MONTHS", "1200"),
        ("GOFR_PLOT_BACKUP_LOCK_TIMEOUT", "24h"),
        ("GOFR_PLOT_BACKUP_HOOK_TIMEOUT", "86400"),
    ],
)
def test_the_bounds_themselves_work_end_to_end(app: dict[str, Any], var: str, value: str) -> None:
    """The largest allowed values take a backup and a prune (no overflow anywhere)."""
    env = {**app["env"], var: value}
    assert run_cli("now", env=env).returncode == 0
    r = run_cli("prune", env=env)
    assert r.returncode == 0, r.stderr


PROCESS_BAD = [
    ("GOFR_BACKUP_PROGRESS_SECONDS", "abc", "a number of seconds more than 0 and at most 3600"),
    ("GOFR_BACKUP_PROGRESS_SECONDS", "0", "more than 0 and at most 3600"),
    ("GOFR_BACKUP_PROGRESS_SECONDS", "-5", "more than 0 and at most 3600"),
    ("GOFR_BACKUP_PROGRESS_SECONDS", "nan", "more than 0 and at most 3600"),
    ("GOFR_BACKUP_PROGRESS_SECONDS", "inf", "more than 0 and at most 3600"),
    ("GOFR_BACKUP_PROGRESS_SECONDS", "3601", "more than 0 and at most 3600"),
    ("GOFR_BACKUP_LOG_FORMAT", "xml", "expected text or json"),
    ("GOFR_BACKUP_LOG_FORMAT", "jsonl", "expected text or json"),
]


@pytest.mark.parametrize("command", ["config", "now", "status"])
@pytest.mark.parametrize("var,value,allowed", PROCESS_BAD, ids=[f"{v}={x}" for v, x, _ in PROCESS_BAD])
def test_bad_progress_interval_or_log_format_is_refused(
    tmp_path: Path, command: str, var: str, value: str, allowed: str
) -> None:
    """PROGRESS_SECONDS=abc used to crash `now` with a traceback; LOG_FORMAT=xml was ignored."""
    _refused(tmp_path, command, var, value, allowed)


@pytest.mark.parametrize("fmt,progress", [(" JSON ", "0.5"), ("text", ""), ("", "3600")])
def test_accepted_progress_interval_and_log_format(app: dict[str, Any], fmt: str, progress: str) -> None:
    env = {**app["env"], "GOFR_BACKUP_LOG_FORMAT": fmt, "GOFR_BACKUP_PROGRESS_SECONDS": progress}
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    if fmt.strip().lower() == "json":
        assert json.loads(first)["event"] == "backup.start"
    else:
        assert " INFO " in first and "backup started" in first and not first.startswith("{")


@pytest.mark.parametrize("command", ["config", "now", "status"])
@pytest.mark.parametrize("which", ["missing", "directory"])
def test_an_identity_file_that_is_not_a_file_is_refused(tmp_path: Path, command: str, which: str) -> None:
    """It used to be accepted, and only a restore or a full verify of an encrypted archive, perhaps
    months later, found out."""
    target = {"missing": "/nonexistent/age-key.txt", "directory": str(tmp_path)}[which]
    allowed = {"missing": "no such file", "directory": "is a directory"}[which]
    _refused(tmp_path, command, "GOFR_PLOT_BACKUP_IDENTITY_FILE", target, allowed)


def test_an_existing_identity_file_is_accepted(tmp_path: Path) -> None:
    key = tmp_path / "age-key.txt"
    key.write_text("# an identity file; its content is read when it is needed\n")
    env = {"GOFR_PROJECT": "plot", "GOFR_PLOT_BACKUP_IDENTITY_FILE": f" {key} "}
    assert BackupConfig.from_env(env=env).identity_file == key
