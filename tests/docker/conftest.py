"""A real Docker engine for the scenario tests.

- An engine that already answers `docker info` is used as it is. Otherwise, as root, dockerd is
  started with vfs storage and no bridge/iptables (this workplace's only way).
- Base image: $GOFR_TEST_BASE_IMAGE, else python:3.11-slim-bookworm if the engine has it, else a
  Debian bookworm minbase made with debootstrap and `docker import` (no registry needed).
- The backup image is built from a host-made wheelhouse (pip inside `docker build` may not reach
  an index).
Where no engine can be had the tests are skipped, and GOFR_REQUIRE_DOCKER=1 (set by .ci/run)
turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerlib import REPO, sh

DEBOOTSTRAP_IMAGE = "gofr-test-base:bookworm"
DEFAULT_BASE = "python:3.11-slim-bookworm"


def _unavailable(why: str) -> None:
    if os.environ.get("GOFR_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker is required here (GOFR_REQUIRE_DOCKER=1) but: {why}")
    pytest.skip(f"no Docker engine: {why}")


def _engine_up() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    )


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    if _engine_up():
        yield
        return
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        _unavailable("`docker info` fails and dockerd cannot be started (not root, or not installed)")
    log = open(Path(tempfile.gettempdir()) / "gofr-test-dockerd.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--bridge=none", "--iptables=false", "--ip6tables=false"],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not _engine_up():
        if proc.poll() is not None or time.monotonic() > deadline:
            _unavailable(f"dockerd did not come up (see {log.name})")
        time.sleep(0.5)
    yield  # left running for later sessions; it is cheap when idle


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    wanted = os.environ.get("GOFR_TEST_BASE_IMAGE")
    if wanted:
        return wanted
    for name in (DEFAULT_BASE, DEBOOTSTRAP_IMAGE):
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
            return name
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        _unavailable(f"no base image ({DEFAULT_BASE}) and no debootstrap to make one")
    with tempfile.TemporaryDirectory(prefix="gofr-rootfs-") as root:
        sh(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            root,
            "http://deb.debian.org/debian",
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        sh("docker", "import", "-", DEBOOTSTRAP_IMAGE, stdin=tar.stdout, timeout=600)
        tar.wait()
    return DEBOOTSTRAP_IMAGE


@pytest.fixture(scope="session")
def backup_image(base_image: str) -> str:
    tag = "gofr-common-backup:test"
    wheelhouse = REPO / "wheelhouse"
    shutil.rmtree(wheelhouse, ignore_errors=True)
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheelhouse), str(REPO), timeout=600)
    try:
        sh(
            "docker",
            "build",
            "-q",
            "-f",
            "docker/backup/Dockerfile",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "-t",
            tag,
            ".",
            cwd=REPO,
            timeout=900,
        )
    finally:
        shutil.rmtree(wheelhouse, ignore_errors=True)
    return tag
