"""Small filesystem helpers: atomic writes, an exclusive file lock."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place on success.

    On an exception the temporary file is removed and `path` is untouched, so a
    reader never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def file_lock(path: PathLike, *, wait: bool = True, message: str = "") -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created). Another holder: with `wait`, print
    `message` once (if given) with who holds the lock, and wait; without, raise BlockingIOError
    naming the holder. The holder writes its pid, start time and command into the file.
    Closing releases the lock; the file stays (removing it would race)."""
    import fcntl
    import sys
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            if not wait:
                raise BlockingIOError(f"{path} is held by {holder}") from None
            if message:
                print(f"{message} (held by {holder})", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.ftruncate(fd, 0)
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
            os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}: {command}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock still holds, only the holder's note is lost
        yield
    finally:
        os.close(fd)


def lock_holder(path: PathLike) -> str:
    """What the holder of a `file_lock` wrote into it ("pid N since T: command"), or "another process"."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"
