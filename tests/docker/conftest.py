"""A real Docker engine for the scenario tests.

- An engine that already answers `docker info` is used as it is. Otherwise, as root, dockerd is
  started with vfs storage and no bridge/iptables (this workplace's only way).
- Base image: a Debian bookworm minbase made with debootstrap and `docker import` on every run
  (no registry needed), tagged with this run's id and removed afterwards, so a developer's machine
  takes the same path as a fresh one. GOFR_DEBOOTSTRAP_MIRROR overrides debootstrap's mirror;
  GOFR_TEST_BASE_IMAGE names an existing base instead (a developer shortcut, ignored under
  GOFR_REQUIRE_DOCKER=1).
- The backup image is built from a host-made wheelhouse (pip inside `docker build` may not reach
  an index), under a tag of this run, and removed afterwards.
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
from dockerlib import REPO, RUN_ID, sh


def _unavailable(why: str) -> None:
    if os.environ.get("GOFR_REQUIRE_DOCKER") == "1" or os.environ.get("GOFR_REQUIRE_ALL") == "1":
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
def base_image(docker_engine: None) -> Iterator[str]:
    """A Debian bookworm minbase made now, under a tag of this run, and removed afterwards: the
    suite never builds on an image that an earlier run (or anything else) left in the engine.
    GOFR_TEST_BASE_IMAGE names another base instead; CI never sets it."""
    wanted = os.environ.get("GOFR_TEST_BASE_IMAGE")
    if wanted and os.environ.get("GOFR_REQUIRE_DOCKER") != "1":
        yield wanted
        return
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        _unavailable("making the base image needs root and debootstrap")
    tag = f"gofr-test-base:{RUN_ID}"
    with tempfile.TemporaryDirectory(prefix="gofr-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        mirror = os.environ.get("GOFR_DEBOOTSTRAP_MIRROR")  # else debootstrap's own default
        sh(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(root),
            *([mirror] if mirror else []),
            timeout=900,
        )
        os.chmod(root, 0o755)  # the image's "/": every user must be able to reach what is below it
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        sh("docker", "import", "-", tag, stdin=tar.stdout, timeout=600)
        if tar.wait() != 0:
            pytest.fail("tar of the debootstrap tree failed")
    try:
        check_base_image(tag)
        yield tag
    finally:
        remove_image(tag)


def check_base_image(tag: str) -> None:
    """Before anything is built on it: "/" must be 0755, or no non-root user can enter the image."""
    mode = sh(
        "docker", "run", "--rm", "--pull", "never", "--network", "none", tag, "stat", "-c", "%a", "/"
    ).stdout.strip()
    assert mode == "755", f"the base image {tag} has '/' with mode {mode}, not 755"


def remove_image(tag: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def backup_image(base_image: str) -> Iterator[str]:
    tag = f"gofr-common-backup:test-{RUN_ID}"
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
    try:
        yield tag
    finally:
        remove_image(tag)
