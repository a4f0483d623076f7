"""Configuration: environment variables -> one validated, immutable BackupConfig.

Every variable is ``GOFR_{P}_BACKUP_<NAME>`` where ``{P}`` is ``GOFR_PROJECT`` upper-cased with
``-`` replaced by ``_``. Every invalid value raises ConfigError with one line that names the
variable, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from . import log, observe_config, progress
from .codecs import CODECS, default_level
from .errors import ConfigError
from .fsutil import dir_id, lineage
from .layout import BackupLayout
from .schedule import zone_from_tz

PROJECT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
RESERVED_NAME_PREFIX = ".gofr"
# upper bounds of the numbers (README, Configuration): far beyond any real use, and small enough
# that dates and timeouts computed from them cannot overflow
MAX_DAYS = 36_500  # 100 years
MAX_WEEKS = 5_200
MAX_MONTHS = 1_200
MAX_ARCHIVES = 100_000
MAX_LAG = 1_000  # schedule intervals
MAX_WAIT = 86_400.0  # seconds: LOCK_TIMEOUT, HOOK_TIMEOUT

# name -> (default, description). The README's variable table is checked against this.
VARIABLES: dict[str, tuple[str, str]] = {
    "ENABLED": ("true", "run scheduled backups (false: the service idles and stays healthy)"),
    "SCHEDULE": ("0 2 * * *", "5-field cron expression, local time (TZ honoured)"),
    "RETENTION_DAYS": ("30", "daily tier: delete archives older than this many days"),
    "MAX_COUNT": ("90", "daily tier: then keep at most this many archives"),
    "PATHS": ("storage:storage,auth:auth,logs:../logs", "comma-separated name:path pairs"),
    "COMPRESSION": ("gzip", "gzip | bzip2 | xz | zstd | none"),
    "COMPRESSION_LEVEL": ("6", "codec level (gzip/bzip2 1-9, xz 0-9, zstd 1-19; zstd default 3)"),
    "CLEANUP_ON_START": ("true", "run housekeeping when the service starts"),
    "VERIFY_AFTER_BACKUP": ("true", "verify each archive right after writing it"),
    "SCRUB_MAX_BYTES": (
        "4G",
        "each scheduled run re-verifies the archives checked longest ago, up to this many bytes (0: off)",
    ),
    "MODE": ("full", "full | incremental: every archive a full copy, or chains of a full and incrementals"),
    "FULL_EVERY": ("7d", "incremental mode: start a new chain with a full when its full is older than this"),
    "ENABLE_WEEKLY": ("false", "keep the first backup of each ISO week in weekly/"),
    "WEEKLY_RETENTION_WEEKS": ("8", "weekly tier: delete archives older than this many weeks"),
    "ENABLE_MONTHLY": ("false", "keep the first backup of each month in monthly/"),
    "MONTHLY_RETENTION_MONTHS": ("12", "monthly tier: delete archives older than this many months"),
    "DATA_DIR": ("/data", "the data volume (read-only is fine)"),
    "DIR": ("/backups", "the backup directory"),
    "LOCK_TIMEOUT": ("600", "seconds a run waits for another gofr-backup process to finish"),
    "SQLITE_SNAPSHOT": ("true", "copy live SQLite databases with SQLite's online backup API"),
    "EXCLUDE": ("", "comma-separated glob patterns, relative to each path"),
    "PRE_HOOK": ("", "shell command run before each backup; failure aborts the backup"),
    "POST_HOOK": ("", "shell command run after each backup, whatever the outcome"),
    "HOOK_TIMEOUT": ("300", "seconds a hook may run before it is killed"),
    "UMASK": ("0027", "umask for everything written: 0027 gives 0640 files, 0077 gives 0600"),
    "SPACE_MARGIN": ("1.2", "pre-flight: refuse a backup unless free space >= estimate x this"),
    "ALLOW_EMPTY": (
        "false",
        "back up data that holds no regular file even after an archive that held files (an unmounted "
        "or emptied volume fails the backup otherwise)",
    ),
    "REMOTE_URL": ("", "s3://bucket/prefix: upload every verified backup there"),
    "REMOTE_ENDPOINT": ("", "S3 endpoint URL for non-AWS stores (MinIO, R2, Ceph RGW, B2)"),
    "REMOTE_REGION": ("us-east-1", "S3 region"),
    "REMOTE_ACCESS_KEY_ID": ("", "S3 access key (or _FILE, or the standard AWS chain)"),
    "REMOTE_ACCESS_KEY_ID_FILE": ("", "file holding the access key (docker secrets)"),
    "REMOTE_SECRET_ACCESS_KEY": ("", "S3 secret key (or _FILE, or the standard AWS chain)"),
    "REMOTE_SECRET_ACCESS_KEY_FILE": ("", "file holding the secret key (docker secrets)"),
    "REMOTE_MAX_LAG": ("3", "status is unhealthy after this many schedule intervals without an upload"),
    "REMOTE_RETENTION_DAYS": ("", "remote daily tier age limit (default: RETENTION_DAYS)"),
    "REMOTE_MAX_COUNT": ("", "remote daily tier count limit (default: MAX_COUNT)"),
    "REMOTE_WEEKLY_RETENTION_WEEKS": ("", "remote weekly age limit (default: WEEKLY_RETENTION_WEEKS)"),
    "REMOTE_MONTHLY_RETENTION_MONTHS": ("", "remote monthly age limit (default: MONTHLY_RETENTION_MONTHS)"),
    "ENCRYPT_RECIPIENTS": ("", "age public keys (comma-separated), or a file of them: encrypt uploads"),
    "ENCRYPT_LOCAL": ("false", "encrypt the local archives too"),
    "IDENTITY_FILE": ("", "age identity file, to decrypt for restore and full verification"),
    "NOTIFY_URLS": ("", "apprise URLs, comma-separated: where notifications go"),
    "NOTIFY_URLS_FILE": ("", "file holding the apprise URLs (docker secrets)"),
    "NOTIFY_ON": ("failure,warning,recovery", "failure, warning, recovery, success, drill, remote"),
    "NOTIFY_TIMEOUT": ("10", "seconds a notification or ping may take; a run waits at most this"),
    "PING_URL": ("", "healthchecks.io-style heartbeat URL: /start, success, /fail"),
    "PING_URL_FILE": ("", "file holding the ping URL (docker secrets)"),
    "METRICS_FILE": ("", "node_exporter textfile (*.prom), rewritten after every run"),
    "METRICS_ADDR": ("", "host:port for a Prometheus /metrics listener in the service"),
    "REPORT_FILE": ("report.html", "HTML history report refreshed after every run (off: none)"),
    "DRILL_SCHEDULE": ("30 2 * * 0", "restore drill: 5-field cron (empty: no scheduled drills)"),
    "DRILL_DIR": ("", "where a drill restores (default: .gofr-{project}.drill in the backup dir)"),
    "DRILL_COMMAND": ("", "probe run against the restored copy (GOFR_DRILL_DIR); non-zero fails"),
    "DRILL_TIMEOUT": ("300", "seconds the probe may run before its process group is killed"),
    "DRILL_JSON_GLOB": ("", "comma-separated globs of restored files that must parse as JSON"),
    "SPOT_CHECK_AFTER_BACKUP": ("true", "compare each scheduled backup with the live source"),
    "SPOT_CHECK_SAMPLE": ("1", "percent of unchanged source files re-read and compared by hash"),
    "SPOT_CHECK_TOLERANCE": ("0", "percent of old source files an archive may lack"),
    "SPOT_CHECK_RATE": ("20", "MB/s a spot check reads from the source at most"),
}


@dataclass(frozen=True)
class PathSpec:
    """One ``name:path`` entry of ``_PATHS``."""

    name: str
    raw: str  # as configured
    path: Path  # resolved (absolute, normalised, symlinks not resolved)


@dataclass(frozen=True)
class RemoteConfig:
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)
    endpoint: str | None
    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    max_lag: int = 3
    retention_days: int = 30
    max_count: int = 90
    weekly_weeks: int = 8
    monthly_months: int = 12

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class BackupConfig:
    project: str
    data_dir: Path
    backup_dir: Path
    paths: tuple[PathSpec, ...]
    enabled: bool = True
    schedule: str = "0 2 * * *"
    retention_days: int = 30
    max_count: int = 90
    compression: str = "gzip"
    compression_level: int = 6
    cleanup_on_start: bool = True
    verify_after_backup: bool = True
    scrub_max_bytes: int = 4 << 30
    mode: str = "full"  # full | incremental
    full_every: timedelta = timedelta(days=7)
    enable_weekly: bool = False
    weekly_retention_weeks: int = 8
    enable_monthly: bool = False
    monthly_retention_months: int = 12
    lock_timeout: float = 600.0
    sqlite_snapshot: bool = True
    exclude: tuple[str, ...] = ()
    pre_hook: str = ""
    post_hook: str = ""
    hook_timeout: float = 300.0
    umask: int = 0o027
    space_margin: float = 1.2
    allow_empty: bool = False
    remote: RemoteConfig | None = None
    encrypt_recipients: tuple[str, ...] = ()
    encrypt_local: bool = False
    identity_file: Path | None = None
    notify_urls: tuple[str, ...] = field(default=(), repr=False)
    notify_on: tuple[str, ...] = ("failure", "warning", "recovery")
    notify_timeout: float = 10.0
    ping_url: str | None = field(default=None, repr=False)
    metrics_file: Path | None = None
    metrics_addr: tuple[str, int] | None = None
    report_file: Path | None = None
    drill_schedule: str = "30 2 * * 0"  # "": no scheduled drills
    drill_dir: Path | None = None  # None: the backup dir
    drill_command: str = ""
    drill_timeout: float = 300.0
    drill_json_glob: tuple[str, ...] = ()
    spot_check_after_backup: bool = True
    spot_check_sample: float = 1.0  # percent
    spot_check_tolerance: float = 0.0  # percent
    spot_check_rate: float = 20.0  # MB/s
    unknown_variables: tuple[str, ...] = field(default=())

    @property
    def prefix(self) -> str:
        return env_prefix(self.project)

    @property
    def layout(self) -> BackupLayout:
        return BackupLayout(self.backup_dir, self.project)

    @classmethod
    def from_env(
        cls,
        project_name: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> BackupConfig:
        """Build the configuration from the environment (or ``env``).

        ``project_name``, ``data_dir`` and ``backup_dir`` override the environment (CLI options).
        """
        return load(env if env is not None else os.environ, project_name, data_dir, backup_dir)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d["backup_dir"] = str(self.backup_dir)
        d["paths"] = [{"name": p.name, "path": p.raw, "resolved": str(p.path)} for p in self.paths]
        d["unknown_variables"] = list(self.unknown_variables)
        d["identity_file"] = str(self.identity_file) if self.identity_file else None
        d["umask"] = f"{self.umask:04o}"  # as it is written: 0027
        d["full_every"] = period_text(self.full_every)
        from .observe_config import addr_text, redact_url

        # notification and ping URLs hold tokens: never print or log them
        d["notify_urls"] = [redact_url(u) for u in self.notify_urls]
        d["ping_url"] = redact_url(self.ping_url) if self.ping_url else None
        d["metrics_file"] = str(self.metrics_file) if self.metrics_file else None
        d["metrics_addr"] = addr_text(self.metrics_addr) if self.metrics_addr else None
        d["report_file"] = str(self.report_file) if self.report_file else None
        d["drill_dir"] = str(self.drill_dir) if self.drill_dir else None
        if self.remote is not None:  # never print or log credentials
            d["remote"]["url"] = self.remote.url
            for k in ("access_key_id", "secret_access_key"):
                d["remote"][k] = "***" if d["remote"][k] else None
        return d

    def log_fields(self) -> dict[str, Any]:
        """The configuration as log fields: anything that looks like a secret masked."""
        out: dict[str, Any] = {}
        for k, v in self.to_dict().items():
            if any(w in k.upper() for w in _SECRET_WORDS) and v:
                out[k] = "***"
            elif k == "paths":
                out[k] = ",".join(f"{p['name']}:{p['path']}" for p in v)
            else:
                out[k] = v
        return out


_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY")


def env_prefix(project: str) -> str:
    return f"GOFR_{project.upper().replace('-', '_')}_BACKUP_"


def _bad(var: str, value: str, allowed: str) -> ConfigError:
    return ConfigError(f"{var}={value!r} is not valid: {allowed}")


def parse_bool(var: str, value: str) -> bool:
    v = value.strip().lower()
    if v in TRUE_WORDS:
        return True
    if v in FALSE_WORDS:
        return False
    return _raise(_bad(var, value, "expected true/false, 1/0, yes/no, y/n or on/off (any case)"))


def _raise(exc: Exception) -> Any:
    raise exc


def parse_int(var: str, value: str, lo: int, hi: int | None = None) -> int:
    rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
    try:
        n = int(value.strip(), 10)
    except ValueError:
        raise _bad(var, value, f"expected a whole number {rng}") from None
    if n < lo or (hi is not None and n > hi):
        raise _bad(var, value, f"expected a whole number {rng}")
    return n


_SIZE_RE = re.compile(r"^\s*(\d{1,20})\s*([KMGTP]?)\s*$", re.IGNORECASE)
MAX_SIZE = 1 << 50  # 1P


def parse_size(var: str, value: str) -> int:
    """Bytes: a whole number, optionally followed by K, M, G, T or P (powers of 1024)."""
    m = _SIZE_RE.match(value)
    if not m:
        raise _bad(
            var, value, "expected a whole number of bytes, optionally with K, M, G, T or P (e.g. 0, 500M, 4G)"
        )
    n = int(m.group(1)) << (10 * "KMGTP".find(m.group(2).upper()) + 10 if m.group(2) else 0)
    if n > MAX_SIZE:
        raise _bad(var, value, "expected at most 1P")
    return n


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(var: str, value: str) -> float:
    m = _DURATION_RE.match(value)
    if not m:
        raise _bad(var, value, "expected seconds, or a number followed by s, m or h (e.g. 90, 10m, 1h)")
    n = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if n <= 0:
        raise _bad(var, value, "expected a duration greater than 0")
    if n > MAX_WAIT:
        raise _bad(var, value, f"expected a duration of at most 24h ({MAX_WAIT:.0f} seconds)")
    return n


MODES = ("full", "incremental")


def parse_mode(var: str, value: str) -> str:
    v = value.strip().lower()
    if v not in MODES:
        raise _bad(var, value, "expected full or incremental")
    return v


_PERIOD_RE = re.compile(r"^\s*(\d{1,6})\s*(h|d|w)\s*$", re.IGNORECASE)


def parse_period(var: str, value: str) -> timedelta:
    """FULL_EVERY: a whole number of hours, days or weeks (12h, 7d, 2w), from 1h to 100 years."""
    m = _PERIOD_RE.match(value)
    if not m:
        raise _bad(var, value, "expected a whole number followed by h, d or w (e.g. 12h, 7d, 30d, 2w)")
    n = int(m.group(1)) * {"h": 1, "d": 24, "w": 168}[m.group(2).lower()]
    if not 1 <= n <= MAX_DAYS * 24:
        raise _bad(var, value, "expected a duration from 1h to 36500d")
    return timedelta(hours=n)


def period_text(td: timedelta) -> str:
    """A FULL_EVERY value as it is written: 7d, 2w, 36h."""
    h = int(td.total_seconds()) // 3600
    return f"{h // 168}w" if h % 168 == 0 else f"{h // 24}d" if h % 24 == 0 else f"{h}h"


def parse_schedule(var: str, value: str, zone: tzinfo = UTC) -> str:
    from croniter import CroniterError, croniter

    expr = " ".join(value.split())
    fields = expr.split(" ") if expr else []
    if len(fields) != 5:
        raise _bad(
            var, value, f"expected exactly 5 cron fields (minute hour day month weekday), got {len(fields)}"
        )
    try:
        ok = croniter.is_valid(expr)
    except Exception:  # noqa: BLE001 - any parser failure means invalid
        ok = False
    if not ok:
        raise _bad(var, value, "not a valid cron expression (minute hour day month weekday)")
    # `0 0 30 2 *` parses but no day matches: the service needs the next and the previous run
    now = datetime.now(zone)
    try:
        croniter(expr, now).get_next(datetime)
        croniter(expr, now).get_prev(datetime)
    except CroniterError:
        raise _bad(
            var,
            value,
            "it never fires (no date matches it, like 30 February); expected a schedule that runs",
        ) from None
    return expr


def is_path_name(name: object) -> bool:
    """A PATHS name: one path segment (no '/', NUL, '.' or '..'), at most 64 characters, not
    reserved. The same rule holds for the names an archive's header declares (archive_format.py)."""
    return (
        isinstance(name, str)
        and NAME_RE.fullmatch(name) is not None
        and not name.startswith(RESERVED_NAME_PREFIX)
        and name not in (".", "..")
    )


