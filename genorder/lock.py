"""One writer per run directory: an OS lock (fcntl.flock) on the run directory itself.

    with RunLock(run_dir):      # a second holder gets a UserError naming the first one's PID
        ...write checkpoints, logs...

The lock is taken on an open descriptor of the directory, not on a file inside it, so nothing a
user can delete under a live process (`rm run/.lock`) lets a second writer in. It belongs to the
open file description: it is released when the holder exits in any way (kill -9 included), and two
opens in one process exclude each other too.

A second writer is told the holder's PID, from /proc/locks (Linux) or else from `<run>/.lock`, which
only records it (written after the lock is taken; a `.lock` that holds anything but a PID is never
overwritten). Deleting `.lock` loses nothing: the lock stays, and the next holder writes it again.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from genorder.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive, non-blocking lock on a run directory (which must exist)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise UserError(f"cannot lock {self.run_dir}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {self.run_dir}: {err.strerror}") from None
            holder = flock_holder(self.run_dir) or read_pid(self.path)
            alive = holder is not None and pid_alive(holder)
            who = f"PID {holder}" if alive else "another process (PID not recorded)"
            raise UserError(
                f"{self.run_dir} is in use by another genorder run ({who}); wait for it to finish, "
                "stop it, or choose another --out"
            ) from None
        self._fd = fd
        self._record_pid()
        return self

    def _record_pid(self) -> None:
        """Write our PID to `.lock` (informative only; the lock is the directory's)."""
        if not _pid_file_or_absent(self.path):
            return  # not a PID file of ours: left alone
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except OSError:
            return
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(path: str | Path) -> int | None:
    """The PID a `.lock` file records; None when it is missing, empty or holds anything else."""
    try:
        with open(path, "rb") as f:
            raw = f.read(32).decode().strip()
        return int(raw) if raw.isdigit() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def flock_holder(path: str | Path) -> int | None:
    """The PID holding a flock on `path` per /proc/locks (Linux), None when unknown or elsewhere."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue  # "->" marks a waiter, not the holder
        try:
            major, minor, ino = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == want:
                return int(parts[4])
        except ValueError:
            continue
    return None


def _pid_file_or_absent(path: Path) -> bool:
    """True when `path` does not exist, or is a regular file that is empty or holds a PID."""
    if path.is_symlink():
        return False
    if not path.exists():
        return True
    if not path.is_file():
        return False
    try:
        return path.stat().st_size == 0 or read_pid(path) is not None
    except OSError:
        return False


def is_pid_file(path: str | Path) -> bool:
    """A `.lock` as RunLock writes it (empty or a PID): `genorder.outdir` counts it as ours."""
    p = Path(path)
    return p.exists() and _pid_file_or_absent(p)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
