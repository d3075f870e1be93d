"""One writer per run directory: an OS file lock (fcntl.flock) on `<run>/.lock`.

    with RunLock(run_dir):      # a second holder gets a UserError naming the first one's PID
        ...write checkpoints, logs...

The lock belongs to the open file description, so it is released when the holder exits in any way
(kill -9 included) and two opens in one process exclude each other too. The `.lock` file itself
stays (removing it would let a third process lock a fresh inode while a second waits on the old).
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot lock {self.run_dir}: {err.strerror} ({self.path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {self.run_dir}: {err.strerror}") from None
            who = f"PID {holder}" if holder else "another process (PID not yet recorded)"
            raise UserError(
                f"{self.run_dir} is in use by another genorder run ({who}); wait for it to finish, "
                "stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the description drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None
