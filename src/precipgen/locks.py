"""File locks: one run per output directory, one process creating a store's schema.

Locks are ``flock`` locks on a small file beside what they guard, so the kernel releases them
when the holder exits, however it exits: a killed run never leaves a directory stuck. The
lock file of an output directory records who holds it (pid, host, run id, command), so a
refused run can name the run in its way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class OutputBusyError(RuntimeError):
    """Another run holds the output directory; the message names it."""


def lock_path(target: Path, inside: bool = False) -> Path:
    """``<parent>/.<name>.lock`` beside a target that is written elsewhere and renamed into
    place (it must survive the rename); ``<target>/.precipgen.lock`` inside a directory that
    is written in place (a training run's directory)."""
    target = Path(target)
    return target / ".precipgen.lock" if inside else target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Block (up to ``timeout`` s) until ``path`` is locked exclusively; for short critical
    sections such as creating a database schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class OutputClaim:
    """An exclusive claim on an output directory (see :func:`claim_output`)."""

    def __init__(self, target: Path, fd: int):
        self.target, self._fd = target, fd
        self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                     "command": " ".join(sys.argv)[:500], "run_id": None}
        self._write()

    def set_run_id(self, run_id: str | None) -> None:
        """Name the MLflow run that owns the directory (once it exists)."""
        self.info["run_id"] = run_id
        self._write()

    def _write(self) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(self.info).encode(), 0)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    run = f"MLflow run {info['run_id']}, " if info.get("run_id") else ""
    return (f"{run}pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
            f"{info.get('started_utc', '?')}: {info.get('command', '')}").strip()


@contextlib.contextmanager
def claim_output(target: str | Path, what: str = "output directory",
                 inside: bool = False) -> Iterator[OutputClaim]:
    """Hold ``target`` for one run; a second run on it is refused at once, naming the holder.

    ``what`` is how the error names the path (e.g. ``--output_dir``); ``inside``: see
    :func:`lock_path`."""
    target = Path(target)
    path = lock_path(target, inside)
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"{what} {target} is in use by another precipgen run ({_holder(path)}); wait for "
                f"it to finish, or choose another {what}") from None
        claim = OutputClaim(target, fd)
        try:
            yield claim
        finally:
            os.ftruncate(fd, 0)
            if created and inside and [p.name for p in path.parent.iterdir()] == [path.name]:
                # A run refused before it wrote anything leaves no empty output dir behind.
                path.unlink()
                path.parent.rmdir()
    finally:
        os.close(fd)