def parse_paths(var: str, value: str, data_dir: Path) -> tuple[PathSpec, ...]:
    items = [s.strip() for s in value.split(",")]
    if not value.strip() or any(not s for s in items):
        raise _bad(var, value, "expected comma-separated name:path pairs, e.g. storage:storage,logs:../logs")
    out: list[PathSpec] = []
    seen: set[str] = set()
    for item in items:
        name, sep, raw = item.partition(":")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise _bad(var, value, f"entry {item!r} is not name:path")
        if not is_path_name(name):
            raise _bad(
                var,
                value,
                f"name {name!r} must be one path segment of letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit)",
            )
        if name in seen:
            raise _bad(var, value, f"name {name!r} is used twice; names must be unique")
        if "\x00" in raw:
            raise _bad(var, value, f"path of {name!r} contains a NUL byte")
        seen.add(name)
        p = Path(raw)
        resolved = Path(os.path.normpath(p if p.is_absolute() else data_dir / p))
        if resolved == Path("/"):
            raise _bad(var, value, f"path of {name!r} resolves to '/', which cannot be backed up or restored")
        out.append(PathSpec(name=name, raw=raw, path=resolved))
    return tuple(out)


def check_paths_outside_backups(var: str, value: str, cfg: BackupConfig) -> None:
    """A path that is the backup directory (``data:.`` with DIR = DATA_DIR) or lies inside its
    archives would archive the backups themselves. The backup dir *inside* a path is fine: it is
    left out of the archive (scan.py); symlinks are checked again at run time."""
    lay = cfg.layout
    for p in cfg.paths:
        if p.path == cfg.backup_dir:
            raise _bad(
                var,
                value,
                f"path of {p.name!r} ({p.path}) is the backup directory itself; keep the backups "
                "outside the data they back up (DIR)",
            )
        for reserved in (
            *(lay.tier_dir(t) for t in ("daily", "weekly", "monthly")),
            lay.tmp,
            lay.drill_dir(),
        ):
            if p.path == reserved or reserved in p.path.parents:
                raise _bad(
                    var,
                    value,
                    f"path of {p.name!r} ({p.path}) is inside the backup directory's {reserved.name}/",
                )


