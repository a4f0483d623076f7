"""Retention never deletes the backup that matters (issue 12, items 11 and 12). plan_retention is
pure: these properties are checked over generated catalogues, each expectation derived here from
the entries alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_retention_properties import policies

from gofr_common.backup.retention import Policy, plan_retention

NOW = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)


def _e(name: str, days: float, tier: str = "daily", **kw: Any) -> dict[str, Any]:
    return {
        "filename": name,
        "path": f"{tier}/{name}",
        "tier": tier,
        "created": (NOW - timedelta(days=days)).isoformat(),
        "verified": True,
        "complete": True,
        **kw,
    }


def test_the_newest_complete_verified_archive_is_protected_not_a_newer_incomplete_one() -> None:
    # issue 12 item 12: "the newest verified archive is never deleted" counted incomplete archives,
    # so the only complete backup was deleted by age as soon as an incomplete one was newer
    entries = [_e("incomplete-new", 1, complete=False), _e("complete-old", 45)]
    deleted = {e["filename"] for e, _ in plan_retention(entries, NOW, Policy(retention_days=30))}
    assert "complete-old" not in deleted
    assert "incomplete-new" not in deleted  # the newest verified one stays protected as well


def test_an_archive_of_unknown_completeness_does_not_cost_the_complete_one() -> None:
    # the breaker's r04: after a manifest rebuild (complete: null) and `verify --all`, the newer
    # archive (in truth incomplete) counted as "complete and verified", and MAX_COUNT=1 deleted the
    # only archive known to be complete
    entries = [_e("unknown-new", 0.5, complete=None), _e("complete-old", 1)]
    deleted = {e["filename"] for e, _ in plan_retention(entries, NOW, Policy(max_count=1))}
    assert "complete-old" not in deleted
    # no archive known complete (all rebuilt, none verified yet): none of them goes for age or count
    entries = [
        _e("new", 0.5, complete=None, verified=None),
        _e("mid", 1, complete=None, verified=None),
        _e("old", 45, complete=None, verified=None),
        _e("incomplete", 0.1, complete=False),
    ]
    assert plan_retention(entries, NOW, Policy(max_count=1)) == []


def test_the_last_archive_of_a_tier_is_kept_when_it_failed_verification() -> None:
    # issue 12 item 11: a tier's only archive was deleted for failed verification
    entries = [_e("only", 40, "monthly", verified=False, verify_error="checksum mismatch")]
    assert plan_retention(entries, NOW, Policy()) == []
    # with a good archive beside it, the failed one goes
    entries.append(_e("good", 10, "monthly"))
    plan = plan_retention(entries, NOW, Policy())
    assert [(e["filename"], why.split(":")[0]) for e, why in plan] == [("only", "failed verification")]


@st.composite
def catalogue(draw: Any) -> tuple[list[dict[str, Any]], Policy]:
    policy = draw(policies())
    entries = []
    for i in range(draw(st.integers(0, 30))):
        entries.append(
            _e(
                f"f{i:03d}",
                draw(st.integers(0, 800 * 24 * 60)) / (24 * 60),
                draw(st.sampled_from(["daily", "weekly", "monthly"])),
                verified=draw(st.sampled_from([True, True, False, None])),
                complete=draw(st.sampled_from([True, True, False, None])),
                verify_error="boom",
            )
        )
    return entries, policy


def _newest(es: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(es, key=lambda e: (e["created"], e["filename"]), default=None)


@settings(max_examples=300, deadline=None)
@given(catalogue())
def test_what_matters_is_never_deleted(c: tuple[list[dict[str, Any]], Policy]) -> None:
    # issue 12 items 11 and 12, as properties over any catalogue
    entries, policy = c
    plan = plan_retention(entries, NOW, policy)
    deleted = {e["filename"] for e, _ in plan}
    for tier in ("daily", "weekly", "monthly"):
        es = [e for e in entries if e["tier"] == tier]
        if not es:
            continue
        kept = [e for e in es if e["filename"] not in deleted]
        # a tier never loses its last archive
        assert kept, f"every {tier} archive was deleted"
        verified = [e for e in es if e["verified"] is True]
        restorable = [e for e in verified if e["complete"] is True]  # null: not known to be complete
        for must in (_newest(verified), _newest(restorable)):
            if must is not None:
                assert must["filename"] not in deleted, (must, plan)
        good = [e for e in es if e["verified"] is not False]
        if not any(e["complete"] is True for e in good):  # any of unknown completeness may be the one
            for e in good:
                if e["complete"] is None:
                    assert e["filename"] not in deleted, (e, plan)
        failed = [e for e in es if e["verified"] is False]
        if len(failed) < len(es):  # something not known to be bad remains: every failed one goes
            assert {e["filename"] for e in failed} <= deleted
        else:  # only failed ones: exactly the newest is kept, flagged
            assert [e["filename"] for e in kept] == [_newest(failed)["filename"]]  # type: ignore[index]
