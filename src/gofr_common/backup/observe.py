"""What the operator learns without looking: the one object a run calls at its start and end.

``Observer`` turns the outcome of a run (and the state file, and the manifest) into heartbeat pings,
notifications, the metrics textfile and the HTML report. Everything that leaves the process runs in
daemon threads with a deadline: a run waits at most NOTIFY_TIMEOUT for them, a failure is logged and
recorded in the state file, and nothing here can fail or hold up a backup beyond that bound.

Call sites (service.py): ``run_started`` / ``run_finished`` around one run, ``wait_until`` instead of
the clock's in the scheduler loop (it wakes up to notice stale backups), ``service_started`` once,
``verified`` after a verification.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from . import log as glog
from . import notify
from .config import BackupConfig
from .notify import Message

event = glog.event
REPEAT_AFTER = timedelta(days=1)  # the same failure is notified again at most once a day
LOG_LINES = 40  # the tail of a run's log that a ping carries
# which slot of the state's `notify_active` a failure-like message occupies until it clears
SLOT = {
    "failed": "failure",
    "incomplete": "warning",
    "stale": "stale",
    "drill_failed": "drill",
    "remote_lag": "remote",
}


class _RunLog(logging.Handler):
    """The last lines a run logged (for the ping body) and the events it raised."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        t = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="seconds")
        self.lines.append(f"{t} {record.levelname} {record.getMessage()}")
        self.events.append(str(getattr(record, "event", "")))


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


JOB_GRACE = 1.0  # seconds a background send may outlive the wait for it (see Observer._submit)


