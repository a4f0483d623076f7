"""Property-based tests of the retention rules (plan_retention is pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st

from gofr_common.backup.retention import Policy, plan_retention

NOW = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)


@st.composite
def scenario(draw: Any) -> tuple[list[dict[str, Any]], Policy]:
    policy = Policy(
        retention_days=draw(st.integers(1, 60)),
        max_count=draw(st.integers(1, 20)),
        weekly_weeks=draw(st.integers(1, 12)),
        monthly_months=draw(st.integers(1, 18)),
    )
    n = draw(st.integers(0, 40))
    entries = []
    for i in range(n):
        age = draw(st.integers(0, 800 * 24 * 60))  # minutes, up to ~800 days
        entries.append(
            {
                "filename": f"f{i:03d}",
                "path": f"x/f{i:03d}",
                "tier": draw(st.sampled_from(["daily", "weekly", "monthly"])),
                "created": (NOW - timedelta(minutes=age)).isoformat(),
                "verified": draw(st.sampled_from([True, True, True, False, None])),
                "verify_error": "boom",
            }
        )
    return entries, policy


def limit(tier: str, p: Policy) -> datetime:
    return {
        "daily": NOW - timedelta(days=p.retention_days),
        "weekly": NOW - timedelta(weeks=p.weekly_weeks),
        "monthly": NOW - relativedelta(months=p.monthly_months),
    }[tier]


def key(e: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(e["created"]), e["filename"]


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_retention_invariants(s: tuple[list[dict[str, Any]], Policy]) -> None:
    entries, p = s
    plan = plan_retention(entries, NOW, p)
    deleted = {e["filename"] for e, _ in plan}
    assert len(deleted) == len(plan), "nothing is deleted twice"
    for tier in ("daily", "weekly", "monthly"):
        es = sorted((e for e in entries if e["tier"] == tier), key=key, reverse=True)
        kept = [e for e in es if e["filename"] not in deleted]
        good = [e for e in es if e["verified"] is not False]
        # 1. failed archives go: none is kept -- unless nothing else is left in the tier, when the
        # newest failed one stays, flagged (issue 12 item 11: a tier never loses its last archive)
        if good:
            assert all(e["verified"] is not False for e in kept)
        elif es:
            assert [e["filename"] for e in kept] == [es[0]["filename"]]
        # 2. the newest verified archive survives, whatever its age
        newest_verified = next((e for e in es if e["verified"] is True), None)
        if newest_verified:
            assert newest_verified["filename"] not in deleted
        elif good:  # nothing verified: the newest not known to be bad survives
            assert good[0]["filename"] not in deleted
        # 3. counts stay within the limit
        if tier == "daily":
            assert len(kept) <= p.max_count
        # 4. nothing younger than its limit is deleted, except by failure or by the count
        cutoff = limit(tier, p)
        young_good = [e for e in good if key(e)[0] >= cutoff]
        if tier == "daily":
            protected = newest_verified or (good[0] if good else None)
            slots = p.max_count - (
                1 if protected is not None and protected not in young_good[: p.max_count] else 0
            )
            young_good = young_good[:slots]
        for e in young_good:
            assert e["filename"] not in deleted, (e, p)
        # 5. anything kept is young enough, or the protected one (or the last of its tier, item 1)
        for e in (x for x in kept if x["verified"] is not False):
            assert key(e)[0] >= cutoff or e is (newest_verified or good[0])


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_failed_archives_do_not_change_what_happens_to_good_ones(
    s: tuple[list[dict[str, Any]], Policy],
) -> None:
    entries, p = s
    plan = plan_retention(entries, NOW, p)
    good = [e for e in entries if e["verified"] is not False]
    deleted_good = {e["filename"] for e, _ in plan if e["verified"] is not False}
    # failed archives take no MAX_COUNT slot and protect nothing: the good ones fare exactly as
    # if the failed ones were not there
    assert deleted_good == {e["filename"] for e, _ in plan_retention(good, NOW, p)}
    reasons = {e["filename"]: why for e, why in plan}
    for e in entries:
        if e["verified"] is False:
            tier = [x for x in entries if x["tier"] == e["tier"]]
            if all(x["verified"] is False for x in tier) and e is max(tier, key=key):
                assert e["filename"] not in reasons  # the last of its tier: kept, flagged (item 11)
                continue
            assert reasons[e["filename"]].startswith("failed verification")


def test_a_long_outage_keeps_the_last_good_backup() -> None:
    entries = [
        {
            "filename": f"d{i}",
            "path": f"daily/d{i}",
            "tier": "daily",
            "verified": True,
            "created": (NOW - timedelta(days=40 + i)).isoformat(),
        }
        for i in range(30)
    ]
    plan = plan_retention(entries, NOW, Policy(retention_days=30))
    assert {e["filename"] for e, _ in plan} == {f"d{i}" for i in range(1, 30)}
