"""Fixtures; the helpers live in gofrtest.py (a unique name: tests/docker has its own conftest)."""

import os

from gofrtest import app, chdir_tmp  # noqa: F401  (pytest finds fixtures by name here)
from hypothesis import settings

# `make test` runs a bounded fuzz; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more examples
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
