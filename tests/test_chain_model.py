"""chain.py: following the manifest's parent links, and every way a chain can be broken."""

from __future__ import annotations

from typing import Any

from gofr_common.backup.chain import chain_of, children, kind_of, link_of, needed


def entry(
    name: str, sha: str, parent: dict[str, Any] | None = None, full: Any = None, **kw: Any
) -> dict[str, Any]:
    e = {
        "project": "p",
        "tier": "daily",
        "filename": name,
        "path": f"daily/{name}",
        "sha256": sha,
        "created": "2026-01-01T00:00:00+00:00",
        "kind": "incremental" if parent is not None else "full",
        "parent": parent,
        "full": full,
    }
    e.update(kw)
    return e


def three() -> list[dict[str, Any]]:
    f = entry("f", "a" * 64)
    i1 = entry("i1", "b" * 64, link_of(f), link_of(f))
    i2 = entry("i2", "c" * 64, link_of(i1), link_of(f))
    return [f, i1, i2]


def test_an_intact_chain_is_followed_from_the_full():
    es = three()
    c = chain_of(es, es[2])
    assert c.ok and c.paths == ["daily/f", "daily/i1", "daily/i2"]
    assert chain_of(es, es[0]).paths == ["daily/f"]
    assert needed(es, [es[2]]) == {p: ["daily/i2"] for p in ("daily/f", "daily/i1", "daily/i2")}
    assert [e["filename"] for e in children(es)["p/daily/i1"]] == ["i2"]


def test_a_legacy_entry_without_kind_is_a_full():
    e = {"project": "p", "tier": "daily", "filename": "x", "path": "daily/x", "sha256": "d" * 64}
    assert kind_of(e) == "full" and chain_of([e], e).ok


def test_every_broken_link_is_named():
    es = three()
    assert "missing" in str(chain_of([es[0], es[2]], es[2]).broken)  # parent gone
    es = three()
    es[1]["sha256"] = "e" * 64  # parent replaced
    assert "not the archive" in str(chain_of(es, es[2]).broken)
    es = three()
    es[1]["verified"] = False
    assert "failed verification" in str(chain_of(es, es[2]).broken)
    es = three()
    es[2]["parent"] = "i1"  # malformed (untrusted input)
    assert "not recorded" in str(chain_of(es, es[2]).broken)
    es = three()
    es[2]["full"] = {"filename": "g", "sha256": "a" * 64}
    assert "full" in str(chain_of(es, es[2]).broken)
    es = three()
    es[0].update(kind="incremental", parent=link_of(es[2]))  # a loop
    assert "loops" in str(chain_of(es, es[2]).broken)
    es = three()
    es[1]["project"] = "q"  # another project's archive of the same name
    assert "missing" in str(chain_of(es, es[2]).broken)
