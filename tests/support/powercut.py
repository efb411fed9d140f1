"""A FUSE filesystem that loses unsynced writes on command — power cuts for tests.

The way LazyFS (used by Jepsen) tests databases: every file's writes stay in this
process's memory until ``fsync``/``fdatasync`` of that file; only then do they reach the
backing directory. :meth:`PowerCutFs.cut` throws away everything not yet synced and
refuses every further operation with ``EIO`` (a dead disk: a dying process cannot write
on top), until :meth:`PowerCutFs.remount` — a fresh mount over the backing directory,
the next boot. A process kill alone never tests durability: the page cache survives it.

Model (what survives a cut):

* file contents and sizes (``write``, ``truncate``): only as of each file's last
  ``fsync``/``fdatasync``;
* names (``create``, ``unlink``, ``rename``, ``mkdir``): at once, as if the directory were
  always synced — kinder than a real disk, which can also lose a new file's name, so
  directory syncs are not tested here.

Pitfalls it handles (``GUIDE.md`` §5): files are opened with ``direct_io``, so every read
and write comes to this process and nothing stale survives in the kernel's page cache —
except SQLite's ``-shm`` file, which is ``mmap``'ed (that fails under ``direct_io``) and
which SQLite rebuilds after a crash anyway; a remount is a new FUSE mount, so no page of
the old one is cached.

Server: ``python -m tests.support.powercut BACKING MOUNTPOINT CONTROL_SOCKET`` (needs
``/dev/fuse``, ``fusermount3`` from Debian's ``fuse3`` and the ``mfusepy`` package).
Control: one line per connection on the Unix socket — ``cut``, ``stats`` or ``ping`` —
answered with one JSON line. Client: :class:`PowerCutFs`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096
FUSE_DEVICE = Path("/dev/fuse")


def fuse_missing_reason() -> str | None:
    """Why power-cut tests cannot run here (None: they can). Only a missing ``/dev/fuse``
    is a reason to skip; a missing ``fusermount3`` or ``mfusepy`` is a broken setup
    (``make test`` installs both) and fails loudly instead."""
    if not FUSE_DEVICE.exists():
        return "no /dev/fuse on this machine (a container without --device /dev/fuse?)"
    return None


# --------------------------------------------------------------------------- server


@dataclass
class _Pending:
    """One file's writes since its last sync: whole dirty pages, its logical size, and
    the lowest size it was truncated to (backing bytes at or past it read as zeros)."""

    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)
    cut_at: int | None = None


class LazyOperations:
    """The filesystem (mfusepy operations). Every callback holds one mutex (not named
    ``lock``: that is a FUSE operation), so the control thread's ``cut`` never sees a
    half-done write."""

    use_ns = True

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.mutex = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self.dead = False
        self.synced_bytes = 0
        self.syncs = 0
        self.cuts = 0

    # -- helpers
    def _real(self, path: str) -> str:
        return str(self.backing) + path

    def _alive(self) -> None:
        if self.dead:
            raise _fuse_error(errno.EIO)

    def _backing_size(self, path: str) -> int:
        try:
            return os.stat(self._real(path)).st_size
        except FileNotFoundError:
            raise _fuse_error(errno.ENOENT) from None

    def _state(self, path: str) -> _Pending:
        state = self.pending.get(path)
        if state is None:
            state = self.pending[path] = _Pending(self._backing_size(path))
        return state

    def _base_page(self, path: str, state: _Pending, index: int) -> bytearray:
        """Page ``index`` as it was before any pending write touched it."""
        start = index * PAGE
        page = bytearray(PAGE)
        limit = start + PAGE if state.cut_at is None else state.cut_at
        if start < limit:  # the backing file holds the synced bytes (maybe fewer)
            with open(self._real(path), "rb", buffering=0) as f:
                data = os.pread(f.fileno(), min(PAGE, limit - start), start)
            page[: len(data)] = data
        return page

    def _sync(self, path: str) -> None:
        state = self.pending.pop(path, None)
        if state is None:
            return
        fd = os.open(self._real(path), os.O_WRONLY)
        try:
            if state.cut_at is not None:
                os.ftruncate(fd, state.cut_at)
            for index, page in sorted(state.pages.items()):
                start = index * PAGE
                if start < state.size:
                    chunk = bytes(page[: min(PAGE, state.size - start)])
                    os.pwrite(fd, chunk, start)
                    self.synced_bytes += len(chunk)
            os.ftruncate(fd, state.size)
        finally:
            os.close(fd)
        self.syncs += 1

    # -- control
    def cut(self) -> dict[str, Any]:
        with self.mutex:
            lost = sum(len(s.pages) for s in self.pending.values()) * PAGE
            files = sorted(self.pending)
            self.pending.clear()
            self.dead = True
            self.cuts += 1
            return {"ok": True, "lost_bytes_at_most": lost, "files_with_unsynced_writes": files}

    def stats(self) -> dict[str, Any]:
        with self.mutex:
            return {
                "ok": True,
                "dead": self.dead,
                "syncs": self.syncs,
                "synced_bytes": self.synced_bytes,
                "unsynced_pages": sum(len(s.pages) for s in self.pending.values()),
            }

    # -- metadata (durable at once)
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self.mutex:
            self._alive()
            try:
                st = os.lstat(self._real(path))
            except FileNotFoundError:
                raise _fuse_error(errno.ENOENT) from None
            attrs = {
                key: getattr(st, key)
                for key in (
                    "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                    "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                )
            }  # fmt: skip
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(key + "_ns")
            state = self.pending.get(path)
            if state is not None:
                attrs["st_size"] = state.size
            attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        with self.mutex:
            self._alive()
            return [".", "..", *os.listdir(self._real(path))]

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._real(path))
        return {
            key: getattr(sv, key)
            for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax",
            )
        }  # fmt: skip

    def access(self, path: str, amode: int) -> int:
        with self.mutex:
            self._alive()
            if not os.access(self._real(path), amode):
                raise _fuse_error(errno.EACCES)
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self.mutex:
            self._alive()
            os.chmod(self._real(path), mode)
            return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        with self.mutex:
            self._alive()
            os.chown(self._real(path), uid, gid)
            return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self.mutex:
            self._alive()
            if times is None:
                os.utime(self._real(path))
            else:
                os.utime(self._real(path), ns=times)
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._alive()
            os.mkdir(self._real(path), mode)
            return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            self._alive()
            os.rmdir(self._real(path))
            return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._alive()
            try:
                os.unlink(self._real(path))
            except FileNotFoundError:
                raise _fuse_error(errno.ENOENT) from None
            self.pending.pop(path, None)
            return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._alive()
            os.rename(self._real(old), self._real(new))
            self.pending.pop(new, None)
            state = self.pending.pop(old, None)
            if state is not None:
                self.pending[new] = state
            return 0

    # -- files
    def _open_flags(self, path: str, fi: Any) -> None:
        # direct_io: reads and writes always come here (not the kernel's page cache), so a
        # cut really loses what was not synced. -shm is mmap'ed, which direct_io forbids.
        fi.direct_io = 0 if path.endswith("-shm") else 1
        fi.keep_cache = 0
        fi.fh = 0

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        with self.mutex:
            self._alive()
            fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.close(fd)
            self.pending.pop(path, None)
            if fi is not None:
                self._open_flags(path, fi)
            return 0

    def open(self, path: str, fi: Any) -> int:
        with self.mutex:
            self._alive()
            if not os.path.exists(self._real(path)):
                raise _fuse_error(errno.ENOENT)
            if fi.flags & os.O_TRUNC:
                self._truncate(path, 0)
            self._open_flags(path, fi)
            return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        with self.mutex:
            self._alive()
            state = self.pending.get(path)
            if state is None:
                with open(self._real(path), "rb", buffering=0) as f:
                    return os.pread(f.fileno(), size, offset)
            end = min(offset + size, state.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, within = divmod(pos, PAGE)
                page = state.pages.get(index)
                if page is None:
                    page = self._base_page(path, state, index)
                take = min(PAGE - within, end - pos)
                out += page[within : within + take]
                pos += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        with self.mutex:
            self._alive()
            state = self._state(path)
            pos = 0
            while pos < len(data):
                index, within = divmod(offset + pos, PAGE)
                page = state.pages.get(index)
                if page is None:
                    page = state.pages[index] = self._base_page(path, state, index)
                take = min(PAGE - within, len(data) - pos)
                page[within : within + take] = data[pos : pos + take]
                pos += take
            state.size = max(state.size, offset + len(data))
            return len(data)

    def _truncate(self, path: str, length: int) -> None:
        state = self._state(path)
        first_gone = (length + PAGE - 1) // PAGE
        for index in [i for i in state.pages if i >= first_gone]:
            del state.pages[index]
        tail = state.pages.get(length // PAGE)
        if tail is not None and length % PAGE:
            tail[length % PAGE :] = bytes(PAGE - length % PAGE)
        if length < state.size:
            state.cut_at = length if state.cut_at is None else min(state.cut_at, length)
        state.size = length

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        with self.mutex:
            self._alive()
            self._truncate(path, length)
            return 0

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        with self.mutex:
            self._alive()
            self._sync(path)
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: Any) -> int:
        with self.mutex:
            self._alive()  # names are durable at once (module docstring)
            return 0

    def flush(self, path: str, fh: Any) -> int:
        return 0  # close() is not a sync: a real disk keeps dirty pages too

    def release(self, path: str, fh: Any) -> int:
        return 0


def _fuse_error(code: int) -> Exception:
    from mfusepy import FuseOSError

    return FuseOSError(code)  # type: ignore[no-any-return]


def _serve_control(ops: LazyOperations, sock_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rw") as stream:
            command = stream.readline().strip()
            if command == "cut":
                reply = ops.cut()
            elif command == "stats":
                reply = ops.stats()
            elif command == "ping":
                reply = {"ok": True}
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
            stream.write(json.dumps(reply) + "\n")
            stream.flush()


def serve(backing: Path, mountpoint: Path, control: Path) -> None:
    """Mount and serve until unmounted (``fusermount3 -u``)."""
    from mfusepy import FUSE, Operations

    class Mounted(LazyOperations, Operations):  # type: ignore[misc]
        pass

    ops = Mounted(backing.resolve())
    threading.Thread(target=_serve_control, args=(ops, control), daemon=True).start()
    # Multi-threaded (readers do not wait behind a slow callback) but every callback
    # takes ops.mutex; attr/entry caching off so sizes always come from here.
    FUSE(
        ops,
        str(mountpoint),
        foreground=True,
        raw_fi=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="powercut",
    )


# --------------------------------------------------------------------------- client


class PowerCutFs:
    """A mounted power-cut filesystem: ``with PowerCutFs(tmp_path) as fs: fs.mount / …``.

    :attr:`mount` is where the code under test writes; :meth:`cut` loses everything
    unsynced and makes the mount refuse all I/O; :meth:`remount` unmounts and mounts a
    fresh instance over the same backing directory (the reboot).
    """

    def __init__(self, workdir: Path, log: Path | None = None) -> None:
        self.backing = workdir / "backing"
        self.mount = workdir / "mnt"
        self.control = workdir / "control.sock"
        self.log_path = log or workdir / "powercut.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts: list[dict[str, Any]] = []

    def __enter__(self) -> PowerCutFs:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Mount; returns once the mount answers."""
        if self.proc is not None:
            raise RuntimeError("already mounted")
        if shutil.which("fusermount3") is None:
            raise RuntimeError("fusermount3 not found: apt-get install fuse3 (make test does)")
        self.control.unlink(missing_ok=True)
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        paths = (str(self.backing), str(self.mount), str(self.control))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.powercut", *paths],
                stdout=log,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"powercut filesystem exited: {self._log_tail()}")
            if os.path.ismount(self.mount) and self.control.exists():
                with contextlib.suppress(OSError):
                    if self.command("ping")["ok"]:
                        return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"powercut filesystem did not mount in {timeout}s: {self._log_tail()}")

    def command(self, text: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.control))
            sock.sendall(text.encode() + b"\n")
            with sock.makefile("r") as stream:
                reply: dict[str, Any] = json.loads(stream.readline())
        return reply

    def cut(self) -> dict[str, Any]:
        """Power off: unsynced writes are gone, every further operation fails (EIO)."""
        reply = self.command("cut")
        self.cuts.append(reply)
        return reply

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def stop(self, timeout: float = 20.0) -> None:
        """Unmount (processes using the mount must be gone) and end the server."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Not guarded by os.path.ismount: after a cut even the root's stat fails (EIO).
        done = subprocess.run(["fusermount3", "-u", str(self.mount)], capture_output=True)
        if done.returncode != 0 and proc.poll() is None:
            # Still busy (a process holds a file open): detach lazily, the server exits.
            subprocess.run(["fusermount3", "-uz", str(self.mount)], capture_output=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def remount(self) -> None:
        """The reboot after a cut: a fresh mount over what was synced."""
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write(__doc__ or "")
        return 2
    backing, mountpoint, control = (Path(a) for a in args)
    if not stat.S_ISDIR(os.stat(backing).st_mode):
        sys.stderr.write(f"not a directory: {backing}\n")
        return 2
    serve(backing, mountpoint, control)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
