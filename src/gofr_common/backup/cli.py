"""``gofr-backup``: the command line. It parses, prompts and prints; the work is done by the
library (service.py and the stage modules), which can do everything the CLI does.

Exit codes: 0 ok; 1 operation failed; 2 usage or configuration error; 3 completed with warnings
(some data could not be read). User errors print one line on stderr and change nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, BackupError, ConfigError, one_line
from .fsutil import json_text
from .layout import TIERS

if TYPE_CHECKING:
    from .config import BackupConfig
    from .manifest import Entry
    from .restore import RestorePlan
    from .service import BackupService

PROG = "gofr-backup"
JSON_HELP = "print the result as JSON on stdout"
LATEST_HELP = "the newest archive of the project that has not failed verification"
RESTORE_LATEST_HELP = "the newest archive of the project that is complete and verified"


_json_errors = False  # --json was asked for: errors are also printed as JSON on stdout


def _error(message: str, code: int) -> int:
    """Every error: one line on stderr, and under --json also {"error", "exit_code"} on stdout.
    Control characters the user typed (a stray \\r, a newline in a name) are shown escaped, so
    the line stays one line."""
    message = one_line(message)
    sys.stderr.write(f"{PROG}: {message}\n")
    if _json_errors:
        print(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    return code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SystemExit(_error(f"{message} (see {self.prog} --help)", EXIT_USAGE))


def _globals(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--project", default=d, help="project name (overrides GOFR_PROJECT)")
    p.add_argument("--data-dir", default=d, help="data directory (overrides GOFR_{P}_BACKUP_DATA_DIR)")
    p.add_argument("--backup-dir", default=d, help="backup directory (overrides GOFR_{P}_BACKUP_DIR)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Backups for GOFR services: archive, verify, list, restore, prune.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _globals(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        _globals(sp, suppress=True)
        return sp

    c = cmd("config", "print the effective, validated configuration")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    c = cmd("now", "make one backup now, verify it, and prune its tier")
    c.add_argument("--tier", choices=TIERS, default="daily", help="the tier to write (default: daily)")
    c.add_argument("--json", action="store_true", help="print the manifest entry as JSON")

    c = cmd("list", "list backups by tier, newest first")
    c.add_argument("--tier", choices=TIERS, help="only this tier")
    c.add_argument("--remote", action="store_true", help="list the off-site copies (REMOTE_URL)")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    c = cmd("verify", "check archives against their checksums and read them to the end")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?", help="archive file name (or path)")
    g.add_argument("--latest", action="store_true", help=LATEST_HELP)
    g.add_argument("--all", action="store_true", help="every archive of the project")
    c.add_argument(
        "--chain",
        action="store_true",
        help="check NAME's (or --latest's) whole chain: every archive from its full to it, and each "
        "link (the manifest's and the archives' own headers)",
    )
    c.add_argument(
        "--remote", action="store_true", help="verify the off-site copies, streamed (no local disk)"
    )
    c.add_argument("--identity", help="age identity file: also check what is inside encrypted archives")
    c.add_argument(
        "--repair",
        action="store_true",
        help="rewrite NAME's missing or damaged .sha256 from the manifest's checksum, only if the "
        "archive reads to its end and matches it",
    )
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    c = cmd("restore", "verify an archive and restore it (replaces the configured paths)")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("name", nargs="?", help="archive file name (or path)")
    g.add_argument("--latest", action="store_true", help=RESTORE_LATEST_HELP)
    g.add_argument("--interactive", action="store_true", help="choose from a numbered menu")
    c.add_argument("--target", help="restore a copy under DIR/<name> instead of the configured paths")
    c.add_argument("--only", help="comma-separated names to restore (default: all in the archive)")
    c.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    c.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="restore an archive that could not read everything; what it never saved is left as it is",
    )
    c.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    c.add_argument("--from-remote", action="store_true", help="fetch the archive from REMOTE_URL")
    c.add_argument("--identity", help="age identity file, for encrypted archives (or IDENTITY_FILE)")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    def proof(name: str, help: str) -> argparse.ArgumentParser:
        """drill and check-source: NAME or --latest (the default), --identity, --json."""
        c = cmd(name, help)
        g = c.add_mutually_exclusive_group()
        g.add_argument("name", nargs="?", help="archive file name (or path); default: the newest")
        g.add_argument("--latest", action="store_true", help=LATEST_HELP + " (the default)")
        c.add_argument("--identity", help="age identity file, for encrypted archives (or IDENTITY_FILE)")
        c.add_argument("--json", action="store_true", help=JSON_HELP)
        return c

    proof("drill", "restore an archive into a scratch dir and prove it: hashes, SQLite, JSON, probe")
    c = proof("check-source", "compare an archive with the live source: missing files, content drift")
    c.add_argument(
        "--sample",
        metavar="PERCENT",
        help="percent of unchanged files re-read and compared by hash (default: SPOT_CHECK_SAMPLE)",
    )

    c = cmd("prune", "apply retention now and print what is removed and why")
    c.add_argument("--dry-run", action="store_true", help="show what would be removed; remove nothing")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    c = cmd("status", "health: last success, last failure, next run, tiers (exit 1 when unhealthy)")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    c = cmd("sync", "upload to REMOTE_URL whatever is missing there, then apply remote retention")
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    cmd("metrics", "print the Prometheus metrics (the same as METRICS_FILE and METRICS_ADDR)")

    c = cmd("report", "write the history report: one self-contained HTML file with charts")
    c.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")

    cmd("run", "run the scheduled service (the container's main process)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    global _json_errors
    # a name that is not valid UTF-8 (a lone surrogate) is printed escaped, as in error lines,
    # whatever the locale (a UTF-8 locale's stdout raised UnicodeEncodeError on it, the C
    # locale's wrote its raw bytes)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    argv = list(sys.argv[1:] if argv is None else argv)
    _json_errors = "--json" in argv
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BackupError as e:
        return _error(str(e), e.exit_code)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_FAILED)
    except BrokenPipeError:
        # the reader went away (`| head`): what the command found was not all reported (and a
        # `verify --all` stopped early), so never exit 0 for it; stdout goes nowhere from now on,
        # so that the interpreter's own flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write(f"{PROG}: output cut short: stdout was closed before the command finished\n")
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - a bug of ours: still one line, the traceback in the debug log
        from .log import event
        from .run import failure_text

        event("cli.traceback", traceback.format_exc(), level=logging.DEBUG)
        return _error(failure_text(e), EXIT_FAILED)


# options whose empty value (an unset shell variable: --target "$COPY_DIR") must never be taken
# as "not given": --target '' would restore in place. --only '' has its own line (restore.py).
_NOT_EMPTY = {
    "target": (
        "--target",
        "name the directory to restore copies into, or leave --target out to restore in place",
    ),
    "identity": ("--identity", "name the age identity file, or leave --identity out"),
    "output": ("--output", "name the file to write, or - for stdout"),
    "name": ("NAME", "give an archive file name, or --latest"),
    "project": ("--project ''", "name the project (plot, doc, iq), or leave --project out for GOFR_PROJECT"),
}


def _refuse_empty(args: argparse.Namespace) -> None:
    for dest, (flag, what) in _NOT_EMPTY.items():
        if getattr(args, dest, None) == "":
            raise ConfigError(f"{flag} is empty (an unset shell variable?): {what}; nothing was changed")


def _dispatch(args: argparse.Namespace) -> int:
    from . import log as glog
    from .config import BackupConfig

    _refuse_empty(args)
    config = BackupConfig.from_env(args.project, data_dir=args.data_dir, backup_dir=args.backup_dir)
    os.umask(config.umask)  # archives, sidecars, manifest, state: 0640 (0027) or 0600 (0077)
    # the service logs to stdout (docker logs); commands keep stdout for their output
    glog.setup(sys.stdout if args.command == "run" else sys.stderr)
    if args.command in ("now", "verify", "restore", "run", "drill", "check-source"):
        from . import progress

        progress.enable()
    # commands that read archives never create the backup directory (or anything in it)
    local = args.command in ("list", "verify", "status", "drill", "check-source") and not getattr(
        args, "remote", False
    )
    if local and not config.backup_dir.is_dir():
        raise ConfigError(
            f"the backup directory {config.backup_dir} does not exist: check {config.prefix}DIR "
            "(or --backup-dir), and that the backup volume is mounted"
        )
    return COMMANDS[args.command](config, args)


def _service(config: BackupConfig, stop_on_signals: bool = True) -> BackupService:
    """The library object; SIGTERM/SIGINT stop what it is doing (cleanly, leaving nothing)."""
    from .service import BackupService

    svc = BackupService(config)
    if stop_on_signals:

        def h(signum: int, frame: Any) -> None:
            svc.stop_event.set()

        signal.signal(signal.SIGTERM, h)
        signal.signal(signal.SIGINT, h)
    return svc


def _print_json(obj: Any) -> None:
    print(json_text(obj, indent=2, default=str))


def _now() -> datetime:
    from .schedule import Clock

    return Clock().now()


# -- presentation ------------------------------------------------------------------------------------
def human_size(n: Any) -> str:
    if n is None:
        return "?"
    f = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if f < 1000 or unit == "TB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1000
    return f"{n} B"  # pragma: no cover


def human_age(created: str, now: datetime) -> str:
    s = (now - datetime.fromisoformat(created)).total_seconds()
    if s < 0:
        return "in the future"
    for div, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= div:
            return f"{s / div:.0f}{unit} ago" if unit != "d" else f"{s / div:.1f}d ago"
    return f"{s:.0f}s ago"


def _drill_text(d: Any) -> str:
    if not isinstance(d, dict):
        return ""
    if d.get("ok"):
        secs = d.get("restore_seconds")
        n = d.get("chain")
        chained = f", a chain of {n} archives" if isinstance(n, int) and not isinstance(n, bool) else ""
        return f"drill ok {d.get('at')}" + (
            f" (restored in {secs:.1f} s{chained})" if isinstance(secs, int | float) else ""
        )
    if d.get("checked") is False:
        return f"DRILL COULD NOT RUN {d.get('at')}: {d.get('error')}"
    return f"DRILL FAILED {d.get('at')}: {d.get('error')}"


def _spot_text(d: Any) -> str:
    if not isinstance(d, dict):
        return ""
    if d.get("ok"):
        return f"spot check ok {d.get('at')}"
    return f"SPOT CHECK FAILED {d.get('at')}: {d.get('error')}"


def _verified_text(e: Entry) -> str:
    v = e.get("verified")
    if v is True:
        text = f"verified {e['verified_at']}" if e.get("verified_at") else "verified"
    elif v is False:
        text = f"FAILED: {e.get('verify_error')}"
    else:
        text = "not verified"
    if v is not False and e.get("verify_error"):  # the last check could not read it
        text += f" (last check: {e.get('verify_error')})"
    if e.get("complete") is False:
        text += ", INCOMPLETE"
    if e.get("warnings"):
        text += f", {_count(len(e['warnings']), 'warning')}"
    return text


def _print_warnings(warnings: list[str], indent: str, most: int = 5) -> None:
    for w in warnings[:most]:
        print(f"{indent}warning: {w}")
    if len(warnings) > most:
        print(f"{indent}... and {len(warnings) - most} more (see list --json)")


def _identity(config: BackupConfig, args: argparse.Namespace) -> Path | None:
    v = getattr(args, "identity", None)
    if v is not None and not Path(v).is_file():
        raise ConfigError(f"--identity {v}: no such file (the age identity made by age-keygen)")
    return Path(v) if v is not None else config.identity_file


def _remote(config: BackupConfig) -> Any:
    from .remote import remote_for

    r = remote_for(config)
    if r is None:
        raise ConfigError(
            f"no off-site storage configured: set {config.prefix}REMOTE_URL (s3://bucket/prefix)"
        )
    return r


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("no answer on standard input; nothing was changed")
    return line.strip()


# -- commands ----------------------------------------------------------------------------------------
def cmd_config(config: BackupConfig, args: argparse.Namespace) -> int:
    from .observe_config import check_notify_urls

    check_notify_urls(config)  # the apprise check that `status` skips (it costs a second)
    d = config.to_dict()
    if args.json:
        _print_json(d)
        return EXIT_OK
    for k, v in d.items():
        if k == "paths":
            v = ",".join(f"{p['name']}:{p['path']} ({p['resolved']})" for p in v)
        print(f"{k} = {v}")
    for var in config.unknown_variables:
        sys.stderr.write(f"{PROG}: warning: {var} is not a known variable (typo?); ignored\n")
    return EXIT_OK


def cmd_now(config: BackupConfig, args: argparse.Namespace) -> int:
    svc = _service(config)
    svc.log_failures = False  # printed below, once
    out = svc.run_backup(tier=args.tier, trigger="manual")
    if out.status == "interrupted":
        raise BackupError("backup interrupted; the partial archive was removed")
    if out.status == "failed":
        raise BackupError(out.error or "backup failed")
    e = out.entry
    assert e is not None
    if args.json:
        _print_json(e)
    else:
        print(
            f"{e['filename']}  {human_size(e['size_bytes'])}  {e['file_count']} files  "
            f"{e['duration_s'] or 0:.2f}s  {_verified_text(e)}"
        )
        for w in out.warnings:
            print(f"  warning: {w}")
    if out.status == "incomplete":
        sys.stderr.write(
            f"{PROG}: backup completed with warnings: some files could not be read "
            "(the archive is marked incomplete)\n"
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def cmd_list(config: BackupConfig, args: argparse.Namespace) -> int:
    from .manifest import listing

    if args.remote:
        return _list_remote(config, args)
    now = _now()
    lst = listing(config.layout, args.tier)
    summary = lst.summary()
    from .chain import kind_of
    from .health import chain_problem

    entries: list[dict[str, Any]] = [
        {
            **e,
            "missing": e["path"] in lst.missing,
            "kind": kind_of(e),
            "parent": e.get("parent"),
            # an incremental restores only with its whole chain: why it cannot (None: it can)
            "chain_broken": chain_problem(config, lst.entries, e),
        }
        for e in lst.entries
    ]
    if args.json:
        _print_json({"backups": entries, "summary": summary})
        return EXIT_OK
    print(f"Backups of {config.project} in {config.backup_dir}")
    for t in [args.tier] if args.tier else TIERS:
        es = [e for e in entries if e["tier"] == t]
        print(f"\n{t.upper()} ({len(es)})")
        if not es:
            print("  (none)")
        for e in es:
            status = "MISSING (file is gone)" if e["missing"] else _verified_text(e)  # type: ignore[arg-type]
            if e["chain_broken"] and not e["missing"]:
                status = f"NOT RESTORABLE, chain broken: {e['chain_broken']}; {status}"
            print(
                f"  {e['filename']:<48} {e['kind']:<11} {human_size(e.get('size_bytes')):>9}  "
                f"{human_age(e['created'], now):>10}  {status}"
            )
            for line in (_drill_text(e.get("drill")), _spot_text(e.get("spot_check"))):
                if line:
                    print(f"      {line}")
            _print_warnings(e.get("warnings") or [], "      ")
    if lst.untracked:
        print("\nUNTRACKED (on disk, not in the manifest; `prune` adopts them):")
        for u in lst.untracked:
            print(f"  {u}")
    print(
        f"\nTotal: {summary['count']} archive(s), {human_size(summary['total_size_bytes'])}; "
        f"oldest {summary['oldest'] or '-'}, newest {summary['newest'] or '-'}"
    )
    return EXIT_OK


def _list_remote(config: BackupConfig, args: argparse.Namespace) -> int:
    from .chain import kind_of
    from .offsite import remote_gaps, untracked_objects

    remote = _remote(config)
    assert config.remote is not None
    entries = remote.read_manifest()
    keys = {o["Key"] for o in remote.list_keys()}
    leftovers, foreign = untracked_objects(remote, entries, keys)
    gap = remote_gaps(remote, entries, keys)
    # why a point cannot be restored from the remote (its chain is not whole there); None: it can
    entries = [{**e, "chain_broken": gap(e)} for e in entries]
    if args.tier:
        entries = [e for e in entries if e["tier"] == args.tier]
    entries.sort(key=lambda e: e["created"], reverse=True)
    if args.json:
        _print_json(
            {"remote": config.remote.url, "backups": entries, "incomplete": leftovers, "foreign": foreign}
        )
        return EXIT_OK
    now = _now()
    print(f"Off-site backups of {config.project} in {config.remote.url}")
    for e in entries:
        enc = "encrypted" if e.get("encrypted") else "plain"
        if e.get("chain_broken"):
            enc = f"NOT RESTORABLE from here: {e['chain_broken']}; {enc}"
        print(
            f"  {e['tier']:<8} {e['filename']:<52} {kind_of(e):<11} {human_size(e.get('size_bytes')):>9}  "
            f"{human_age(e['created'], now):>10}  {enc}"
        )
    for k in leftovers:
        print(f"  INCOMPLETE (not in the remote manifest; removed by a sync once a day old): {k}")
    for k in foreign:
        print(f"  FOREIGN (not an archive of {config.project}; never touched): {k}")
    print(f"Total: {len(entries)} archive(s)")
    return EXIT_OK


def _print_verify(results: list[dict[str, Any]], as_json: bool) -> int:
    ok = all(r["ok"] for r in results)
    if as_json:
        _print_json({"results": results, "ok": ok})
    else:
        for r in results:
            if r["error"]:
                detail = f"  {r['error']}"
            else:  # remote results say what was checked; local ones how much
                if "note" in r:
                    detail = r["note"]
                elif r.get("checksum_only"):
                    detail = "  (checksum only: pass --identity to read its contents)"
                else:
                    detail = f"  ({r['file_count']} members)"
                if r.get("checksum_note"):
                    detail += f"; {r['checksum_note']}"
            label = "OK    " if r["ok"] else ("FAILED" if r.get("checked", True) else "NOT CHECKED")
            print(f"{label}  {r['filename']}{detail}")
    return EXIT_OK if ok else EXIT_FAILED


def _result_row(p: Path, r: Any) -> dict[str, Any]:
    from .chain_verify import snapshot_note

    return {
        "filename": p.name,
        "path": str(p),
        "ok": r.ok,
        "checked": r.checked,  # False: could not be read (EIO, ...), nothing concluded
        "error": r.error,
        "sha256": r.sha256,
        "file_count": r.file_count,
        # True: encrypted and no identity: the checksum was checked, not the contents
        "checksum_only": r.checksum_only,
        "checksum_note": r.note,
        # the .snap beside a chained archive is not its own: a warning, not a failure
        "snapshot_warning": snapshot_note(p, r),
    }


def _print_snapshot_warning(row: dict[str, Any]) -> None:
    if row.get("snapshot_warning"):
        print(f"        warning: {row['snapshot_warning']}")


def cmd_verify(config: BackupConfig, args: argparse.Namespace) -> int:
    from .manifest import Manifest, latest

    if args.chain and (args.all or args.remote or args.repair):
        raise ConfigError(
            "--chain takes one archive NAME or --latest, local only (--all checks every chain already; "
            "--remote checks each off-site archive)"
        )
    if args.remote:
        return _verify_remote(config, args)
    lay = config.layout
    svc = _service(config)
    if args.repair:
        if not args.name or args.remote:
            raise ConfigError("--repair takes one archive NAME (not --latest, --all or --remote)")
        p = lay.find(args.name)
        svc.repair_sidecar(p)
        print(f"REPAIRED  {p.name}  its .sha256 was rewritten from the manifest's checksum")
        return EXIT_OK
    entries = Manifest(lay.root).load(config.project)
    if args.all:
        from .layout import entry_problem

        # the manifest is untrusted: only entries that name this project's archives are read
        ours = {lay.archive(e["path"]) for e in entries if entry_problem(e, config.project) is None}
        paths = sorted(ours | set(lay.archives_on_disk()))
        if not paths:
            raise BackupError(f"no backups of {config.project} in {config.backup_dir}")
    elif args.latest:
        e = latest(entries, usable=lambda e: lay.archive(e["path"]).is_file())
        if e is None:
            raise BackupError(f"no usable backup of {config.project} in {config.backup_dir}")
        paths = [lay.archive(e["path"])]
    else:
        paths = [lay.find(args.name)]
    if args.chain:
        return _verify_chain(config, args, svc, entries, paths[0])
    results = []
    done: dict[Path, Any] = {}
    for p in paths:
        r = svc.verify(p, _identity(config, args))
        done[p] = r
        results.append(_result_row(p, r))
        if not args.json:
            _print_verify(results[-1:], False)
            _print_snapshot_warning(results[-1])
    chains = _broken_chains(config, svc, done, _identity(config, args)) if args.all else []
    if args.json:
        ok = all(r["ok"] for r in results) and not chains
        _print_json(
            {"results": results, "broken_chains": chains, "ok": ok}
            if args.all
            else {"results": results, "ok": ok}
        )
        return EXIT_OK if ok else EXIT_FAILED
    for c in chains:
        print(f"BROKEN  {c['point']}  cannot be restored: {c['broken']}")
    return EXIT_OK if all(r["ok"] for r in results) and not chains else EXIT_FAILED


def _broken_chains(
    config: BackupConfig, svc: BackupService, done: dict[Path, Any], identity: Path | None
) -> list[dict[str, Any]]:
    """verify --all: every incremental restore point whose chain is broken, with the first broken
    link (the archives were all just read: their results are reused, not read again)."""
    from .chain import KIND_INCREMENTAL, kind_of
    from .chain_verify import verify_chain
    from .layout import entry_problem
    from .manifest import Manifest

    lay = config.layout
    entries = [e for e in Manifest(lay.root).load(config.project) if entry_problem(e, config.project) is None]

    def again(p: Path) -> Any:
        return done[p] if p in done else svc.verify(p, identity)

    out = []
    for e in sorted(entries, key=lambda e: (e["tier"], e["created"])):
        own = done.get(lay.archive(e["path"]))
        if kind_of(e) != KIND_INCREMENTAL or (own is not None and not own.ok):
            continue  # a full stands alone; a point that failed itself has its FAILED line
        rep = verify_chain(
            entries, e, lay, again, reload=lambda: Manifest(lay.root).load(config.project), snapshots=False
        )
        if not rep.ok:
            out.append({"point": e["filename"], "broken": rep.broken, "checked": rep.checked})
    return out


def _verify_chain(
    config: BackupConfig, args: argparse.Namespace, svc: BackupService, entries: list[Entry], p: Path
) -> int:
    """verify --chain: one line per archive of the chain, full first, then the verdict."""
    from .chain_verify import verify_chain
    from .manifest import Manifest

    lay = config.layout
    point = next((e for e in entries if lay.archive(e["path"]) == p), None)
    if point is None:
        raise BackupError(
            f"{p.name} is not in the manifest, so its chain is not known: 'gofr-backup prune' adopts "
            "it, 'gofr-backup verify' checks it alone"
        )
    identity = _identity(config, args)
    rep = verify_chain(
        entries,
        point,
        lay,
        lambda a: svc.verify(a, identity),
        reload=lambda: Manifest(lay.root).load(config.project),
    )
    if args.json:
        _print_json({"chain": rep.to_dict(), "ok": rep.ok})
        return EXIT_OK if rep.ok else EXIT_FAILED
    for a in rep.archives:
        if a.get("checked") is False:
            label, detail = "NOT CHECKED", a["error"]
        elif a["ok"]:
            label, detail = "OK    ", f"({a.get('file_count')} members)"
            if a.get("checksum_only"):
                label, detail = "OK    ", "(checksum only: pass --identity to read its contents)"
        else:
            label, detail = "FAILED", a["error"] or a["link_error"]
        print(f"{label}  {a['filename']}  {a['kind']}  {detail}")
        _print_snapshot_warning(a)
    n = len(rep.archives)
    if rep.ok:
        print(f"CHAIN OK  {rep.point}: {_count(n, 'archive')}, from {rep.archives[0]['filename']}")
    elif not rep.checked:
        print(f"CHAIN NOT CHECKED  {rep.point}: {rep.broken}")
    else:
        print(f"CHAIN BROKEN  {rep.point}: {rep.broken}")
    return EXIT_OK if rep.ok else EXIT_FAILED


def _verify_remote(config: BackupConfig, args: argparse.Namespace) -> int:
    from .manifest import latest
    from .offsite import find_remote, verify_remote

    remote = _remote(config)
    assert config.remote is not None
    entries = remote.read_manifest()
    if args.all:
        chosen = entries
    elif args.latest:
        chosen = [e for e in [latest(entries)] if e is not None]
    else:
        found = find_remote(entries, args.name)
        if found is None:
            raise ConfigError(f"{args.name!r} is not in {config.remote.url} (see '{PROG} list --remote')")
        chosen = [found]
    if not chosen:
        raise BackupError(f"no off-site backups of {config.project} in {config.remote.url}")
    results = []
    for e in chosen:
        r, note = verify_remote(remote, e, _identity(config, args))
        results.append(
            {
                "filename": e["filename"],
                "ok": r.ok,
                "error": r.error,
                "note": note,
                "file_count": r.file_count,
            }
        )
        if not args.json:
            _print_verify(results[-1:], False)
    return (
        _print_verify(results, True)
        if args.json
        else (EXIT_OK if all(x["ok"] for x in results) else EXIT_FAILED)
    )


def cmd_sync(config: BackupConfig, args: argparse.Namespace) -> int:
    _remote(config)
    assert config.remote is not None
    from .offsite import broken_text

    rep = _service(config).sync_remote()
    whole = not rep.not_whole
    if args.json:
        _print_json(rep.to_dict())
    else:
        for n in rep.reuploaded:
            print(f"re-uploaded {n}: it was listed in the remote manifest but missing from the bucket")
        for n in rep.uploaded:
            if n not in rep.reuploaded:
                print(f"uploaded {n}")
        for d in rep.deleted:
            print(f"deleted {d['filename']}: {d['reason']}")
        for k in rep.cleaned:
            print(f"removed leftover {k}")
        if rep.rebuilt:
            print("the remote manifest was missing or unreadable: rebuilt from the objects; nothing deleted")
        for x in rep.skipped:
            print(f"skipped {x}")
        print(
            f"{len(rep.uploaded)} uploaded ({human_size(rep.uploaded_bytes)}), {len(rep.deleted)} deleted; "
            f"{rep.remote_count} on {config.remote.url}"
        )
    if not whole:
        sys.stderr.write(f"{PROG}: the off-site copy is NOT whole: {broken_text(rep)}\n")
        return EXIT_FAILED
    if rep.broken and not args.json:  # older points only: the newest restores from the remote
        print(f"note: {broken_text(rep)} (the newest restores from the remote)")
    return EXIT_OK


def cmd_restore(config: BackupConfig, args: argparse.Namespace) -> int:
    from .restore import RestoreRequest

    can_prompt = sys.stdin.isatty() or args.interactive
    if not (args.yes or args.dry_run or can_prompt):
        raise ConfigError("restore replaces data: pass --yes to confirm (standard input is not a terminal)")
    if args.from_remote and args.interactive:
        raise ConfigError("--from-remote takes NAME or --latest")
    req = RestoreRequest(
        name=_choose_interactively(config) if args.interactive else args.name,
        latest=args.latest,
        target=Path(os.path.abspath(args.target)) if args.target is not None else None,
        only=[s.strip() for s in args.only.split(",") if s.strip()] if args.only is not None else None,
        dry_run=args.dry_run,
        from_remote=args.from_remote,
        identity=_identity(config, args),
        allow_incomplete=args.allow_incomplete,
    )

    def confirm(plan: RestorePlan) -> bool:
        _print_notes(plan)
        if args.yes:
            return True
        for line in plan.summary():
            sys.stderr.write(f"  {line}\n")
        if plan.incomplete:
            kept = [k for c in plan.changes.values() for k in c.kept]
            sys.stderr.write(
                f"{plan.archive.name} is INCOMPLETE: what it never saved is kept as it is"
                + (f": {', '.join(kept[:20])}" + (" ..." if len(kept) > 20 else "") if kept else "")
                + "\n"
            )
        sys.stderr.write("Files and directories not in the backup will be REMOVED from these paths.\n")
        return _ask(f"Restore {plan.archive.name}? [y/N] ").lower() in ("y", "yes")

    plan = _service(config).restore(req, confirm)
    if args.dry_run:
        _print_notes(plan)
    _show_plan(plan, args.json, dry_run=args.dry_run)
    return EXIT_OK


def _print_notes(plan: RestorePlan) -> None:
    for n in plan.notes:
        sys.stderr.write(f"{PROG}: note: {n}\n")


def _choose_interactively(config: BackupConfig) -> str:
    from .manifest import drill_failed, latest, listing
    from .restore import broken_chain, incomplete_chain, passed_over, passed_over_line, restorable

    lst = listing(config.layout)
    usable = [e for e in lst.entries if e["path"] not in lst.missing]
    if not usable:
        raise BackupError(f"no backups of {config.project} in {config.backup_dir}")
    broken = broken_chain(lst.entries, config.layout)
    incomplete = incomplete_chain(lst.entries, config.layout)
    best = latest(usable, usable=lambda e: restorable(e) and broken(e) is None and incomplete(e) is None)
    for i, e in enumerate(usable, 1):
        mark = "  <- newest complete and verified (Enter)" if e is best else ""
        drill = f", drill failed {(e.get('drill') or {}).get('at')}" if drill_failed(e) else ""
        sys.stderr.write(
            f"  {i:>3}) {e['filename']}  {human_size(e.get('size_bytes'))}  {_verified_text(e)}{drill}{mark}\n"
        )
    if best is not None:
        for p in passed_over(lst.entries, best, lambda e: e["path"] not in lst.missing, broken, incomplete):
            sys.stderr.write(f"{PROG}: note: {passed_over_line(p, best['filename'])}\n")
    ans = _ask(f"Restore which backup? [1-{len(usable)}] ")
    if ans == "" and best is not None:
        return best["path"]
    if not ans.isdigit() or not 1 <= int(ans) <= len(usable):
        raise ConfigError(f"{ans!r} is not a number from 1 to {len(usable)}; nothing was changed")
    return usable[int(ans) - 1]["path"]


def _show_plan(plan: RestorePlan, as_json: bool, dry_run: bool) -> None:
    if as_json:
        _print_json({**plan.to_dict(), "dry_run": dry_run})
        return
    head = "Would restore" if dry_run else "Restored"
    tail = " (INCOMPLETE: what it never saved is kept as it is)" if plan.incomplete else ""
    print(f"{head} {plan.archive.name}{tail}:")
    if plan.chain:
        print(f"  with its chain of {len(plan.chain)} archives, each extracted in turn:")
        for a in plan.chain:
            print(
                f"    {a['kind']:<12} {a['filename']}  created {a['created']}  {human_size(a['size_bytes'])}"
            )
    for line in plan.summary(done=not dry_run):
        print(f"  {line}")
    if dry_run:
        for t in plan.targets:
            c = plan.changes[t.name]
            for label, items in (
                ("create", c.created),
                ("replace", c.replaced),
                ("remove", c.removed),
                ("keep", c.kept),
            ):
                for p in items[:50]:
                    print(f"    {label:<8} {p}")
                if len(items) > 50:
                    print(f"    ... and {len(items) - 50} more to {label}")
        for t in plan.targets:
            for x in plan.changes[t.name].outside:
                print(f"    link     {x}  (leads outside {t.name}: restored as a link, never followed)")


def _proof_header(args: argparse.Namespace, res: Any, title: str) -> bool:
    """A drill's or a spot check's result: all of it under --json (True: nothing more to print),
    else its first lines."""
    if args.json:
        _print_json(res.record())
        return True
    verdict = "OK" if res.ok else ("COULD NOT RUN" if getattr(res, "checked", True) is False else "FAILED")
    print(f"{title} {res.archive}: {verdict}")
    if res.error:
        print(f"  error: {res.error}")
    return False


def cmd_drill(config: BackupConfig, args: argparse.Namespace) -> int:
    res = _service(config).drill(args.name, _identity(config, args))
    if _proof_header(args, res, "Restore drill of"):
        return EXIT_OK if res.ok else EXIT_FAILED
    if res.restore_seconds is not None:
        print(
            f"  restored {res.files} entries, {human_size(res.bytes)} in {res.restore_seconds:.2f} s "
            f"(time to a usable copy); the whole drill took {res.seconds or 0:.2f} s, of which removing "
            f"the copy {res.cleanup_seconds or 0:.2f} s"
        )
    if res.chain:
        print(f"  chain: {res.chain} archive(s), the full first, restored in turn")
    ch = res.checks
    done = []
    if res.files is not None and res.chain:
        done.append(
            f"the chain's final tree ({ch.get('tree')} entries, the last archive's listings), entry count and bytes"
        )
    elif res.files is not None:
        done.append("entry count and bytes against the archive's record")
    if ch.get("hashes") is not None:
        done.append(f"{ch['hashes']} file hashes (BLAKE3)")
    if "sqlite" in ch:
        done.append(f"{ch['sqlite']} SQLite database(s) (integrity_check, read-only)")
    if "json" in ch:
        done.append(f"{ch['json']} JSON file(s)")
    if isinstance(ch.get("probe"), dict):
        done.append(f"probe exit {ch['probe'].get('exit')} in {ch['probe'].get('seconds')} s")
    if done:
        print("  checked: " + "; ".join(done))
    for n in res.notes:
        print(f"  note: {n}")
    return EXIT_OK if res.ok else EXIT_FAILED


def cmd_check_source(config: BackupConfig, args: argparse.Namespace) -> int:
    from .config import parse_percent

    sample = parse_percent("--sample", args.sample) if args.sample is not None else None
    res = _service(config).check_source(args.name, sample, _identity(config, args))
    if _proof_header(args, res, "Source spot check against"):
        return EXIT_OK if res.ok else EXIT_FAILED
    print(
        f"  {res.files} source entries older than the archive checked, {res.missing} missing from it; "
        f"{res.newer} newer (not expected in it)"
    )
    if res.drift is None:
        print("  content: not compared (the archive has no per-file hashes)")
    else:
        print(
            f"  content: {res.sampled} file(s), {human_size(res.sampled_bytes)} re-read "
            f"({res.sample_percent:g}% sample), {res.drift} differ"
        )
    for pth in res.missing_paths:
        print(f"    missing: {one_line(pth)}")
    for pth in res.drift_paths:
        print(f"    differs: {one_line(pth)}")
    for n in res.notes:
        print(f"  note: {n}")
    return EXIT_OK if res.ok else EXIT_FAILED


def cmd_prune(config: BackupConfig, args: argparse.Namespace) -> int:
    r = _service(config, stop_on_signals=False).prune(dry_run=args.dry_run)
    if args.json:
        _print_json(r.to_dict())
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for d in r.deleted:
        print(f"{verb} {d['path']}: {d['reason']}")
    for c in r.cleaned:
        print(f"{'would clean' if args.dry_run else 'cleaned'} {c}")
    for a in r.adopted:
        print(f"{'would adopt' if args.dry_run else 'adopted'} untracked archive {a}")
    for k in r.needed:
        by = k["needed_by"]
        more = f" and {_count(len(by) - 1, 'other')}" if len(by) > 1 else ""
        verb = "would keep" if args.dry_run else "kept"
        print(f"{verb} {k['path']}: needed by {by[0]}{more} (on its own it would go: {k['reason']})")
    for x in r.rechecked:
        print(f"verified once more before deleting: {x}")
    for x in r.skipped:
        print(f"skipped (not ours to delete): {x}")
    n = len(r.deleted)
    if args.dry_run:
        print(f"{_count(n, 'archive')} would be deleted and {r.kept} kept (dry run: nothing was changed)")
    else:
        print(f"{_count(n, 'archive')} deleted, {r.kept} kept")
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cmd_status(config: BackupConfig, args: argparse.Namespace) -> int:
    from .health import health

    h = health(config, _now())
    if args.json:
        _print_json({"healthy": h.healthy, "reasons": h.reasons, **h.report})
    else:
        r = h.report
        print(
            f"{config.project}: {'HEALTHY' if h.healthy else 'UNHEALTHY'}"
            + ("" if r["enabled"] else f" (backups disabled: {r.get('disabled_hint')})")
        )
        for reason in h.reasons:
            print(f"  ! {reason}")
        ls, lf = r.get("last_success"), r.get("last_failure")
        print(
            f"  last success: {ls['time']} {ls['filename']} {human_size(ls.get('size_bytes'))}"
            if ls
            else "  last success: never"
        )
        print(f"  last failure: {lf['time']} {lf['error']}" if lf else "  last failure: none")
        if r.get("last_warnings"):
            print("  last warnings:")
            _print_warnings(r["last_warnings"], "    ")
        print(f"  next run:     {r.get('next_run') or '-'}")
        g = r.get("restorable")
        print(
            f"  restorable:   {g['filename']} (created {g['created']}, verified {g['verified_at'] or '-'})"
            + (
                f"; incremental: a chain of {len(g['chain'])} archives from {g['chain'][0]}"
                if g.get("kind") == "incremental"
                else ""
            )
            if g
            else "  restorable:   none"
        )
        sc = r.get("last_scrub")
        if sc:
            print(
                f"  last scrub:   {sc['time']}: {len(sc['checked'])} re-verified, {len(sc['bad'])} bad, "
                f"{len(sc['could_not_check'])} could not be read"
            )
        if r.get("last_drill") or r.get("next_drill"):
            print(f"  last drill:   {_drill_text(r.get('last_drill')) or 'never'}")
            print(f"  next drill:   {r.get('next_drill') or '-'}")
        if r.get("last_spot_check"):
            print(f"  spot check:   {_spot_text(r.get('last_spot_check'))}")
        for tier, t in r["tiers"].items():
            print(
                f"  {tier:<8} {t['count']:>4} archive(s) {human_size(t['size_bytes']):>10}"
                + (f"  {t['failed']} failed" if t["failed"] else "")
            )
    return EXIT_OK if h.healthy else EXIT_FAILED


def cmd_metrics(config: BackupConfig, args: argparse.Namespace) -> int:
    from .metrics import exposition

    sys.stdout.write(exposition(config, _now).decode())
    return EXIT_OK


def cmd_report(config: BackupConfig, args: argparse.Namespace) -> int:
    from .fsutil import atomic_write_bytes
    from .report import build

    out = None if args.output == "-" else Path(args.output)
    if out is not None:  # a user error is said before anything is made
        if out.is_dir():
            raise ConfigError(f"--output {out} is a directory: give a file name, e.g. {out}/report.html")
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise ConfigError(f"--output {out}: the directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"--output {out}: the directory {parent} is not writable (uid {os.geteuid()})")
    page = build(config, _now())
    if out is None:
        sys.stdout.write(page)
        return EXIT_OK
    try:
        atomic_write_bytes(out, page.encode("utf-8"))
    except OSError as e:
        raise BackupError(f"cannot write the report {out}: {e.strerror or e}") from None
    print(out)
    return EXIT_OK


def cmd_run(config: BackupConfig, args: argparse.Namespace) -> int:
    from .config import TRUE_WORDS

    if os.geteuid() == 0 and os.environ.get("GOFR_BACKUP_ALLOW_ROOT", "").strip().lower() not in TRUE_WORDS:
        raise ConfigError(
            "the service refuses to run as root: run it as the app's uid (the image's default user, or "
            "`user:` in compose), or set GOFR_BACKUP_ALLOW_ROOT=true"
        )
    svc = _service(config, stop_on_signals=False)
    svc.install_signal_handlers()
    return svc.start()


COMMANDS: dict[str, Callable[[BackupConfig, argparse.Namespace], int]] = {
    "config": cmd_config,
    "now": cmd_now,
    "list": cmd_list,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "prune": cmd_prune,
    "drill": cmd_drill,
    "check-source": cmd_check_source,
    "status": cmd_status,
    "sync": cmd_sync,
    "metrics": cmd_metrics,
    "report": cmd_report,
    "run": cmd_run,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