class Observer:
    def __init__(self, config: BackupConfig, clock: Any) -> None:
        from .observe_config import check_notify_urls

        check_notify_urls(config)  # before anything is sent: one line, exit 2
        self.config = config
        self.clock = clock
        self.host = notify.hostname()
        self.jobs: list[tuple[str, threading.Thread]] = []
        self.chains: dict[str, threading.Thread] = {}
        self.runlog: _RunLog | None = None
        self.rid: str | None = None
        self.before: dict[str, Any] = {}
        self.server: Any = None
        self.trigger = "manual"

    # -- the state file -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        from .state import read_state

        return read_state(self.config)

    def _update(self, fn: Callable[[dict[str, Any]], None]) -> None:
        from .state import update_state

        try:
            update_state(self.config, fn)
        except Exception as e:  # noqa: BLE001 - a full or read-only disk: said once, never raised
            event("observe.state_failed", f"cannot record in the state file: {e}", level=self._level())

    def _level(self) -> int:
        """WARNING for a failure to write a local output; DEBUG when the backup dir itself is not
        writable: the run's own error already says so, in one line, and this is the same cause."""
        return logging.WARNING if os.access(self.config.backup_dir, os.W_OK) else logging.DEBUG

    def _record(self, key: str, error: str | None, **extra: Any) -> None:
        """``{key}_last_error`` (or its removal on success) in the state file."""
        t = _iso(self.clock.now())

        def fn(st: dict[str, Any]) -> None:
            if error is None:
                st[f"{key}_last_ok"] = t
            else:
                st[f"{key}_last_error"] = {"time": t, "error": error, **extra}

        self._update(fn)

    # -- background jobs ------------------------------------------------------------------------
    def _submit(self, what: str, chain: str | None, fn: Callable[[float], None]) -> None:
        """Run ``fn(seconds_left)`` in a daemon thread, after the previous job of the same chain
        (so a start ping always goes before its end ping), within NOTIFY_TIMEOUT of now plus
        JOB_GRACE: a job that hangs is still running when :meth:`wait` gives up on it, which is
        what reports it (a job timing itself out a moment earlier would go unreported)."""
        deadline = time.monotonic() + self.config.notify_timeout + JOB_GRACE
        before = self.chains.get(chain) if chain else None

        def run() -> None:
            if before is not None:
                before.join(max(0.0, deadline - time.monotonic()))
            try:
                fn(max(0.1, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - reported, never raised into a backup
                event("observe.error", f"{what} failed: {type(e).__name__}: {e}", level=logging.WARNING)

        t = threading.Thread(target=run, name=f"gofr-{what}", daemon=True)
        t.start()
        self.jobs.append((what, t))
        if chain:
            self.chains[chain] = t

    def wait(self) -> float:
        """Wait for the jobs submitted so far, at most NOTIFY_TIMEOUT; returns the seconds waited.
        Whatever is still running is left to finish (or time out) on its own and reported."""
        t0 = time.monotonic()
        deadline = t0 + self.config.notify_timeout
        for _what, t in self.jobs:
            t.join(max(0.0, deadline - time.monotonic()))
        late = [what for what, t in self.jobs if t.is_alive()]
        self.jobs = [(w, t) for w, t in self.jobs if t.is_alive()]
        if late:
            msg = f"still not done after {self.config.notify_timeout:g}s (NOTIFY_TIMEOUT): " + ", ".join(late)
            waited = round(time.monotonic() - t0, 2)
            event("observe.timeout", f"not waiting any longer: {msg}", level=logging.WARNING, waited_s=waited)
            self._record("observe", msg)
        return time.monotonic() - t0

    # -- pings ----------------------------------------------------------------------------------
    def _ping(self, kind: str, body: str | None) -> None:
        url = self.config.ping_url
        if not url:
            return
        rid = self.rid

        def job(left: float) -> None:
            from . import ping

            err = ping.send(url, kind, body, left, rid)
            if err:
                event("ping.failed", err, level=logging.WARNING)
            self._record("ping", err, kind=kind)

        self._submit(f"{kind}-ping", "ping", job)

    # -- notifications --------------------------------------------------------------------------
    def _send(self, msg: Message, slot: str | None, stamp: str | None) -> None:
        urls = self.config.notify_urls
        results: dict[str, str | None] = {}
        lock = threading.Lock()

        for url in urls:

            def job(left: float, url: str = url) -> None:
                err = notify.send(url, msg, left)
                with lock:
                    results[url] = err
                    done = len(results) == len(urls)
                if err:
                    event(
                        "notify.failed", f"notification '{msg.title}' not sent: {err}", level=logging.WARNING
                    )
                else:
                    event("notify.sent", f"notification sent: {msg.title}", kind=msg.kind)
                self._record("notify", err, kind=msg.kind)
                if done and slot and all(results.values()):
                    self._forget(slot, stamp)  # nobody heard it: the next occurrence is not a repeat

            self._submit(f"{msg.kind}-notification", f"notify:{url}", job)

    def _forget(self, slot: str, stamp: str | None) -> None:
        def fn(st: dict[str, Any]) -> None:
            active = st.get("notify_active") or {}
            if (active.get(slot) or {}).get("time") == stamp:
                active.pop(slot, None)
                st["notify_active"] = active

        self._update(fn)

    def _decide(
        self, out: Any, st: dict[str, Any], now: datetime
    ) -> list[tuple[Message, str | None, str | None]]:
        """The messages this outcome calls for, after repeat suppression; updates the state's
        `notify_active` (the failures notified and not yet recovered)."""
        c, host, on = self.config, self.host, set(self.config.notify_on)
        active: dict[str, Any] = dict(st.get("notify_active") or {})
        before = self.before
        out_msgs: list[tuple[Message, str | None, str | None]] = []
        t = _iso(now)

        def raise_(msg: Message) -> None:
            if _activate(active, msg, now) and msg.category in on:
                out_msgs.append((msg, SLOT[msg.kind], t))

        last_success = st.get("last_success")
        status = out.status if out is not None else None  # None: no run, a drill was recorded
        if status == "failed":
            raise_(
                notify.failed(c.project, host, c.prefix, out.error or "?", t, self.trigger, last_success, now)
            )
            s = self._staleness(st, now)
            if s:
                raise_(notify.stale(c.project, host, *s, out.error, last_success, now))
        elif status in ("ok", "incomplete"):
            entry = out.entry or {}
            failing = active.pop("failure", None)
            if status == "incomplete":
                raise_(
                    notify.incomplete(
                        c.project, host, c.prefix, entry.get("filename", "?"), out.warnings, last_success, now
                    )
                )
            else:
                was = [active.pop(k, None) for k in ("warning", "stale")] + [failing]
                prev_bad = before.get("last_result") in ("failed", "incomplete")
                if prev_bad or any(was):
                    since = min((a["since"] for a in was if a), default=None) or (
                        (before.get("last_failure") or {}).get("time")
                    )
                    if "recovery" in on:
                        out_msgs.append((notify.recovered(c.project, host, entry, since), None, None))
                elif "success" in on:
                    out_msgs.append((notify.succeeded(c.project, host, entry), None, None))
            if c.remote is not None:
                # the off-site stage failed, or its sync left the remote NOT whole
                if out.remote is None or out.remote.not_whole:
                    rf = st.get("remote_last_failure") or {}
                    raise_(
                        notify.remote_lag(
                            c.project,
                            host,
                            c.remote.url,
                            rf.get("error"),
                            st.get("remote_last_success"),
                            now,
                            not_whole=out.remote is not None,
                        )
                    )
                elif active.pop("remote", None) and "remote" in on:
                    out_msgs.append((notify.remote_ok(c.project, host, c.remote.url), None, None))
        drill_seen = self._drills(st, active, raise_, out_msgs)

        def fn(s: dict[str, Any]) -> None:
            s["notify_active"] = active
            if drill_seen:
                s["notify_drill_seen"] = drill_seen

        self._update(fn)
        return out_msgs

    def _drills(
        self,
        st: dict[str, Any],
        active: dict[str, Any],
        raise_: Callable[[Message], None],
        out_msgs: list[Any],
    ) -> str | None:
        from .metrics import drills, entries_of

        mine = entries_of(self.config)
        ds = drills(mine, st)
        if not ds or ds[-1].get("at") == st.get("notify_drill_seen"):
            return None
        last = ds[-1]
        archive = next((e["filename"] for e in mine if e.get("drill") is last), None)
        if not last.get("ok"):
            raise_(notify.drill_failed(self.config.project, self.host, last, archive))
        elif active.pop("drill", None) and "drill" in self.config.notify_on:
            out_msgs.append((notify.drill_ok(self.config.project, self.host, last), None, None))
        return str(last["at"])

    def _staleness(self, st: dict[str, Any], now: datetime) -> tuple[float | None, float] | None:
        """(age of the last success or None, schedule interval) when no backup has succeeded for
        more than two intervals; else None."""
        ref, last = self._stale_ref(st)
        if ref is None:
            return None
        gap = self._gap(now)
        if _utc(now) - _utc(ref) <= 2 * gap:
            return None
        age = (_utc(now) - _utc(last)).total_seconds() if last else None
        return age, gap.total_seconds()

    def _gap(self, now: datetime) -> timedelta:
        """The schedule's interval around ``now``. status.interval measures from the fire time
        before ``now``, which is ``now`` itself at the exact instant of a run (and then reads two
        intervals); a second later it is the previous run, as intended."""
        from .schedule import interval

        return interval(self.config.schedule, now + timedelta(seconds=1))

    def _stale_ref(self, st: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
        from .metrics import entries_of, good

        ls = (st.get("last_success") or {}).get("time")
        if not ls:
            ok = [e["created"] for e in entries_of(self.config) if good(e)]
            ls = max(ok, default=None)
        last = datetime.fromisoformat(ls) if ls else None
        started = st.get("started_at")
        return last or (datetime.fromisoformat(started) if started else None), last

    # -- local outputs --------------------------------------------------------------------------
    def _outputs(self) -> None:
        c = self.config
        if c.metrics_file is not None:
            from .metrics import write_textfile

            self._local(
                "metrics", "the metrics file", c.metrics_file, lambda p: write_textfile(c, p, self.clock.now)
            )
        if c.report_file is not None:
            from .report import write_report

            self._local("report", "the report", c.report_file, lambda p: write_report(c, p, self.clock.now()))

    def _local(self, key: str, what: str, path: Any, write: Callable[[Any], None]) -> None:
        """Write one local output in the background; a failure is logged and recorded as
        ``{key}_last_error``."""

        def job(left: float) -> None:
            try:
                write(path)
                self._record(key, None)
            except OSError as e:
                err = f"cannot write {what} {path}: {e.strerror or e}"
                event(f"{key}.failed", err, level=self._level())
                self._record(key, err)

        self._submit(key, key, job)

    # -- call sites -----------------------------------------------------------------------------
    def run_started(self, tier: str, trigger: str) -> None:
        self.trigger = trigger
        try:
            self.before = self._state()
            self.runlog = _RunLog()
            glog.log.addHandler(self.runlog)
            if self.config.ping_url:
                self.rid = str(uuid.uuid4())
                self._ping("start", None)
        except Exception as e:  # noqa: BLE001
            event("observe.error", f"run start: {type(e).__name__}: {e}", level=logging.WARNING)

    def run_finished(self, out: Any) -> float:
        """After a run, whatever its outcome; returns the seconds it waited for the sends."""
        try:
            lines: list[str] = []
            if self.runlog is not None:
                glog.log.removeHandler(self.runlog)
                lines = list(self.runlog.lines)
                fails = self.runlog.events.count("backup.verify_failed")
                self.runlog = None
                if fails:
                    self._update(
                        lambda st: st.update(
                            verify_failures_total=int(st.get("verify_failures_total") or 0) + fails
                        )
                    )
            if out.status == "interrupted":
                return 0.0  # SIGTERM: exit promptly, no verdict (the next start runs a catch-up backup)
            now = self.clock.now()
            if self.config.ping_url:
                head = [f"gofr-backup {self.config.project}@{self.host}: {out.status}"]
                if out.error:
                    head.append(f"error: {out.error}")
                head += [f"warning: {w}" for w in out.warnings[-20:]]
                self._ping("success" if out.status == "ok" else "fail", "\n".join(head + ["", *lines]) + "\n")
            if self.config.notify_urls:
                for msg, slot, stamp in self._decide(out, self._state(), now):
                    self._send(msg, slot, stamp)
            self._outputs()
            return self.wait()
        except Exception as e:  # noqa: BLE001
            event("observe.error", f"run end: {type(e).__name__}: {e}", level=logging.WARNING)
            return 0.0

    def drill_done(self) -> None:
        """After a restore drill recorded its result (the state's `last_drill`, or an entry's
        `drill`): notify a failed one (NOTIFY_ON `drill`), refresh the metrics file and report.
        Runs notice a new drill result too; this is for a drill outside a run."""
        try:
            if self.config.notify_urls:
                for msg, slot, stamp in self._decide(None, self._state(), self.clock.now()):
                    self._send(msg, slot, stamp)
            self._outputs()
            self.wait()
        except Exception as e:  # noqa: BLE001
            event("observe.error", f"after a drill: {type(e).__name__}: {e}", level=logging.WARNING)

    def verified(self, ok: bool) -> None:
        if not ok:
            self._update(
                lambda st: st.update(verify_failures_total=int(st.get("verify_failures_total") or 0) + 1)
            )

    def service_started(self) -> None:
        c = self.config
        if c.metrics_addr is not None:
            from .observe_config import addr_text

            try:
                from .metrics import serve

                self.server = serve(c, c.metrics_addr, self.clock.now)
                event("metrics.listening", f"metrics on http://{addr_text(c.metrics_addr)}/metrics")
                self._record("metrics_listener", None)
            except OSError as e:
                err = (
                    f"cannot listen on {addr_text(c.metrics_addr)} for metrics ({e.strerror or e}); "
                    f"metrics are off, backups go on: free the port or change {c.prefix}METRICS_ADDR"
                )
                event("metrics.failed", err, level=logging.ERROR)
                self._record("metrics_listener", err)
        self._outputs()
        self.wait()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- staleness while the service sleeps ----------------------------------------------------------
    def next_stale_check(self, now: datetime) -> datetime | None:
        c = self.config
        notifies = bool(c.notify_urls) and "failure" in c.notify_on
        if not c.enabled or not (notifies or c.metrics_file or c.report_file):
            return None  # nobody to tell: the metrics listener and `status` read the state as they go
        st = self._state()
        ref, _ = self._stale_ref(st)
        if ref is None:
            return None
        at = ref + 2 * self._gap(now) + timedelta(seconds=1)
        a = (st.get("notify_active") or {}).get("stale")
        if a and _utc(at) <= _utc(now):
            at = datetime.fromisoformat(a["time"]) + REPEAT_AFTER
        return max(_utc(at), _utc(now) + timedelta(seconds=60))

    def check_stale(self) -> None:
        try:
            now = self.clock.now()
            st = self._state()
            s = self._staleness(st, now)
            if s and self.config.notify_urls:
                err = (
                    (st.get("last_failure") or {}).get("error") if st.get("last_result") == "failed" else None
                )
                msg = notify.stale(self.config.project, self.host, *s, err, st.get("last_success"), now)
                active: dict[str, Any] = dict(st.get("notify_active") or {})
                fresh = _activate(active, msg, now)
                self._update(lambda x: x.update(notify_active=active))
                if fresh and "failure" in self.config.notify_on:
                    self._send(msg, "stale", _iso(now))
            self._outputs()
            self.wait()
        except Exception as e:  # noqa: BLE001
            event("observe.error", f"staleness check: {type(e).__name__}: {e}", level=logging.WARNING)

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        """The clock's wait_until, waking up on the way whenever backups turn stale."""
        while True:
            try:
                at = self.next_stale_check(self.clock.now())
            except Exception:  # noqa: BLE001 - never let the scheduler loop die of this
                at = None
            if at is None or at >= _utc(when):
                return bool(self.clock.wait_until(when, stop))
            if self.clock.wait_until(at, stop):
                return True
            self.check_stale()


def _activate(active: dict[str, Any], msg: Message, now: datetime) -> bool:
    """Mark ``msg``'s failure as notified in ``active``; False when the same was notified less
    than a day ago (then nothing changes)."""
    slot = SLOT[msg.kind]
    a: dict[str, Any] = active.get(slot) or {}
    same = a.get("key") == msg.key
    if same and now - datetime.fromisoformat(a["time"]) < REPEAT_AFTER:
        event(
            "notify.suppressed",
            f"not notifying again ({msg.kind}): the same was notified at {a['time']}",
            kind=msg.kind,
        )
        return False
    t = _iso(now)
    active[slot] = {"key": msg.key, "time": t, "since": a["since"] if same else t}
    return True
