"""Property-based tests of the retention rules (plan_retention is pure).

The expected outcome comes from a model written from the README's "Retention" section, one archive
at a time, and not from plan_retention's code:

1. an archive that failed verification is deleted, unless only its .sha256 file is damaged
   (``archive_intact``, README "Choices we made"): that one counts as good; and the last archive
   of a tier is never deleted for failing (no good one left: the newest failed one stays);
2. protected whatever their age: the newest complete and verified archive, the newest verified
   one; while none is complete and verified, the newest complete one; while none is verified, the
   newest good one; "complete" is ``complete: true`` only (``null``, not known, is not complete),
   and while no good archive is known complete, every one whose completeness is unknown;
3. daily: older than RETENTION_DAYS days -> deleted; then beyond the newest MAX_COUNT -> deleted,
   the protected archive counting as one of the MAX_COUNT;
4. weekly: older than WEEKLY_RETENTION_WEEKS weeks; monthly: older than MONTHLY_RETENTION_MONTHS
   calendar months.

Creation times are distinct (the README does not say how ties are ordered) and carry different
UTC offsets (age is a matter of instants, not of wall-clock strings).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st

from gofr_common.backup.retention import Policy, plan_retention

NOW = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)
ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]


def policies() -> st.SearchStrategy[Policy]:
    """Any retention policy within the ranges both property test files use."""
    return st.builds(
        Policy,
        retention_days=st.integers(1, 60),
        max_count=st.integers(1, 20),
        weekly_weeks=st.integers(1, 12),
        monthly_months=st.integers(1, 18),
    )


@st.composite
def scenario(draw: Any) -> tuple[list[dict[str, Any]], Policy]:
    policy = draw(policies())
    ages = draw(st.lists(st.integers(0, 800 * 24 * 60), max_size=40, unique=True))  # minutes
    entries = []
    for i, age in enumerate(ages):
        verified = draw(st.sampled_from([True, True, True, False, None]))
        e = {
            "filename": f"f{i:03d}",
            "path": f"x/f{i:03d}",
            "tier": draw(st.sampled_from(["daily", "weekly", "monthly"])),
            "created": (NOW - timedelta(minutes=age)).astimezone(draw(st.sampled_from(ZONES))).isoformat(),
            "verified": verified,
            "verify_error": "boom",
        }
        complete = draw(st.sampled_from([True, True, False, None]))
        if complete is not None:
            e["complete"] = complete
        if verified is False and draw(st.booleans()):
            e["archive_intact"] = True  # only its .sha256 file is damaged
        entries.append(e)
    return entries, policy


def created(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["created"])


def model(entries: list[dict[str, Any]], now: datetime, p: Policy) -> dict[str, str]:
    """filename -> which README rule deletes it ("failed", "age" or "count"), for every archive
    the rules delete; the rules applied to each archive on its own."""
    limit = {
        "daily": now - timedelta(days=p.retention_days),
        "weekly": now - timedelta(weeks=p.weekly_weeks),
        "monthly": now - relativedelta(months=p.monthly_months),
    }
    out: dict[str, str] = {}
    for e in entries:
        same_tier = [o for o in entries if o["tier"] == e["tier"]]
        good = [o for o in same_tier if o["verified"] is not False or o.get("archive_intact")]
        verified = [o for o in good if o["verified"] is True]
        whole = [o for o in good if o.get("complete") is True]
        verified_whole = [o for o in verified if o in whole]

        def newest(xs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [max(xs, key=created)] if xs else []

        protected = newest(verified_whole) + newest(verified)
        if not verified_whole:
            protected += newest(whole)
        if not verified:
            protected += newest(good)
        if not whole:  # any of those whose completeness is unknown may be the last complete backup
            protected += [o for o in good if o.get("complete") is None]
        if e not in good:
            if good or e is not max(same_tier, key=created):
                out[e["filename"]] = "failed"  # rule 1 (the last of a tier stays)
            continue
        if any(e is o for o in protected):
            continue  # rule 2
        elif created(e) < limit[e["tier"]]:
            out[e["filename"]] = "age"  # rules 3 and 4: older than the limit
        elif e["tier"] == "daily":
            # rule 3: the protected one takes one of the MAX_COUNT places; the others go to the
            # newest good archives (all of them younger than the limit, as `e` is)
            slots = len({id(o) for o in protected})
            newer = [o for o in good if all(o is not q for q in protected) and created(o) > created(e)]
            if slots + len(newer) >= p.max_count:
                out[e["filename"]] = "count"
    return out


def rule_of(reason: str) -> str:
    if reason.startswith("failed verification"):
        return "failed"
    if reason.startswith("older than the"):
        return "age"
    assert reason.startswith("beyond MAX_COUNT="), reason
    return "count"


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_retention_deletes_exactly_what_the_readme_rules_delete(
    s: tuple[list[dict[str, Any]], Policy],
) -> None:
    entries, p = s
    plan = plan_retention(entries, NOW, p)
    got = {e["filename"]: rule_of(why) for e, why in plan}
    assert len(got) == len(plan), "nothing is deleted twice"
    assert got == model(entries, NOW, p)


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_failed_archives_do_not_change_what_happens_to_good_ones(
    s: tuple[list[dict[str, Any]], Policy],
) -> None:
    entries, p = s
    plan = plan_retention(entries, NOW, p)
    bad = {e["filename"] for e in entries if e["verified"] is False and not e.get("archive_intact")}
    deleted_good = {e["filename"] for e, _ in plan} - bad
    # failed archives take no MAX_COUNT slot and protect nothing: the good ones fare exactly as
    # if the failed ones were not there
    good = [e for e in entries if e["filename"] not in bad]
    assert deleted_good == {e["filename"] for e, _ in plan_retention(good, NOW, p)}
    # every failed one goes, except the newest of a tier that has nothing else left
    last = {
        max(tier, key=created)["filename"]
        for t in ("daily", "weekly", "monthly")
        if (tier := [e for e in entries if e["tier"] == t]) and all(e["filename"] in bad for e in tier)
    }
    assert bad - last <= {e["filename"] for e, _ in plan}
    assert not last & {e["filename"] for e, _ in plan}


def test_the_model_on_hand_worked_examples() -> None:
    """The model itself, against outcomes worked out by hand from the README."""

    def e(name: str, days: float, tier: str = "daily", verified: bool | None = True) -> dict[str, Any]:
        return {
            "filename": name,
            "tier": tier,
            "created": (NOW - timedelta(days=days)).isoformat(),
            "verified": verified,
            "complete": True,
        }

    p = Policy(retention_days=7, max_count=3, weekly_weeks=2, monthly_months=1)
    es = [
        e("d1", 1),
        e("d2", 2, verified=None),
        e("d3", 3),
        e("d4", 4),  # beyond the newest 3
        e("d9", 9),  # older than 7 days
        e("dx", 0.5, verified=False),  # failed
        e("w1", 13, "weekly"),
        e("w2", 15, "weekly"),  # older than 2 weeks
        e("m1", 40, "monthly", verified=None),  # older than a month, but the only good monthly one
    ]
    assert model(es, NOW, p) == {"d4": "count", "d9": "age", "dx": "failed", "w2": "age"}
    # the newest verified archive survives even when it is the oldest of the tier
    es = [e("old", 40), e("new", 1, verified=None), e("newer", 0.5, verified=None)]
    assert model(es, NOW, Policy(retention_days=7, max_count=2)) == {"new": "count"}
    # the last archive of a tier is kept although it failed; an older failed one goes
    es = [e("f1", 1, verified=False), e("f2", 2, verified=False)]
    assert model(es, NOW, p) == {"f2": "failed"}
    # an incomplete verified archive does not cost the last complete and verified one, however old
    inc = e("inc", 0.5)
    inc["complete"] = False
    es = [inc, e("whole", 30)]
    assert model(es, NOW, Policy(retention_days=7, max_count=1)) == {}
    # completeness unknown (a rebuilt manifest) is not complete: it does not cost the complete one
    unknown = e("unknown", 0.5)
    del unknown["complete"]
    assert model([unknown, e("whole", 2)], NOW, Policy(retention_days=7, max_count=1)) == {}
    # and while none is known complete, none of unknown completeness goes for age or count
    old = e("old-unknown", 30, verified=None)
    del old["complete"]
    assert model([inc, unknown, old], NOW, Policy(retention_days=7, max_count=1)) == {}


def test_a_long_outage_keeps_the_last_good_backup() -> None:
    entries = [
        {
            "filename": f"d{i}",
            "path": f"daily/d{i}",
            "tier": "daily",
            "verified": True,
            "complete": True,
            "created": (NOW - timedelta(days=40 + i)).isoformat(),
        }
        for i in range(30)
    ]
    plan = plan_retention(entries, NOW, Policy(retention_days=30))
    assert {e["filename"] for e, _ in plan} == {f"d{i}" for i in range(1, 30)}
