"""Notifications (apprise) and heartbeat pings, received by a real HTTP server on 127.0.0.1 in this
process: apprise's json:// URL posts to it, the pings GET and POST to it. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from gofrtest import SimClock, cli_env, needs, partials, popen_cli, run_cli, without_dac, write

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup import log as glog

HOST = socket.gethostname()


class Hooks:
    """What the server received, in order; paths under /hang are held until released."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.port = 0

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def at(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def notifications(self, prefix: str = "/n") -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.at(prefix)]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
            u = urlsplit(self.path)
            with h.lock:
                h.requests.append(
                    {"method": self.command, "path": u.path, "query": parse_qs(u.query), "body": body}
                )
            if u.path.startswith("/hang"):
                h.release.wait(60)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = _any

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    h.port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield h
    finally:
        h.release.set()
        srv.shutdown()
        srv.server_close()


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


def _app(tmp_path: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "doc.json", '{"a": 1}')
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", **extra})
    return data, backups, env


# -- notifications ---------------------------------------------------------------------------------
def test_failure_then_the_same_failure_then_recovery(tmp_path: Path, hooks: Hooks) -> None:
    data, backups, env = _app(
        tmp_path, **{"GOFR_{P}_BACKUP_NOTIFY_URLS": hooks.url("/n/tok3nSECRET", "json")}
    )
    assert run_cli("now", env=env).returncode == 0
    assert hooks.notifications() == []  # success is not in the default NOTIFY_ON
    good = json.loads(run_cli("list", "--json", env=env).stdout)["backups"][0]["filename"]
    shutil.move(data / "storage", tmp_path / "away")

    r = run_cli("now", env=env)
    assert r.returncode == 1
    [n] = hooks.notifications()
    assert n["type"] == "failure" and "FAILED" in n["title"]
    body = n["message"]
    assert f"plot on {HOST}" in body  # project and host
    assert "Error: No data found to backup" in body  # the error line
    assert f"Last good backup: {good}" in body and "old (at " in body  # the last good backup, its age
    assert "What to do:" in body and "PATHS" in body  # what to do next
    assert state(backups)["notify_active"]["failure"]["key"]

    assert run_cli("now", env=env).returncode == 1  # the same failure again: not sent twice in a row
    assert len(hooks.notifications()) == 1

    shutil.move(tmp_path / "away", data / "storage")
    assert run_cli("now", env=env).returncode == 0
    ns = hooks.notifications()
    assert len(ns) == 2 and ns[1]["type"] == "success" and "OK again" in ns[1]["title"]
    assert "failing since" in ns[1]["message"] and "What to do: nothing." in ns[1]["message"]
    assert state(backups)["notify_active"] == {}
    assert run_cli("now", env=env).returncode == 0  # a plain success after that: nothing
    assert len(hooks.notifications()) == 2
    # the token in the URL is nowhere: not in the state file, not in `config`
    assert "tok3nSECRET" not in (backups / ".gofr-plot.state.json").read_text()
    cfg = run_cli("config", env=env)
    assert "tok3nSECRET" not in cfg.stdout and "notify_urls = ['json://127.0.0.1:" in cfg.stdout


def test_incomplete_backup_warning_names_the_unreadable_paths(tmp_path: Path, hooks: Hooks) -> None:
    needs(
        os.geteuid() == 0 and bool(shutil.which("setpriv")),
        "needs root and setpriv to create a file the backup process cannot read",
    )
    data, backups, env = _app(tmp_path, **{"GOFR_{P}_BACKUP_NOTIFY_URLS": hooks.url("/n", "json")})
    secret = write(data / "storage" / "secret.txt", "the app's, mode 0600", 0o600)
    os.chown(secret, 1000, 1000)
    r = subprocess.run(without_dac("now"), env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    [n] = hooks.notifications()
    assert n["type"] == "warning" and "INCOMPLETE" in n["title"]
    assert "1 path(s) could not be read" in n["message"] and "secret.txt" in n["message"]
    assert "readable by the backup user" in n["message"]


def _service_config(tmp_path: Path, hooks: Hooks) -> tuple[BackupConfig, Path]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "hello")
    env = {
        "GOFR_PROJECT": "plot",
        "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
        "GOFR_PLOT_BACKUP_DIR": str(backups),
        "GOFR_PLOT_BACKUP_PATHS": "storage:storage",
        "GOFR_PLOT_BACKUP_SCHEDULE": "0 2 * * *",
        "GOFR_PLOT_BACKUP_NOTIFY_URLS": hooks.url("/n", "json"),
        "GOFR_PLOT_BACKUP_NOTIFY_TIMEOUT": "5",
    }
    return BackupConfig.from_env(env=env), data


