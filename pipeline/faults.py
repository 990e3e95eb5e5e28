"""Faults of the machine, each told in one line: a full disk, a read-only or unwritable path.

`install()` (called when the package is imported) puts a `sys.excepthook` in front of Python's:
an OSError whose errno is ENOSPC / EDQUOT (disk full), EROFS (read-only file system) or EACCES
(permission) — or a library error whose text says so (HDF5, TensorFlow) — is printed as

    error: disk full: no space left on device writing <file> (<free> free on <mount>)

and the process exits with status 1; every other exception keeps its traceback. What was
already written stays: outputs are renamed into place only when whole (fsutil.atomic_path), so
the same command completes once space is freed.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from typing import Optional

FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
KINDS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def _mount(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def describe(err: BaseException) -> Optional[str]:
    """The one-line message for a fault of the machine, or None for any other exception."""
    text = str(err)
    code = getattr(err, "errno", None)
    filename = getattr(err, "filename", None)
    if code in FULL or "No space left on device" in text or "Disk quota exceeded" in text:
        where = filename or ""
        free = ""
        if where:
            probe = where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where))
            try:
                free = f" ({shutil.disk_usage(probe).free / 2**20:.0f} MiB free on {_mount(probe)})"
            except OSError:
                pass
        return f"error: disk full: no space left on device{' writing ' + str(where) if where else ''}{free}" + \
            ("" if filename or code in FULL else f" [{text.splitlines()[0][:160]}]") + \
            "; free some space and run the same command again (nothing finished was lost)"
    if code in KINDS:
        return f"error: {KINDS[code]}: {filename or text}; nothing is written into INPUT, " \
               "so this is OUTPUT or a cache: choose a writable OUTPUT"
    return None


def _hook(kind, value, tb, _previous=sys.excepthook):
    message = describe(value) if isinstance(value, BaseException) else None
    if message is None:
        return _previous(kind, value, tb)
    for stream in (sys.stdout, sys.stderr):  # os._exit skips the flush of what was printed before
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    print(message, file=sys.stderr, flush=True)
    os._exit(1)  # no second traceback from threads or atexit handlers


def install() -> None:
    if sys.excepthook is not _hook:
        sys.excepthook = _hook
