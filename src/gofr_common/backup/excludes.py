"""``EXCLUDE`` patterns: comma-separated globs, matched relative to each backed-up path.

Rules (gitignore-like, documented in the README):
- a pattern without ``/`` matches the *name* of a file or directory at any depth (``*.tmp``);
- a pattern with ``/`` matches the whole path relative to the backed-up path (``cache/**``,
  ``sessions/*.json``); a leading ``/`` is allowed and ignored;
- ``*`` matches within one path segment, ``?`` one character, ``[abc]`` a class, and ``**``
  any number of segments (``**/x`` is ``x`` at any depth, ``cache/**`` everything below cache);
- a trailing ``/`` matches directories only;
- an excluded directory is not descended into: everything below it is excluded too.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def _translate(glob: str) -> str:
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = glob[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_excludes(patterns: tuple[str, ...]) -> Callable[[str, bool], bool]:
    """A predicate ``excluded(rel_path, is_dir)``; ``rel_path`` uses ``/`` and has no leading ``/``."""
    name_res: list[tuple[re.Pattern[str], bool]] = []
    path_res: list[tuple[re.Pattern[str], bool]] = []
    for p in patterns:
        dir_only = p.endswith("/")
        p = p.rstrip("/")
        if "/" in p:
            path_res.append((re.compile(_translate(p.lstrip("/")) + r"\Z", re.S), dir_only))
        else:
            name_res.append((re.compile(_translate(p) + r"\Z", re.S), dir_only))

    def excluded(rel: str, is_dir: bool) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any((is_dir or not d) and rx.match(name) for rx, d in name_res) or any(
            (is_dir or not d) and rx.match(rel) for rx, d in path_res
        )

    return excluded
