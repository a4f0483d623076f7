"""Fixtures; the helpers live in gofrtest.py (a unique name: tests/docker has its own conftest)."""

import os

# pytest finds fixtures and hooks by name here
from gofrtest import (  # noqa: F401
    app,
    chdir_tmp,
    eio_mount,
    evidence,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
from hypothesis import settings

# `make test` runs a bounded fuzz; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more examples
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