def parse_umask(var: str, value: str) -> int:
    try:
        n = int(value.strip(), 8)
    except ValueError:
        raise _bad(var, value, "expected an octal umask such as 0027 or 0077") from None
    if not 0 <= n <= 0o777 or n & 0o027 != 0o027:
        raise _bad(
            var,
            value,
            "expected an octal umask that removes group write and all other access "
            "(0027 or 0077): backups hold secrets",
        )
    return n


def _number(var: str, value: str, lo: float, hi: float, what: str, example: str) -> float:
    """A number from ``lo`` to ``hi``: one error line that says what is expected either way."""
    try:
        n = float(value.strip())
    except ValueError:
        raise _bad(var, value, f"expected {what}, e.g. {example}") from None
    if not lo <= n <= hi:  # also refuses nan
        raise _bad(var, value, f"expected {what} from {lo:g} to {hi:g}")
    return n


def parse_margin(var: str, value: str) -> float:
    return _number(var, value, 1.0, 100, "a number", "1.2")


def parse_percent(var: str, value: str) -> float:
    return _number(var, value.strip().removesuffix("%"), 0, 100, "a percentage", "1 or 0.5")


def parse_rate(var: str, value: str) -> float:
    return _number(var, value, 0.1, 100_000, "MB per second", "20")


