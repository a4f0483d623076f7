"""Configuration: environment variables -> one validated, immutable BackupConfig.

Every variable is ``GOFR_{P}_BACKUP_<NAME>`` where ``{P}`` is ``GOFR_PROJECT`` upper-cased with
``-`` replaced by ``_``. Every invalid value raises ConfigError with one line that names the
variable, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .codecs import CODECS, default_level
from .errors import ConfigError

PROJECT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TIERS = ("daily", "weekly", "monthly")
TRUE_WORDS = {"true", "1", "yes", "y", "on"}
FALSE_WORDS = {"false", "0", "no", "n", "off"}
RESERVED_NAME_PREFIX = ".gofr"

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
}


@dataclass(frozen=True)
class PathSpec:
    """One ``name:path`` entry of ``_PATHS``."""

    name: str
    raw: str  # as configured
    path: Path  # resolved (absolute, normalised, symlinks not resolved)


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
    unknown_variables: tuple[str, ...] = field(default=())

    @property
    def prefix(self) -> str:
        return env_prefix(self.project)

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
        return d


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
    return _raise(_bad(var, value, "expected true/false, 1/0 or yes/no"))


def _raise(exc: Exception) -> Any:
    raise exc


def parse_int(var: str, value: str, lo: int, hi: int | None = None) -> int:
    try:
        n = int(value.strip(), 10)
    except ValueError:
        raise _bad(var, value, f"expected a whole number >= {lo}") from None
    if n < lo or (hi is not None and n > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise _bad(var, value, f"expected a whole number {rng}")
    return n


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(var: str, value: str) -> float:
    m = _DURATION_RE.match(value)
    if not m:
        raise _bad(var, value, "expected seconds, or a number followed by s, m or h (e.g. 90, 10m, 1h)")
    n = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if n <= 0:
        raise _bad(var, value, "expected a duration greater than 0")
    return n


def parse_schedule(var: str, value: str) -> str:
    from croniter import croniter

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
    return expr


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
        if not NAME_RE.match(name) or name.startswith(RESERVED_NAME_PREFIX) or name in (".", ".."):
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


def parse_margin(var: str, value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise _bad(var, value, "expected a number >= 1.0, e.g. 1.2") from None
    if not 1.0 <= n <= 100:
        raise _bad(var, value, "expected a number from 1.0 to 100")
    return n


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
        return Path(os.path.abspath(raw))

    ddir = path_of("DATA_DIR", data_dir)
    bdir = path_of("DIR", backup_dir)

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

    return BackupConfig(
        project=project,
        data_dir=ddir,
        backup_dir=bdir,
        paths=parse_paths(*get("PATHS"), ddir),
        enabled=parse_bool(*get("ENABLED")),
        schedule=parse_schedule(*get("SCHEDULE")),
        retention_days=parse_int(*get("RETENTION_DAYS"), 1),
        max_count=parse_int(*get("MAX_COUNT"), 1),
        compression=comp,
        compression_level=level,
        cleanup_on_start=parse_bool(*get("CLEANUP_ON_START")),
        verify_after_backup=parse_bool(*get("VERIFY_AFTER_BACKUP")),
        enable_weekly=parse_bool(*get("ENABLE_WEEKLY")),
        weekly_retention_weeks=parse_int(*get("WEEKLY_RETENTION_WEEKS"), 1),
        enable_monthly=parse_bool(*get("ENABLE_MONTHLY")),
        monthly_retention_months=parse_int(*get("MONTHLY_RETENTION_MONTHS"), 1),
        lock_timeout=parse_duration(*get("LOCK_TIMEOUT")),
        sqlite_snapshot=parse_bool(*get("SQLITE_SNAPSHOT")),
        exclude=parse_excludes(*get("EXCLUDE")),
        pre_hook=get("PRE_HOOK")[1].strip(),
        post_hook=get("POST_HOOK")[1].strip(),
        hook_timeout=parse_duration(*get("HOOK_TIMEOUT")),
        umask=parse_umask(*get("UMASK")),
        space_margin=parse_margin(*get("SPACE_MARGIN")),
        unknown_variables=unknown,
    )


def extra_variable_names(prefix: str) -> set[str]:
    """Variables read by other modules (none yet); kept here so typos can be reported."""
    return set()