def test_a_repeat_after_a_day_and_staleness_noticed_while_the_service_sleeps(
    tmp_path: Path, hooks: Hooks
) -> None:
    """Simulated days: a manual success at 14:00, then every run fails. The same failure goes out
    once, is suppressed 12 h later, goes out again after a day; the service wakes at 14:00 two days
    on (between runs) to say the backups are stale."""
    glog.setup(open(tmp_path / "log", "w"))  # noqa: SIM115
    cfg, data = _service_config(tmp_path, hooks)
    clock = SimClock(datetime(2026, 3, 2, 14, 0, tzinfo=UTC), until=datetime(2026, 3, 5, 1, 0, tzinfo=UTC))
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    assert svc.run_backup(trigger="manual").status == "ok"
    shutil.rmtree(data / "storage")
    svc.start()  # catch-up at once, then 03-03 02:00 and 03-04 02:00; stops at 03-05 01:00
    got = [(n["title"].rsplit(": ", 1)[1], n["message"]) for n in hooks.notifications()]
    kinds = [k for k, _ in got]
    assert kinds == ["backup FAILED", "backup FAILED", "backups are STALE"], got
    assert "failed at 2026-03-02T14:00:00+00:00" in got[0][1]  # the catch-up run
    assert "failed at 2026-03-04T02:00:00+00:00" in got[1][1]  # 03-03 02:00 was suppressed
    stale = got[2][1]
    assert "has succeeded for 2.0 days" in stale and "more than two schedule intervals (2.0 days)" in stale
    assert "Last error: No data found to backup" in stale
    st = json.loads((cfg.backup_dir / ".gofr-plot.state.json").read_text())
    assert st["notify_active"]["stale"]["time"] == "2026-03-04T14:00:01+00:00"  # between two runs
    assert st["notify_active"]["failure"]["since"] == "2026-03-02T14:00:00+00:00"


# -- pings ------------------------------------------------------------------------------------------
def test_pings_start_then_success_then_start_then_fail(tmp_path: Path, hooks: Hooks) -> None:
    data, backups, env = _app(tmp_path, **{"GOFR_{P}_BACKUP_PING_URL": hooks.url("/hc/uuid-1234")})
    assert run_cli("now", env=env).returncode == 0
    shutil.rmtree(data / "storage")
    assert run_cli("now", env=env).returncode == 1
    got = hooks.at("/hc")
    assert [(r["method"], r["path"]) for r in got] == [
        ("GET", "/hc/uuid-1234/start"),
        ("POST", "/hc/uuid-1234"),
        ("GET", "/hc/uuid-1234/start"),
        ("POST", "/hc/uuid-1234/fail"),
    ]
    rids = [r["query"]["rid"][0] for r in got]
    assert rids[0] == rids[1] and rids[2] == rids[3] and rids[0] != rids[2]
    assert got[0]["body"] == "" and got[2]["body"] == ""
    ok, fail = got[1]["body"], got[3]["body"]
    assert ok.startswith("gofr-backup plot@") and ": ok\n" in ok
    assert "backup started (manual, daily)" in ok and "verification passed" in ok and "backup finished" in ok
    assert ": failed\n" in fail and "error: No data found to backup" in fail
    assert "ping_last_error" not in state(backups)