def parse_globs(var: str, value: str) -> tuple[str, ...]:
    """DRILL_JSON_GLOB: comma-separated globs (the EXCLUDE syntax), or empty."""
    if not value.strip():
        return ()
    items = tuple(s.strip() for s in value.split(","))
    for item in items:
        if not item or "\x00" in item or item.count("[") != item.count("]"):
            raise _bad(var, value, f"pattern {item!r} is empty or has an unclosed [; expected e.g. *.json")
    return items


def parse_drill_schedule(var: str, value: str) -> str:
    return parse_schedule(var, value) if value.strip() else ""


def parse_drill_dir(
    var: str, value: str, data_dir: Path, paths: tuple[PathSpec, ...], scratch_name: str
) -> Path | None:
    """Empty: the backup dir. Never inside the data dir or a backed-up path: the restored copy would
    land in the app's volume and in the next backup."""
    if not value.strip():
        return None
    if not value.strip().startswith("/"):
        raise _bad(var, value, "expected an absolute path (a tmpfs or a volume mounted for drills)")
    p = Path(os.path.abspath(value.strip()))
    # compared as resolved paths, both ways: through a link it is the same data, and the scratch
    # dir (which a drill removes, and a backup removes when a killed drill left it) must hold none
    real = Path(os.path.realpath(p))
    scratch = real / scratch_name
    # and by identity (st_dev, st_ino): a bind mount shows the same directory under another name
    mine = {ident for _, ident in lineage(real)}
    scratch_id = dir_id(scratch)
    for what, root in [("the data directory", data_dir)] + [(f"the path {s.name}", s.path) for s in paths]:
        rroot = Path(os.path.realpath(root))
        root_id = dir_id(rroot)
        if (
            real == rroot
            or real.is_relative_to(rroot)
            or rroot.is_relative_to(scratch)
            or (root_id is not None and root_id in mine)
            or (scratch_id is not None and any(ident == scratch_id for _, ident in lineage(rroot)))
        ):
            raise _bad(
                var,
                value,
                f"it overlaps {what} ({root}): a drill there would write into (or remove) the app's "
                "data; leave it empty (the backup dir) or name a tmpfs",
            )
    if not p.is_dir():
        raise _bad(
            var,
            value,
            "it is not a directory" if os.path.lexists(p) else "it does not exist: create or mount it first",
        )
    return p


