"""Retention of chained archives (issue 17): limits apply to restore points, a kept restore point
keeps its whole chain, the protected backup is a restorable one, deletions go children first, and a
``.snap`` lives and dies with its archive.

The README's "Retention" section is the specification. The property tests draw random manifests of
chains (fulls and incrementals with parent links across days, random verified/complete flags,
broken links of every kind chain.py knows, random policies and "now"), and check what must never
happen (a kept restore point losing an archive it needs, the newest restorable backup going, a
parent deleted before its child) plus the exact outcome against a model written from the README.
The CLI tests build real chains with incremental.write_chained over a real tree that changes
between runs, and run ``gofr-backup prune`` as a subprocess.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dateutil.relativedelta import relativedelta
from gofrtest import cli_env, manifest, run_cli, write
from hypothesis import given, settings
from hypothesis import strategies as st

from gofr_common.backup import layout
from gofr_common.backup.chain import chain_of, kind_of
from gofr_common.backup.config import BackupConfig
from gofr_common.backup.incremental import SNAP_SUFFIX, load_snapshot, snapshot_path, write_chained
from gofr_common.backup.manifest import Manifest, new_entry
from gofr_common.backup.retention import Policy, plan_retention, remove_dead_leftovers, retention_plan
from gofr_common.backup.writer import WriteResult

NOW = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)


# -- random manifests of chains --------------------------------------------------------------------
def _failed(e: dict[str, Any]) -> bool:
    return e.get("verified") is False and not e.get("archive_intact")


@st.composite
def chains(draw: Any) -> tuple[list[dict[str, Any]], Policy, datetime]:
    """A manifest of one project: daily fulls and incrementals made in time order, each
    incremental over an earlier daily archive (mostly the one just before: a chain; sometimes an
    older one: a branch), with the links recorded as the writer does; then some links damaged (a
    parent's checksum, a wrong full, an unrecorded or malformed parent, a loop) and some entries
    dropped (a parent missing); plus a few weekly and monthly fulls."""
    policy = draw(
        st.builds(
            Policy,
            retention_days=st.integers(1, 60),
            max_count=st.integers(1, 8),
            weekly_weeks=st.integers(1, 8),
            monthly_months=st.integers(1, 6),
        )
    )
    n = draw(st.integers(0, 36))
    minutes = sorted(draw(st.lists(st.integers(0, 40 * 24 * 60), min_size=n, max_size=n, unique=True)))
    entries: list[dict[str, Any]] = []
    for i, m in enumerate(minutes):  # m minutes after the start: oldest first
        tier = draw(st.sampled_from(["daily"] * 8 + ["weekly", "monthly"]))
        name = f"gofr-plot_{tier}_{i:03d}"
        e: dict[str, Any] = {
            "project": "plot",
            "filename": name,
            "path": f"{tier}/{name}",
            "tier": tier,
            "created": (NOW - timedelta(days=40) + timedelta(minutes=m)).isoformat(),
            "sha256": f"sha-{i}",
            "verified": draw(st.sampled_from([True, True, True, True, None, False])),
            "verify_error": "boom",
        }
        complete = draw(st.sampled_from([True, True, True, False, None]))
        if complete is not None:
            e["complete"] = complete
        if e["verified"] is False and draw(st.integers(0, 3)) == 0:
            e["archive_intact"] = True
        earlier = [o for o in entries if o["tier"] == "daily"]
        if tier == "daily" and earlier and draw(st.integers(0, 3)) > 0:
            parent = earlier[-1] if draw(st.integers(0, 4)) > 0 else draw(st.sampled_from(earlier))
            link = {"filename": parent["filename"], "sha256": parent["sha256"]}
            full = parent.get("full") or link
            e.update(kind="incremental", parent=link, full=full)
        elif draw(st.booleans()):
            e.update(kind="full", parent=None, full=None)  # else: no kind at all (full mode)
        entries.append(e)
    daily = [e for e in entries if e["tier"] == "daily"]
    incs = [e for e in daily if e.get("kind") == "incremental"]
    for e in incs:  # damaged links, each rarely
        damage = draw(st.sampled_from(["none"] * 30 + ["sha", "full", "parent-none", "malformed", "loop"]))
        if damage == "sha":
            e["parent"] = {**e["parent"], "sha256": "another"}
        elif damage == "full":
            e["full"] = {"filename": e["filename"], "sha256": e["sha256"]}
        elif damage == "parent-none":
            e["parent"] = None
        elif damage == "malformed":
            e["parent"] = {"filename": 7}
        elif damage == "loop":
            later = draw(st.sampled_from(daily))
            e["parent"] = {"filename": later["filename"], "sha256": later["sha256"]}
    drop = draw(st.sets(st.sampled_from([e["filename"] for e in entries]), max_size=2)) if entries else set()
    entries = [e for e in entries if e["filename"] not in drop]
    now = NOW + timedelta(minutes=draw(st.integers(0, 20 * 24 * 60)))
    return entries, policy, now


def _created(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["created"])


def _restorable(entries: list[dict[str, Any]], e: dict[str, Any]) -> bool:
    """README: a restore point is restorable when its chain is intact (every link there and
    matching) and no archive before it failed verification (not even only its .sha256 file)."""
    c = chain_of(entries, e)  # type: ignore[arg-type]
    return c.ok and all(a.get("verified") is not False for a in c.archives[:-1])


def _paths(es: list[Any]) -> set[str]:
    return {e["path"] for e in es}


@settings(max_examples=300, deadline=None)
@given(chains())
def test_no_kept_restore_point_ever_loses_an_archive_it_needs(
    s: tuple[list[dict[str, Any]], Policy, datetime],
) -> None:
    entries, policy, now = s
    plan = retention_plan(entries, now, policy)  # type: ignore[arg-type]
    deleted = [e for e, _ in plan.delete]
    gone = _paths(deleted)
    assert len(gone) == len(deleted), "nothing is deleted twice"
    kept = [e for e in entries if e["path"] not in gone]
    for k in kept:  # every archive a kept one needs is kept (a failed one can serve no restore)
        need = [a for a in chain_of(entries, k).archives if not _failed(a)]  # type: ignore[arg-type]
        assert not _paths(need) & gone, (k["path"], _paths(need) & gone)
    # the newest complete, verified, restorable restore point of each tier is kept, chain and all
    for tier in ("daily", "weekly", "monthly"):
        good = [
            e
            for e in entries
            if e["tier"] == tier
            and not _failed(e)
            and e.get("verified") is True
            and e.get("complete") is True
            and _restorable(entries, e)
        ]
        if good:
            best = max(good, key=_created)
            assert not _paths(chain_of(entries, best).archives) & gone  # type: ignore[arg-type]
    # children first: an archive is deleted after every deleted archive that names it as parent
    at = {e["path"]: i for i, e in enumerate(deleted)}
    for e in deleted:
        p = e.get("parent")
        if kind_of(e) == "incremental" and isinstance(p, dict):
            pp = f"{e['tier']}/{p.get('filename')}"
            if pp in at and pp != e["path"]:
                assert at[e["path"]] < at[pp] or at[pp] < at[e["path"]] and _in_loop(entries, e), (
                    f"{pp} deleted before its child {e['path']}"
                )
    # what prune reports as "kept: needed by": not deleted, would have gone, and needed by the
    # kept restore points it names, which are kept
    for e, why, by in plan.needed:
        assert e["path"] not in gone and by
        assert why.startswith(("older than the", "beyond MAX_COUNT="))
        for k in by:
            assert k["path"] not in gone
            assert e["path"] in _paths(chain_of(entries, k).archives)  # type: ignore[arg-type]
    # plan_retention is the same plan's deletions (offsite.py's remote retention calls it)
    assert [(e["path"], w) for e, w in plan_retention(entries, now, policy)] == [  # type: ignore[arg-type]
        (e["path"], w) for e, w in plan.delete
    ]


def _in_loop(entries: list[dict[str, Any]], e: dict[str, Any]) -> bool:
    """Whether following ``e``'s parents by name comes back to ``e`` (a damaged manifest): there is
    no children-first order then."""
    by = {x["filename"]: x for x in entries if x["tier"] == e["tier"]}
    cur, seen = e, set()
    while True:
        p = cur.get("parent")
        if not isinstance(p, dict) or p.get("filename") not in by or cur["filename"] in seen:
            return False
        seen.add(cur["filename"])
        cur = by[p["filename"]]
        if cur is e:
            return True


def model(
    entries: list[dict[str, Any]], now: datetime, p: Policy
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """From the README's rules: (path -> the rule that deletes it, for every archive deleted;
    path -> the kept restore points that need it, for every archive kept only for them)."""
    limit = {
        "daily": now - timedelta(days=p.retention_days),
        "weekly": now - timedelta(weeks=p.weekly_weeks),
        "monthly": now - relativedelta(months=p.monthly_months),
    }
    out: dict[str, str] = {}
    needs: dict[str, set[str]] = {}
    for tier in ("daily", "weekly", "monthly"):
        same = [e for e in entries if e["tier"] == tier]
        good = [e for e in same if not _failed(e)]
        for e in same:
            if _failed(e) and (good or e is not max(same, key=_created)):
                out[e["path"]] = "failed"  # rule 1: the last of a tier stays
        # rule 2 over the restorable restore points (all of them when none is)
        pool = [e for e in good if _restorable(entries, e)] or good
        verified = [o for o in pool if o.get("verified") is True]
        whole = [o for o in pool if o.get("complete") is True]
        vw = [o for o in verified if o in whole]

        def newest(xs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [max(xs, key=_created)] if xs else []

        prot = newest(vw) + newest(verified)
        if not vw:
            prot += newest(whole)
        if not verified:
            prot += newest(pool)
        if not whole:
            prot += [o for o in pool if o.get("complete") is None]
        protected = {o["path"] for o in prot}
        why: dict[str, str] = {}
        for e in good:
            if e["path"] in protected:
                continue
            if _created(e) < limit[tier]:
                why[e["path"]] = "age"
            elif tier == "daily":
                # protected ones take places; then restorable ones newest first; then the rest
                ok = _restorable(entries, e)
                ahead = [
                    o
                    for o in good
                    if o["path"] not in protected
                    and _created(o) >= limit[tier]
                    and (
                        (_restorable(entries, o) and not ok)
                        or (_restorable(entries, o) == ok and _created(o) > _created(e))
                    )
                ]
                if len(protected) + len(ahead) >= p.max_count:
                    why[e["path"]] = "count"
        kept_points = [e for e in good if e["path"] not in why]
        for k in kept_points:
            for a in chain_of(entries, k).archives:  # type: ignore[arg-type]
                if a is not k and not _failed(a) and a["path"] in why:
                    needs.setdefault(a["path"], set()).add(k["path"])
        out.update({x: w for x, w in why.items() if x not in needs})
    return out, needs


def _rule(reason: str) -> str:
    if reason.startswith("failed verification"):
        return "failed"
    if reason.startswith("older than the"):
        return "age"
    assert reason.startswith("beyond MAX_COUNT="), reason
    return "count"


@settings(max_examples=300, deadline=None)
@given(chains())
def test_retention_of_chains_is_what_the_readme_rules_say(
    s: tuple[list[dict[str, Any]], Policy, datetime],
) -> None:
    entries, policy, now = s
    plan = retention_plan(entries, now, policy)  # type: ignore[arg-type]
    want_deleted, want_needed = model(entries, now, policy)
    assert {e["path"]: _rule(w) for e, w in plan.delete} == want_deleted
    assert {e["path"]: _paths(by) for e, _, by in plan.needed} == want_needed


def test_the_chain_model_on_hand_worked_examples() -> None:
    """The model (and the code) against outcomes worked out by hand from the README."""

    def e(
        name: str, days: float, parent: str | None = None, full: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        x: dict[str, Any] = {
            "project": "plot",
            "filename": name,
            "path": f"daily/{name}",
            "tier": "daily",
            "created": (NOW - timedelta(days=days)).isoformat(),
            "sha256": f"sha-{name}",
            "verified": True,
            "complete": True,
            "kind": "full" if parent is None else "incremental",
            "parent": None if parent is None else {"filename": parent, "sha256": f"sha-{parent}"},
            "full": None
            if parent is None
            else {"filename": full or parent, "sha256": f"sha-{full or parent}"},
        }
        return {**x, **kw}

    p = Policy(retention_days=7, max_count=3)
    # A: a chain whose full is older than the limit, with an incremental inside it: all kept
    es = [e("a0", 12), e("a1", 11, "a0"), e("a2", 10, "a1", "a0"), e("a3", 6, "a2", "a0")]
    for x in (model(es, NOW, p), _plan_of(es, p)):
        assert x == ({}, {"daily/a0": {"daily/a3"}, "daily/a1": {"daily/a3"}, "daily/a2": {"daily/a3"}})
    # B: a newer chain: the older chain (all beyond the age limit) goes as a unit, newest first
    es = [e("a0", 12), e("a1", 11, "a0"), e("a2", 9, "a1", "a0"), e("b0", 8), e("b1", 2, "b0")]
    want = ({"daily/a0": "age", "daily/a1": "age", "daily/a2": "age"}, {"daily/b0": {"daily/b1"}})
    assert model(es, NOW, p) == want == _plan_of(es, p)
    assert [x["filename"] for x, _ in plan_retention(es, NOW, p)] == ["a2", "a1", "a0"]  # type: ignore[arg-type]
    # C: MAX_COUNT counts restore points; what they need is kept on top
    es = [
        e("b0", 5),
        e("b1", 4, "b0"),
        e("b2", 3, "b1", "b0"),
        e("b3", 2, "b2", "b0"),
        e("b4", 1, "b3", "b0"),
    ]
    kept = {"daily/b2", "daily/b3", "daily/b4"}
    assert model(es, NOW, p) == ({}, {"daily/b0": kept, "daily/b1": kept}) == _plan_of(es, p)
    # D: a broken link (b1 failed): the newest restorable point is b0, protected whatever its age;
    # b2 and b3 (after the broken link) protect nothing and the failed b1 goes
    es = [e("b0", 40), e("b1", 3, "b0", verified=False), e("b2", 2, "b1", "b0"), e("b3", 1, "b2", "b0")]
    assert model(es, NOW, p) == ({"daily/b1": "failed"}, {}) == _plan_of(es, p)
    # E: a replaced parent (another checksum): b2's chain is broken, b1's is not
    es = [e("b0", 40), e("b1", 30, "b0"), e("b2", 1, "b1", "b0")]
    es[2]["parent"]["sha256"] = "replaced"
    assert model(es, NOW, p) == ({}, {"daily/b0": {"daily/b1"}}) == _plan_of(es, p)


def _plan_of(es: list[dict[str, Any]], p: Policy) -> tuple[dict[str, str], dict[str, set[str]]]:
    plan = retention_plan(es, NOW, p)  # type: ignore[arg-type]
    return {e["path"]: _rule(w) for e, w in plan.delete}, {e["path"]: _paths(by) for e, _, by in plan.needed}


# -- real chains on disk, pruned by the CLI ---------------------------------------------------------
class Chains:
    """A real tree, and chained archives of it written with incremental.write_chained, each added
    to the manifest as a verified, complete entry with ``kind``, ``parent`` and ``full``."""

    def __init__(self, tmp_path: Path) -> None:
        self.data, self.backups = tmp_path / "data", tmp_path / "backups"
        for i in range(6):
            write(self.data / "storage" / f"f{i}.txt", f"file {i}\n" * 200)
        write(self.data / "storage" / "sub" / "deep.txt", "deep\n")
        self.env = cli_env(self.data, self.backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
        self.config = BackupConfig.from_env(env=self.env)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.step = 0

    def change(self) -> None:
        """Something different each run: a file modified, one added, one deleted."""
        self.step += 1
        s = self.data / "storage"
        write(s / f"f{self.step % 6}.txt", f"changed on step {self.step}\n")
        write(s / f"new{self.step}.txt", f"added on step {self.step}\n")
        if self.step == 2:
            (s / "sub" / "deep.txt").unlink()

    def run(self, days_ago: float, parent: WriteResult | None = None, **fields: Any) -> WriteResult:
        """Write a full (``parent`` None) or an incremental over ``parent``, ``days_ago`` days ago,
        and record it in the manifest."""
        self.change()
        created = self.now - timedelta(days=days_ago)
        base = None if parent is None else load_snapshot(parent.path, parent.sha256)
        w = write_chained(self.config, "daily", created, base)
        assert snapshot_path(w.path).is_file()
        e = new_entry(
            project="plot",
            filename=w.filename,
            tier="daily",
            created=created.isoformat(),
            size_bytes=w.size_bytes,
            sha256=w.sha256,
            compression=self.config.compression,
            file_count=w.file_count,
            source_bytes=w.source_bytes,
            trigger="schedule",
            complete=w.complete,
        )
        chain = w.meta.get("chain")
        e.update(  # type: ignore[typeddict-item]
            {
                "kind": w.meta["kind"],
                "parent": chain and chain["parent"],
                "full": chain and chain["full"],
                "verified": True,
                "verified_at": self.now.isoformat(),
                **fields,
            }
        )
        Manifest(self.backups).add(e)
        return w

    def files(self) -> set[str]:
        return {p.name for p in (self.backups / "daily").iterdir()}

    def prune(self, *args: str, **limits: str) -> Any:
        env = {**self.env, **{f"GOFR_PLOT_BACKUP_{k}": v for k, v in limits.items()}}
        r = run_cli("prune", *args, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stderr == "" or "Traceback" not in r.stderr
        return json.loads(r.stdout) if "--json" in args else r.stdout


def _with_extras(w: WriteResult) -> set[str]:
    return {w.filename, w.filename + layout.SIDECAR_SUFFIX, w.filename + SNAP_SUFFIX}


def test_prune_keeps_what_kept_restore_points_need_and_deletes_whole_chains_newest_first(
    tmp_path: Path,
) -> None:
    c = Chains(tmp_path)
    a0 = c.run(12)
    a1 = c.run(11, a0)
    a2 = c.run(10, a1)
    a3 = c.run(6.5, a2)
    b0 = c.run(5.5)
    b1 = c.run(4, b0)
    b2 = c.run(3, b1)
    b3 = c.run(2, b2)
    assert load_snapshot(b3.path, b3.sha256).full == {"filename": b0.filename, "sha256": b0.sha256}
    a, b = [a0, a1, a2, a3], [b0, b1, b2, b3]
    everything = set().union(*(_with_extras(w) for w in a + b))
    assert c.files() == everything

    # RETENTION_DAYS=8: a0..a2 are older, but a3 is kept and needs them
    out = c.prune(RETENTION_DAYS="8")
    assert c.files() == everything
    for w in (a0, a1, a2):
        assert (
            f"kept daily/{w.filename}: needed by daily/{a3.filename} "
            "(on its own it would go: older than the daily limit (RETENTION_DAYS=8))"
        ) in out
    assert "0 archives deleted, 8 kept" in out

    # RETENTION_DAYS=5: chain a is wholly out and goes as a unit, newest first, each with its
    # .sha256 and .snap; b0 is older than 5 days but b1..b3 need it
    dry = c.prune("--dry-run", "--json", RETENTION_DAYS="5")
    assert c.files() == everything
    assert [d["filename"] for d in dry["deleted"]] == [a3.filename, a2.filename, a1.filename, a0.filename]
    assert dry["needed"] == [
        {
            "filename": b0.filename,
            "path": f"daily/{b0.filename}",
            "tier": "daily",
            "reason": "older than the daily limit (RETENTION_DAYS=5)",
            "needed_by": [f"daily/{w.filename}" for w in (b1, b2, b3)],
        }
    ]
    dry_text = c.prune("--dry-run", RETENTION_DAYS="5")
    assert f"would keep daily/{b0.filename}: needed by daily/{b1.filename} and 2 others" in dry_text
    assert c.files() == everything
    out = c.prune(RETENTION_DAYS="5")
    assert [ln.split(":")[0] for ln in out.splitlines() if ln.startswith("deleted ")] == [
        f"deleted daily/{w.filename}" for w in (a3, a2, a1, a0)
    ]
    assert f"kept daily/{b0.filename}: needed by daily/{b1.filename} and 2 others (on its own" in out
    assert c.files() == set().union(*(_with_extras(w) for w in b))
    assert _paths(manifest(c.backups)) == {f"daily/{w.filename}" for w in b}

    # MAX_COUNT=2: b3 and b2 are the two restore points kept; b1 and b0 are what they need
    out = c.prune("--json", MAX_COUNT="2")
    assert out["deleted"] == []
    assert {(n["filename"], n["reason"]) for n in out["needed"]} == {
        (b1.filename, "beyond MAX_COUNT=2"),
        (b0.filename, "beyond MAX_COUNT=2"),
    }
    assert all(n["needed_by"] == [f"daily/{b2.filename}", f"daily/{b3.filename}"] for n in out["needed"])
    assert c.files() == set().union(*(_with_extras(w) for w in b))

    # a new chain: now chain b falls out of MAX_COUNT as a whole
    c0 = c.run(1)
    c1 = c.run(0.5, c0)
    out = c.prune("--json", MAX_COUNT="2")
    assert [d["filename"] for d in out["deleted"]] == [w.filename for w in (b3, b2, b1, b0)]
    assert out["needed"] == []
    assert c.files() == _with_extras(c0) | _with_extras(c1)


def test_the_protected_backup_is_a_restorable_restore_point_with_its_chain(tmp_path: Path) -> None:
    """Everything is older than RETENTION_DAYS but for a newer chain whose full failed
    verification: the restore points after the broken link protect nothing, so the newest
    restorable one (an old incremental) is protected with its whole chain, and the failed full
    goes with its .snap after being verified once more."""
    c = Chains(tmp_path)
    f0 = c.run(40)
    i1 = c.run(39, f0)
    i2 = c.run(38, i1)
    g0 = c.run(2)
    g1 = c.run(1, g0)
    data = bytearray(g0.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    g0.path.write_bytes(bytes(data))
    doc = json.loads((c.backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == g0.filename:
            e.update(verified=False, verify_error="checksum mismatch")
    (c.backups / "manifest.json").write_text(json.dumps(doc))

    out = c.prune()
    assert f"deleted daily/{g0.filename}: failed verification" in out
    assert f"verified once more before deleting: daily/{g0.filename}: verified again: still bad" in out
    assert f"kept daily/{f0.filename}: needed by daily/{i2.filename}" in out
    assert f"kept daily/{i1.filename}: needed by daily/{i2.filename}" in out
    # i2 is protected (not reported: it is a restore point kept in its own right); g1, after the
    # broken link, is within the limit and stays, but protects nothing
    assert c.files() == set().union(*(_with_extras(w) for w in (f0, i1, i2, g1)))


def test_an_adopted_incremental_keeps_its_chain(tmp_path: Path) -> None:
    """An incremental whose manifest entry was lost (a kill between the rename and the manifest
    update) is adopted with its kind, parent and full read from its header: its parents stay."""
    c = Chains(tmp_path)
    f0 = c.run(12)
    i1 = c.run(11, f0)
    c.run(3)
    c.run(2, None)  # a newer chain takes the protection
    i2 = c.run(1, i1)
    doc = json.loads((c.backups / "manifest.json").read_text())
    doc["backups"] = [e for e in doc["backups"] if e["filename"] != i2.filename]
    (c.backups / "manifest.json").write_text(json.dumps(doc))

    out = c.prune(RETENTION_DAYS="5")
    assert f"adopted untracked archive daily/{i2.filename}" in out
    assert f"kept daily/{f0.filename}: needed by daily/{i2.filename}" in out
    assert f"kept daily/{i1.filename}: needed by daily/{i2.filename}" in out
    (adopted,) = [e for e in manifest(c.backups) if e["filename"] == i2.filename]
    assert adopted["kind"] == "incremental"
    assert adopted["parent"] == {"filename": i1.filename, "sha256": i1.sha256}
    assert adopted["full"] == {"filename": f0.filename, "sha256": f0.sha256}
    assert {f0.filename, i1.filename, i2.filename} <= c.files()


def test_orphan_and_partial_snapshots_are_cleaned_only_for_this_project(tmp_path: Path) -> None:
    c = Chains(tmp_path)
    f0 = c.run(2)
    i1 = c.run(1, f0)
    daily = c.backups / "daily"
    snap = (daily / (i1.filename + SNAP_SUFFIX)).read_bytes()
    orphan = "gofr-plot_daily_20200101_000000.tar.gz" + SNAP_SUFFIX
    dead = "gofr-plot_daily_20200102_000000.tar.gz" + SNAP_SUFFIX + layout.PARTIAL_SUFFIX
    others = {
        "gofr-other_daily_20200101_000000.tar.gz" + SNAP_SUFFIX: snap,  # another project's
        "gofr-other_daily_20200102_000000.tar.gz" + SNAP_SUFFIX + layout.PARTIAL_SUFFIX: b"x",
        "notes.snap": b"not an archive's",
    }
    for n, b in {orphan: snap, dead: b"partial", **others}.items():
        (daily / n).write_bytes(b)
    canary = write(tmp_path / "canary", "reached through a symlink")
    linked = "gofr-plot_daily_20200103_000000.tar.gz" + SNAP_SUFFIX
    os.symlink(canary, daily / linked)
    # an archive lost from disk: its entry, .sha256 and .snap are cleaned
    lost = c.run(0.5, i1)
    lost.path.unlink()

    out = c.prune()
    assert f"cleaned daily/{orphan} (snapshot file without archive)" in out
    assert f"cleaned daily/{dead} (unfinished snapshot of a dead process)" in out
    assert f"cleaned daily/{lost.filename} (manifest entry; archive is missing)" in out
    assert f"skipped (not ours to delete): daily/{linked} is not a regular file" in out
    assert c.files() == _with_extras(f0) | _with_extras(i1) | set(others) | {linked}
    assert canary.read_text() == "reached through a symlink"

    # the leftover cleanup a backup runs first removes the same kinds, under the same rules
    for n, b in {orphan: snap, dead: b"partial"}.items():
        (daily / n).write_bytes(b)
    removed = remove_dead_leftovers(c.config)
    assert sorted(r.split(" (")[0] for r in removed) == sorted([f"daily/{orphan}", f"daily/{dead}"])
    assert c.files() == _with_extras(f0) | _with_extras(i1) | set(others) | {linked}


def test_full_mode_prunes_as_before_with_snapshots_of_nobody(tmp_path: Path) -> None:
    """Archives written in full mode (no kind): each is its own restore point, as before; a
    ``.snap`` beside a full-mode archive (none is written, but one may be copied in) goes with it."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    names = []
    for i in range(3):
        write(data / "storage" / "f.txt", f"x{i}")
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        names.append(json.loads(r.stdout)["filename"])
    assert all("kind" not in e for e in manifest(backups))
    (backups / "daily" / (names[0] + SNAP_SUFFIX)).write_bytes(b"stray")
    r = run_cli("prune", "--json", env={**env, "GOFR_PLOT_BACKUP_MAX_COUNT": "1"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [d["filename"] for d in out["deleted"]] == [names[1], names[0]]
    assert out["needed"] == []
    assert {p.name for p in (backups / "daily").iterdir()} == {names[2], names[2] + layout.SIDECAR_SUFFIX}
