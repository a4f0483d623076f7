"""A tiny FUSE file system, spoken straight to /dev/fuse (no libfuse here), that mirrors a backing
directory and can make the kernel return a real EIO to every read of its files.

    python eiofs.py BACKING MOUNTPOINT     # mounts, prints "ready", serves until unmounted

SIGUSR1: from now on every read() of a file returns EIO (a disk that went bad); SIGUSR2: reads
work again. With EIOFS_FAIL_FROM=N in its environment, a read reaching byte N or beyond of any file
fails from the start (bad sectors past a file's head: its header reads, its body does not). Lookups, stat, readdir and unlink keep working either way, as on a failing disk whose
metadata is still cached. There is no device-mapper in this kernel (no `dmsetup ... error`), so
this is the most real read error available: the process under test gets EIO from its own read(2)
syscall, from the kernel, exactly as from a failing disk. Needs root (mount(2)).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import struct
import sys

IN_HDR = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HDR = struct.Struct("<IiQ")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
INIT_IN = struct.Struct("<IIII")
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")
ENTRY_OUT_HEAD = struct.Struct("<QQQQII")
ATTR_OUT_HEAD = struct.Struct("<QII")
OPEN_OUT = struct.Struct("<QIi")
READ_IN = struct.Struct("<QQII")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
DIRENT = struct.Struct("<QQII")

LOOKUP, FORGET, GETATTR, UNLINK, OPEN, READ, STATFS, RELEASE = 1, 2, 3, 10, 14, 15, 17, 18
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, ACCESS, INTERRUPT, DESTROY = 25, 26, 27, 28, 29, 34, 36, 38
BATCH_FORGET = 42
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}
FOPEN_DIRECT_IO = 1  # every read reaches us: no page cache hides the failure
MS_NOSUID, MS_NODEV = 2, 4


class EioFs:
    def __init__(self, backing: str, fd: int) -> None:
        self.backing = backing
        self.fd = fd
        self.paths: dict[int, str] = {1: ""}
        self.ids: dict[str, int] = {"": 1}
        self.files: dict[int, int] = {}
        self.next_fh = 1
        self.failing = False
        self.fail_from = int(os.environ.get("EIOFS_FAIL_FROM", "-1"))

    def node(self, rel: str) -> int:
        if rel not in self.ids:
            self.ids[rel] = len(self.ids) + 1
            self.paths[self.ids[rel]] = rel
        return self.ids[rel]

    def real(self, nodeid: int) -> str:
        return os.path.join(self.backing, self.paths[nodeid])

    @staticmethod
    def attr(nodeid: int, st: os.stat_result) -> bytes:
        return ATTR.pack(
            nodeid,
            st.st_size,
            st.st_blocks,
            int(st.st_atime),
            int(st.st_mtime),
            int(st.st_ctime),
            0,
            0,
            0,
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            0,
            4096,
            0,
        )

    def entry(self, nodeid: int, st: os.stat_result) -> bytes:
        return ENTRY_OUT_HEAD.pack(nodeid, 0, 0, 0, 0, 0) + self.attr(nodeid, st)

    def handle(self, op: int, nodeid: int, body: bytes) -> bytes | int:
        if op == INIT:
            major, minor, readahead, _ = INIT_IN.unpack_from(body)
            return INIT_OUT.pack(7, min(minor, 31), readahead, 0, 16, 12, 1 << 17, 1, 32, 0, 0, 0)
        if op == LOOKUP:
            name = body.split(b"\0", 1)[0].decode()
            rel = os.path.join(self.paths[nodeid], name)
            st = os.lstat(os.path.join(self.backing, rel))
            return self.entry(self.node(rel), st)
        if op == GETATTR:
            return ATTR_OUT_HEAD.pack(0, 0, 0) + self.attr(nodeid, os.lstat(self.real(nodeid)))
        if op == OPEN:
            fh = self.next_fh
            self.next_fh += 1
            self.files[fh] = os.open(self.real(nodeid), os.O_RDONLY)
            return OPEN_OUT.pack(fh, FOPEN_DIRECT_IO, 0)
        if op == READ:
            fh, offset, size, _ = READ_IN.unpack_from(body)
            if self.failing or 0 <= self.fail_from < offset + size:
                return -errno.EIO
            return os.pread(self.files[fh], size, offset)
        if op == RELEASE:
            fh = struct.unpack_from("<Q", body)[0]
            os.close(self.files.pop(fh))
            return b""
        if op in (FLUSH, RELEASEDIR, ACCESS):
            return b""
        if op == OPENDIR:
            return OPEN_OUT.pack(0, 0, 0)
        if op == READDIR:
            _, offset, size, _ = READ_IN.unpack_from(body)
            out = b""
            names = sorted(os.listdir(self.real(nodeid)))
            for i, name in enumerate(names[offset:], offset + 1):
                raw = name.encode()
                st = os.lstat(os.path.join(self.real(nodeid), name))
                ent = DIRENT.pack(
                    self.node(os.path.join(self.paths[nodeid], name)), i, len(raw), st.st_mode >> 12
                )
                ent += raw + b"\0" * (-len(raw) % 8)
                if len(out) + len(ent) > size:
                    break
                out += ent
            return out
        if op == UNLINK:
            os.unlink(os.path.join(self.real(nodeid), body.split(b"\0", 1)[0].decode()))
            return b""
        if op == STATFS:
            s = os.statvfs(self.backing)
            return STATFS_OUT.pack(
                s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize, 255, s.f_frsize, 0
            )
        return -errno.ENOSYS

    def serve(self) -> None:
        while True:
            try:
                req = os.read(self.fd, (1 << 17) + 4096)
            except OSError as e:
                if e.errno == errno.ENODEV:  # unmounted
                    return
                if e.errno in (errno.EINTR, errno.ENOENT):
                    continue
                raise
            _, op, unique, nodeid, *_ = IN_HDR.unpack_from(req)
            if op == DESTROY:
                return
            try:
                res = self.handle(op, nodeid, req[IN_HDR.size :])
            except OSError as e:
                res = -(e.errno or errno.EIO)
            if op in NO_REPLY:
                continue
            if isinstance(res, int):
                reply = OUT_HDR.pack(OUT_HDR.size, res, unique)
            else:
                reply = OUT_HDR.pack(OUT_HDR.size + len(res), 0, unique) + res
            try:
                os.write(self.fd, reply)
            except OSError as e:
                if e.errno != errno.ENOENT:  # the request was interrupted meanwhile
                    raise


def main() -> None:
    backing, mountpoint = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode={stat.S_IFDIR:o},user_id=0,group_id=0,allow_other".encode()
    if libc.mount(b"eiofs", mountpoint.encode(), b"fuse.eiofs", MS_NOSUID | MS_NODEV, opts) != 0:
        e = ctypes.get_errno()
        sys.exit(f"mount failed: {os.strerror(e)}")
    fs = EioFs(backing, fd)

    def fail(*_: object) -> None:
        fs.failing = True

    def heal(*_: object) -> None:
        fs.failing = False

    signal.signal(signal.SIGUSR1, fail)
    signal.signal(signal.SIGUSR2, heal)
    print("ready", flush=True)
    fs.serve()


if __name__ == "__main__":
    main()