def parse_excludes(var: str, value: str) -> tuple[str, ...]:
    if not value.strip():
        return ()
    items = [s.strip() for s in value.split(",")]
    for item in items:
        if not item or item in ("/", "**", "*") or "\x00" in item:
            raise _bad(
                var,
                value,
                f"pattern {item!r} would exclude everything or is empty; "
                "expected globs such as *.tmp,cache/**",
            )
        if item.count("[") != item.count("]"):
            raise _bad(var, value, f"pattern {item!r} has an unclosed [")
    return tuple(items)


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _secret(get: Callable[[str], tuple[str, str]], name: str) -> str | None:
    var, value = get(name)
    fvar, fpath = get(name + "_FILE")
    if value.strip() and fpath.strip():
        raise _bad(fvar, fpath, f"set either {var} or {fvar}, not both")
    if fpath.strip():
        try:
            return Path(fpath.strip()).read_text().strip() or None
        except OSError as e:
            raise _bad(fvar, fpath, f"cannot read the file: {e.strerror}") from None
    return value.strip() or None


def parse_remote(env: Mapping[str, str], get: Callable[[str], tuple[str, str]]) -> RemoteConfig | None:
    var, url = get("REMOTE_URL")
    if not url.strip():
        return None
    m = re.match(r"^s3://([^/]+)/?(.*)$", url.strip())
    if not m or not _BUCKET_RE.match(m.group(1)):
        raise _bad(
            var,
            url,
            "expected s3://bucket/prefix (a bucket name of 3-63 lower-case letters, digits, '.', '-')",
        )
    prefix = m.group(2).strip("/")
    evar, endpoint = get("REMOTE_ENDPOINT")
    if endpoint.strip() and not re.match(r"^https?://[^/\s]+", endpoint.strip()):
        raise _bad(evar, endpoint, "expected an http:// or https:// URL, e.g. https://minio.example:9000")
    key, secret = _secret(get, "REMOTE_ACCESS_KEY_ID"), _secret(get, "REMOTE_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise _bad(
            get("REMOTE_SECRET_ACCESS_KEY")[0] if key else get("REMOTE_ACCESS_KEY_ID")[0],
            "",
            "set both the access key id and the secret access key, or neither (standard AWS chain)",
        )

    def inherit(name: str, local: str, hi: int) -> int:
        v, raw = get(name)
        return parse_int(v, raw, 1, hi) if raw.strip() else parse_int(*get(local), 1, hi)

    return RemoteConfig(
        bucket=m.group(1),
        prefix=prefix,
        endpoint=endpoint.strip() or None,
        region=get("REMOTE_REGION")[1].strip() or "us-east-1",
        access_key_id=key,
        secret_access_key=secret,
        max_lag=parse_int(*get("REMOTE_MAX_LAG"), 1, MAX_LAG),
        retention_days=inherit("REMOTE_RETENTION_DAYS", "RETENTION_DAYS", MAX_DAYS),
        max_count=inherit("REMOTE_MAX_COUNT", "MAX_COUNT", MAX_ARCHIVES),
        weekly_weeks=inherit("REMOTE_WEEKLY_RETENTION_WEEKS", "WEEKLY_RETENTION_WEEKS", MAX_WEEKS),
        monthly_months=inherit("REMOTE_MONTHLY_RETENTION_MONTHS", "MONTHLY_RETENTION_MONTHS", MAX_MONTHS),
    )