# -- a notifier that hangs or refuses: bounded, never fatal ------------------------------------------
def _timed_now(env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    r = run_cli("now", env=env)
    return time.monotonic() - t0, r


def test_a_hanging_notifier_and_ping_delay_a_backup_by_at_most_the_timeout(
    tmp_path: Path, hooks: Hooks
) -> None:
    """The same backup, notifier and ping answering at once, then hanging (for 60 s): the second
    takes at most NOTIFY_TIMEOUT longer, and succeeds."""
    timeout = 2.0

    def where(path: str) -> dict[str, str]:
        return {
            "GOFR_{P}_BACKUP_NOTIFY_URLS": hooks.url(f"{path}/n", "json"),
            "GOFR_{P}_BACKUP_NOTIFY_ON": "success",
            "GOFR_{P}_BACKUP_PING_URL": hooks.url(f"{path}/hc"),
            "GOFR_{P}_BACKUP_NOTIFY_TIMEOUT": str(timeout),
        }

    _, backups, env = _app(tmp_path, **where("/fast"))
    base = min(_timed_now(env)[0] for _ in range(2))
    assert len(hooks.at("/fast/n")) == 2 and len(hooks.at("/fast/hc")) == 4
    _, _, env = _app(tmp_path, **where("/hang"))
    took, r = _timed_now(env)
    assert r.returncode == 0, r.stderr
    assert hooks.at("/hang/hc/start") and hooks.at("/hang/n")  # both were really tried, and hung
    delay = took - base
    waited = float(re.search(r"waited_s=([\d.]+)", r.stderr).group(1))  # type: ignore[union-attr]
    print(
        f"hanging notifier + ping: the run waited {waited:.2f}s for them; the backup took {took:.2f}s, "
        f"{delay:.2f}s more than answered (timeout {timeout}s)"
    )
    assert timeout - 0.5 <= waited <= timeout + 0.5  # the bound, measured where it is kept
    assert delay <= timeout + 5.0, f"delayed {delay:.2f}s with NOTIFY_TIMEOUT={timeout}"  # vs a 60 s hang
    st = state(backups)
    assert st["last_result"] == "ok"
    assert "NOTIFY_TIMEOUT" in st["observe_last_error"]["error"]  # recorded, not only logged
    assert "not waiting any longer" in r.stderr


def test_a_refused_connection_never_fails_a_backup(tmp_path: Path, hooks: Hooks) -> None:
    """Nothing listens on the port: the notifier fails at once, the ping is retried within the
    timeout; the backup is no more than NOTIFY_TIMEOUT later than with a notifier that answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    timeout = 3.0

    def where(base: str) -> dict[str, str]:
        return {
            "GOFR_{P}_BACKUP_NOTIFY_URLS": f"json://{base}/hooks/tok3nSECRET",
            "GOFR_{P}_BACKUP_NOTIFY_ON": "success",
            "GOFR_{P}_BACKUP_PING_URL": f"http://{base}/ping/tok3nSECRET",
            "GOFR_{P}_BACKUP_NOTIFY_TIMEOUT": str(timeout),
        }

    _, backups, env = _app(tmp_path, **where(f"127.0.0.1:{hooks.port}"))
    base = min(_timed_now(env)[0] for _ in range(2))
    assert len(hooks.at("/hooks")) == 2
    _, _, env = _app(tmp_path, **where(f"127.0.0.1:{port}"))
    took, r = _timed_now(env)
    assert r.returncode == 0, r.stderr
    print(
        f"refused notifier + ping: backup took {took:.2f}s, {took - base:.2f}s more than answered (timeout {timeout}s)"
    )
    assert took - base <= timeout + 5.0  # + process noise on a busy machine
    st = state(backups)
    assert st["last_result"] == "ok"
    assert st["notify_last_error"]["error"].startswith(f"json://127.0.0.1:{port}/***: ")
    assert (
        "ping to http://127.0.0.1:" in st["ping_last_error"]["error"]
        and "refused" in st["ping_last_error"]["error"]
    )
    text = r.stdout + r.stderr + (backups / ".gofr-plot.state.json").read_text()
    assert "tok3nSECRET" not in text and "Traceback" not in text


# -- configuration errors: one line, exit 2, nothing written, no token shown ---------------------------
BAD = [
    (
        "NOTIFY_URLS",
        "nonsense://tok3nSECRET",
        "GOFR_PLOT_BACKUP_NOTIFY_URLS: URL 1 of 1 (nonsense://…) is not a valid apprise URL",
    ),
    ("NOTIFY_URLS", "json://127.0.0.1/tok3nSECRET, tok3nSECRET", "URL 2 of 2 (not a URL)"),
    (
        "NOTIFY_URLS_FILE",
        "/nonexistent/urls",
        "GOFR_PLOT_BACKUP_NOTIFY_URLS_FILE='/nonexistent/urls' is not valid: cannot read the file",
    ),
    (
        "NOTIFY_ON",
        "failure,sometimes",
        "'sometimes' is not an event; expected any of failure, warning, recovery",
    ),
    ("NOTIFY_TIMEOUT", "0", "GOFR_PLOT_BACKUP_NOTIFY_TIMEOUT='0' is not valid"),
    ("NOTIFY_TIMEOUT", "1h", "at most 300 seconds"),
    (
        "PING_URL",
        "ftp://hc/tok3nSECRET",
        "GOFR_PLOT_BACKUP_PING_URL (ftp://…) is not valid: expected an http:// or https:// URL",
    ),
    ("PING_URL", "https://hc ping/tok3nSECRET", "expected an http:// or https:// URL"),
    ("METRICS_FILE", "/textfile/gofr.txt", "expected a file name ending in .prom"),
    ("METRICS_ADDR", "0.0.0.0:99999", "expected host:port with a port from 1 to 65535"),
    ("METRICS_ADDR", "localhost", "expected host:port"),
    ("REPORT_FILE", "reports/", "expected a file name ending in .html, e.g. report.html, or off"),
    ("REPORT_FILE", "manifest.json", "expected a file name ending in .html"),
]


@pytest.mark.parametrize("name,value,says", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_bad_observe_variable_one_line_exit_2(tmp_path: Path, name: str, value: str, says: str) -> None:
    _, backups, env = _app(tmp_path, **{f"GOFR_{{P}}_BACKUP_{name}": value})
    r = run_cli("now", env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gofr-backup: "), r.stderr
    assert says in lines[0], lines[0]
    assert "tok3nSECRET" not in r.stderr
    assert not backups.exists()


def test_an_empty_url_file_is_an_error_not_off(tmp_path: Path) -> None:
    f = write(tmp_path / "urls", "# nothing here yet\n\n")
    for name in ("NOTIFY_URLS_FILE", "PING_URL_FILE"):
        _, backups, env = _app(tmp_path, **{f"GOFR_{{P}}_BACKUP_{name}": str(f)})
        r = run_cli("now", env=env)
        assert r.returncode == 2 and f"GOFR_PLOT_BACKUP_{name}=" in r.stderr and "holds no URL" in r.stderr
        assert r.stderr.count("\n") == 1 and not backups.exists()


def test_notify_urls_file_and_both_set(tmp_path: Path, hooks: Hooks) -> None:
    f = write(
        tmp_path / "urls",
        f"# where alerts go\n{hooks.url('/n/one', 'json')}\n{hooks.url('/n/two', 'json')}\n",
    )
    data, backups, env = _app(tmp_path, **{"GOFR_{P}_BACKUP_NOTIFY_URLS_FILE": str(f)})
    shutil.rmtree(data / "storage")
    assert run_cli("now", env=env).returncode == 1
    assert len(hooks.at("/n/one")) == 1 and len(hooks.at("/n/two")) == 1
    env["GOFR_PLOT_BACKUP_NOTIFY_URLS"] = hooks.url("/n", "json")
    r = run_cli("now", env=env)
    assert r.returncode == 2 and "set either GOFR_PLOT_BACKUP_NOTIFY_URLS or" in r.stderr


def test_status_checks_only_the_form_of_notify_urls_config_asks_apprise(tmp_path: Path) -> None:
    """`status` is the HEALTHCHECK: it never loads apprise's plugins (a second each time)."""
    _, backups, env = _app(tmp_path, **{"GOFR_{P}_BACKUP_NOTIFY_URLS": "slakc://tok3nSECRET"})
    backups.mkdir()
    assert run_cli("status", env=env).returncode == 1  # unhealthy (no backup yet), not a usage error
    for cmd in ("config", "now"):
        r = run_cli(cmd, env=env)
        assert r.returncode == 2 and "URL 1 of 1 (slakc://…) is not a valid apprise URL" in r.stderr
        assert "tok3nSECRET" not in r.stderr and r.stderr.count("\n") == 1
    assert list(backups.iterdir()) == []
    r = run_cli("status", env={**env, "GOFR_PLOT_BACKUP_NOTIFY_URLS": "no scheme at all"})
    assert r.returncode == 2 and "(not a URL)" in r.stderr  # the form is checked everywhere


def test_a_failed_restore_drill_is_notified_once_and_its_recovery(tmp_path: Path, hooks: Hooks) -> None:
    """The drill feature records `last_drill` in the state file; the next run (or
    Observer.drill_done) tells the operator, once."""
    _, backups, env = _app(
        tmp_path,
        **{"GOFR_{P}_BACKUP_NOTIFY_URLS": hooks.url("/n", "json"), "GOFR_{P}_BACKUP_NOTIFY_ON": "drill"},
    )
    assert run_cli("now", env=env).returncode == 0

    def drill(at: str, ok: bool) -> None:
        st = state(backups)
        st["last_drill"] = {
            "at": at,
            "ok": ok,
            "error": None if ok else "restored files differ: storage/doc.json",
        }
        st["last_drill"]["restore_seconds"] = 1.5 if ok else None
        (backups / ".gofr-plot.state.json").write_text(json.dumps(st))

    drill("2026-05-01T03:00:00+00:00", False)
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("now", env=env).returncode == 0  # the same drill result: not again
    [n] = hooks.notifications()
    assert n["type"] == "failure" and "restore drill FAILED" in n["title"]
    assert "Error: restored files differ: storage/doc.json" in n["message"] and "What to do:" in n["message"]

    drill("2026-05-02T03:00:00+00:00", True)
    cfg = BackupConfig.from_env(env=env)
    BackupService(cfg).observer.drill_done()  # what the drill command calls, without a backup
    ns = hooks.notifications()
    assert len(ns) == 2 and ns[1]["type"] == "success" and "restore drill OK again" in ns[1]["title"]


def test_sigterm_mid_backup_does_not_wait_for_a_hanging_ping(tmp_path: Path, hooks: Hooks) -> None:
    """The start ping hangs (for 60 s) and NOTIFY_TIMEOUT is 50 s: SIGTERM still stops the service
    as fast as without a ping (test_service_process: < 10 s; here < 25 s, room for a loaded machine,
    and far from the 50 s that waiting for the ping would take), with no end ping."""
    data, backups, env = _app(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_PING_URL": hooks.url("/hang/hc"),
            "GOFR_{P}_BACKUP_NOTIFY_TIMEOUT": "50",
            "GOFR_{P}_BACKUP_COMPRESSION": "xz",
        },
    )
    for i in range(4):
        write(data / "storage" / "big" / f"blob{i}.bin", os.urandom(8 << 20))
    proc = popen_cli("run", env=env)
    deadline = time.monotonic() + 60
    while not any(n > 65536 for n in partials(backups).values()):
        assert time.monotonic() < deadline and proc.poll() is None, "the backup never got going"
        time.sleep(0.05)
    assert hooks.at("/hang/hc/start")  # the start ping went out, and hangs
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert took < 25, f"took {took:.1f}s to stop"
    assert [r["path"] for r in hooks.at("/hang/hc")] == ["/hang/hc/start"]
    assert "service stopped" in out
