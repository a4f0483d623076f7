"""Fixtures; the helpers live in gofrtest.py (a unique name: tests/docker has its own conftest)."""

from gofrtest import app, chdir_tmp  # noqa: F401  (pytest finds fixtures by name here)