def parse_recipients(var: str, value: str) -> tuple[str, ...]:
    """age public keys, comma-separated, or the path of a file with one per line (# comments)."""
    v = value.strip()
    if not v:
        return ()
    if v.startswith("age1"):
        keys = [k.strip() for k in v.split(",") if k.strip()]
    else:
        try:
            lines = Path(v).read_text().splitlines()
        except OSError as e:
            raise _bad(
                var, value, f"not age public keys (age1...) and not a readable file ({e.strerror})"
            ) from None
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not keys:
        raise _bad(var, value, "no age public keys found")
    import pyrage

    for k in keys:
        try:
            pyrage.x25519.Recipient.from_str(k)
        except Exception:  # noqa: BLE001 - pyrage raises its own types
            raise _bad(var, value, f"{k[:24]!r} is not an age public key (age1...)") from None
    return tuple(keys)


def parse_identity(var: str, value: str) -> Path | None:
    """The age identity file: it must exist and be a file. Its content is read only when it is
    needed (restore, full verify), by whoever runs those; a service that may not read it is fine."""
    v = value.strip()
    if not v:
        return None
    p = Path(v)
    try:
        if p.is_dir():
            raise _bad(var, value, "it is a directory; expected the path of an age identity file")
        if not p.exists():
            raise _bad(var, value, "no such file; expected the path of an age identity file")
    except PermissionError:  # a directory on the way cannot be searched: leave it to the user
        pass
    return p


