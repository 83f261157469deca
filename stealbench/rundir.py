"""Run folders: where one run writes, validated, locked for the run, and marked when the run fails.

A run folder is always exactly one path component below ``--output_dir``: a name can never write beside or
above it. A lock file inside the folder (``fcntl.flock``, released by the kernel when the process dies) keeps
two processes, two runs with the same ``--name`` or two grids on one output folder, from writing one folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from .errors import ConfigError
from .results import RESULTS_FILE

LOCK_FILE = ".stealbench.lock"
ERROR_FILE = "error.txt"
#: well below the usual 255-byte limit of one file name, leaving room for suffixes tools add
MAX_NAME_LENGTH = 200
_BAD_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")

try:  # POSIX; on Windows runs are not locked (there is no flock)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class RunDirBusyError(ConfigError):
    """Another live process holds the run folder's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"run folder {path} is in use by another stealbench process ({who}); wait for it to end "
                         "or choose another --name / --output_dir")
        self.path, self.pid = path, pid


@dataclass
class RunDir:
    """An open, locked run folder. Release it (or leave the `with` block) when the run has ended."""

    path: Path
    _lock: IO[str] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor drops the flock
            self._lock = None

    @property
    def locked(self) -> bool:
        return self._lock is not None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_name(name: str) -> str:
    """A run folder name must be one harmless path component; returns it or raises ConfigError naming --name."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"--name must be a non-empty folder name, got {name!r}")
    if name in (".", ".."):
        raise ConfigError(f"--name {name!r} is not a folder name; a run folder is one folder inside --output_dir "
                          "(e.g. --name my_run)")
    if Path(name).is_absolute() or _BAD_CHARS.search(name):
        raise ConfigError(f"--name {name!r} must be a single folder name without '/', '\\' or control characters; "
                          "to write elsewhere, set --output_dir (the run folder is always <output_dir>/<name>)")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:  # undecodable bytes from argv (lone surrogates)
        raise ConfigError(f"--name {ascii(name)} is not valid UTF-8 text; use a UTF-8 folder name") from None
    if len(name) > MAX_NAME_LENGTH or len(encoded) > MAX_NAME_LENGTH:
        raise ConfigError(f"--name is {len(name)} characters long; run folder names are at most {MAX_NAME_LENGTH}")
    return name


def _check_output_dir(output_dir: Path) -> Path:
    """Create --output_dir if needed; refuse a file, an unwritable folder or a path through a file."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output_dir {str(output_dir)!r} is a file, not a folder; choose a folder for run "
                          "results")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output_dir {str(output_dir)!r} cannot be created: {exc.strerror or exc}; choose a "
                          "writable folder") from exc
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--output_dir {str(output_dir)!r} is not writable by this user; choose a writable "
                          "folder")
    return output_dir


def _read_pid(lock_path: Path) -> int | None:
    try:
        return int(lock_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _lock(folder: Path, record_pid: bool = True) -> IO[str]:
    """Take the folder's lock without waiting; RunDirBusyError when another process holds it."""
    lock_path = folder / LOCK_FILE
    try:
        handle = open(lock_path, "a+")
    except OSError as exc:
        raise ConfigError(f"run folder {folder} is not writable: {exc.strerror or exc}; choose another "
                          "--output_dir") from exc
    if fcntl is None:  # pragma: no cover
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirBusyError(folder, _read_pid(lock_path)) from None
        raise
    if record_pid:  # for the message a second process shows
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


def is_busy(folder: str | Path) -> int | None:
    """The pid of the live process that holds `folder`'s lock (0 when unknown), or None when nobody does."""
    folder = Path(folder)
    if fcntl is None or not (folder / LOCK_FILE).is_file():
        return None
    try:
        handle = _lock(folder, record_pid=False)
    except RunDirBusyError as exc:
        return exc.pid or 0
    except (ConfigError, OSError):  # an unreadable lock file: nobody can hold it through us either
        return None
    handle.close()
    return None


def open_run_dir(output_dir: str | Path, name: str | None, default_name: str) -> RunDir:
    """Validate, create and lock ``<output_dir>/<name>`` (``name`` None: ``<default_name>_<timestamp>``).

    Raises ConfigError for a bad name or output folder, RunDirBusyError when another process runs in that folder,
    and ConfigError when the folder already holds a complete run. An error.txt left by an earlier attempt is moved
    to error.previous-<time>.txt so that it never sits beside a new results.json.
    """
    out = _check_output_dir(Path(output_dir))
    if name is None:
        base = check_name(f"{default_name}_{datetime.now():%Y%m%d-%H%M%S}"[-MAX_NAME_LENGTH:])
        name, n = base, 1
        while (out / name).exists():  # two unnamed runs started in the same second
            n += 1
            name = f"{base}-{n}"
    folder = out / check_name(name)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"run folder {folder} exists and is a file; remove it or choose another --name")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"run folder {folder} cannot be created: {exc.strerror or exc}; choose another "
                          "--output_dir or --name") from exc
    run = RunDir(folder, _lock(folder))
    try:
        if (folder / RESULTS_FILE).exists():
            raise ConfigError(f"{folder} already holds a completed run; choose another --name or --output_dir")
        set_aside_error(folder)
    except BaseException:
        run.release()
        raise
    return run


def set_aside_error(folder: Path) -> None:
    """Move an earlier attempt's error.txt to error.previous-<time>.txt: kept, but no longer the folder's state."""
    stale = folder / ERROR_FILE
    if stale.is_file():
        stale.replace(folder / f"error.previous-{int(time.time())}.txt")


def describe_failure(exc: BaseException) -> str:
    """The first line of error.txt: what ended the run, in words."""
    from .signals import RunInterrupted

    if isinstance(exc, RunInterrupted):
        return f"interrupted by {exc.describe()}; the run did not finish (run the same command again to restart it)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by Ctrl-C (SIGINT); the run did not finish (run the same command again to restart it)"
    return f"failed: {type(exc).__name__}: {exc}"


def record_failure(run_dir: str | Path | RunDir, exc: BaseException) -> Path | None:
    """Write error.txt (what ended the run, then the traceback) into the run folder; never raises."""
    folder = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)
    path = folder / ERROR_FILE
    text = describe_failure(exc) + "\n\n" + "".join(traceback.format_exception(exc))
    details = getattr(exc, "details", "")  # an attack's own traceback, from the attacker's process
    if details:
        text += f"\nin the attacker's process:\n{details}"
    try:
        tmp = folder / f".{ERROR_FILE}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:  # the folder vanished or became read-only: the console message still tells the user
        return None
    return path



def taken_by_another(folder: Path) -> str | None:
    """Why a grid must leave this run to another process (it holds the run's lock, or finished it since the
    grid was planned), else None."""
    holder = is_busy(folder)
    if holder is not None:
        return f"in use by another process (pid {holder})"
    return "completed by another process" if is_complete(folder) else None


def is_complete(folder: Path) -> bool:
    """A run folder is complete when it holds a readable results.json with status `complete`."""
    try:
        payload = json.loads((folder / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("status") == "complete"


__all__ = ["ERROR_FILE", "LOCK_FILE", "MAX_NAME_LENGTH", "RunDir", "RunDirBusyError", "check_name", "describe_failure",
           "is_busy", "is_complete", "open_run_dir", "record_failure", "set_aside_error", "taken_by_another"]