def parse_project(source: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise ConfigError(
            "GOFR_PROJECT is not set: set it to the project name, e.g. GOFR_PROJECT=plot (or pass --project)"
        )
    v = value.strip()
    if not PROJECT_RE.match(v):
        raise _bad(source, v, "expected lower-case letters, digits and '-' (e.g. plot, doc, iq)")
    return v


def load(
    env: Mapping[str, str],
    project_name: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
) -> BackupConfig:
    source = "--project" if project_name is not None else "GOFR_PROJECT"
    project = parse_project(source, project_name if project_name is not None else env.get("GOFR_PROJECT"))
    prefix = env_prefix(project)

    def get(name: str) -> tuple[str, str]:
        var = prefix + name
        return var, env.get(var, VARIABLES[name][0])

    def path_of(name: str, override: str | os.PathLike[str] | None) -> Path:
        var, raw = get(name)
        if override is not None:
            var, raw = ("--data-dir" if name == "DATA_DIR" else "--backup-dir"), os.fspath(override)
        if not raw.strip():
            raise _bad(var, raw, "expected a directory path")
        p = Path(os.path.abspath(raw))
        if os.path.lexists(p) and not p.is_dir():
            raise _bad(var, raw, "it is not a directory (a file is in the way)")
        return p

    ddir = path_of("DATA_DIR", data_dir)
    bdir = path_of("DIR", backup_dir)
    zone = zone_from_tz(env.get("TZ"))  # the zone of archive names, `created` and the schedule
    # read by log.py and progress.py, checked here so that a bad value stops every command
    log.log_format(env.get(log.FORMAT_VAR))
    progress.interval(env.get(progress.SECONDS_VAR), tty=False)

    comp_var, comp = get("COMPRESSION")
    comp = comp.strip().lower()
    if comp not in CODECS:
        raise _bad(comp_var, comp, "expected one of " + ", ".join(CODECS))
    lvl_var = prefix + "COMPRESSION_LEVEL"
    codec = CODECS[comp]
    if lvl_var in env:
        level = parse_int(lvl_var, env[lvl_var], codec.min_level, codec.max_level)
    else:
        level = default_level(comp)

    known = {prefix + k for k in VARIABLES} | extra_variable_names(prefix)
    unknown = tuple(sorted(k for k in env if k.startswith(prefix) and k not in known))

    paths = parse_paths(*get("PATHS"), ddir)
    cfg = BackupConfig(
        project=project,
        data_dir=ddir,
        backup_dir=bdir,
        paths=paths,
        enabled=parse_bool(*get("ENABLED")),
        schedule=parse_schedule(*get("SCHEDULE"), zone),
        retention_days=parse_int(*get("RETENTION_DAYS"), 1, MAX_DAYS),
        max_count=parse_int(*get("MAX_COUNT"), 1, MAX_ARCHIVES),
        compression=comp,
        compression_level=level,
        cleanup_on_start=parse_bool(*get("CLEANUP_ON_START")),
        verify_after_backup=parse_bool(*get("VERIFY_AFTER_BACKUP")),
        scrub_max_bytes=parse_size(*get("SCRUB_MAX_BYTES")),
        mode=parse_mode(*get("MODE")),
        full_every=parse_period(*get("FULL_EVERY")),
        enable_weekly=parse_bool(*get("ENABLE_WEEKLY")),
        weekly_retention_weeks=parse_int(*get("WEEKLY_RETENTION_WEEKS"), 1, MAX_WEEKS),
        enable_monthly=parse_bool(*get("ENABLE_MONTHLY")),
        monthly_retention_months=parse_int(*get("MONTHLY_RETENTION_MONTHS"), 1, MAX_MONTHS),
        lock_timeout=parse_duration(*get("LOCK_TIMEOUT")),
        sqlite_snapshot=parse_bool(*get("SQLITE_SNAPSHOT")),
        exclude=parse_excludes(*get("EXCLUDE")),
        pre_hook=get("PRE_HOOK")[1].strip(),
        post_hook=get("POST_HOOK")[1].strip(),
        hook_timeout=parse_duration(*get("HOOK_TIMEOUT")),
        umask=parse_umask(*get("UMASK")),
        space_margin=parse_margin(*get("SPACE_MARGIN")),
        allow_empty=parse_bool(*get("ALLOW_EMPTY")),
        remote=parse_remote(env, get),
        encrypt_recipients=parse_recipients(*get("ENCRYPT_RECIPIENTS")),
        encrypt_local=parse_bool(*get("ENCRYPT_LOCAL")),
        identity_file=parse_identity(*get("IDENTITY_FILE")),
        **observe_config.parse(get, lambda name: _secret(get, name), bdir),
        drill_schedule=parse_drill_schedule(*get("DRILL_SCHEDULE")),
        drill_dir=parse_drill_dir(*get("DRILL_DIR"), ddir, paths, f".gofr-{project}.drill"),
        drill_command=get("DRILL_COMMAND")[1].strip(),
        drill_timeout=parse_duration(*get("DRILL_TIMEOUT")),
        drill_json_glob=parse_globs(*get("DRILL_JSON_GLOB")),
        spot_check_after_backup=parse_bool(*get("SPOT_CHECK_AFTER_BACKUP")),
        spot_check_sample=parse_percent(*get("SPOT_CHECK_SAMPLE")),
        spot_check_tolerance=parse_percent(*get("SPOT_CHECK_TOLERANCE")),
        spot_check_rate=parse_rate(*get("SPOT_CHECK_RATE")),
        unknown_variables=unknown,
    )
    check_paths_outside_backups(*get("PATHS"), cfg)
    if cfg.encrypt_local and not cfg.encrypt_recipients:
        raise _bad(
            prefix + "ENCRYPT_LOCAL", "true", f"set {prefix}ENCRYPT_RECIPIENTS too (whom to encrypt for)"
        )
    if cfg.mode == "incremental" and cfg.encrypt_local:
        raise _bad(
            prefix + "MODE",
            "incremental",
            f"it cannot be combined with {prefix}ENCRYPT_LOCAL=true (each incremental archive keeps a "
            "plaintext .snap beside it that lists every file name); use MODE=full with ENCRYPT_LOCAL",
        )
    return cfg


def extra_variable_names(prefix: str) -> set[str]:
    """Variables read by other modules (none yet); kept here so typos can be reported."""
    return set()
