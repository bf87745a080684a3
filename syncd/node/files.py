"""Files and directories on the node's disk, written so that a crash at any
point leaves the old version or the new one, never a mix: a temporary file
beside the target, fsync'd and renamed over it; directories made with an
exact mode whatever the umask.  The hosts directory, the state, the parse
index and the metrics file are all written here."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from syncd.errors import FatalIOError

TEMP_PREFIX = ".syncd-"  # a temporary file beside its target: a dot file, which tincd ignores
FILE_MODE = 0o644  # host files: tincd may run unprivileged after start-up
DIR_MODE = 0o755  # the hosts directory and any parent syncd creates
BATCH_FROM = 32  # files written at once from which one sync of the disk beats one fsync each


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> os.stat_result:
    """Write ``data`` to ``path`` so that a reader sees the old or the new
    file, never a mix; returns the new file's stat.  The caller fsyncs the
    directory."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)  # whatever the umask
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path.lstat()  # after the rename, which changes the ctime


def write_many(directory: Path, files: Mapping[str, bytes], mode: int = FILE_MODE) -> dict[str, os.stat_result]:
    """``write_atomic`` for many files in one directory, with one flush to
    disk for them all instead of one per file: every temporary file is
    written, the filesystems are synced once (``os.sync``), then each is
    renamed over its target.  A crash before the renames leaves only
    temporary files (``hostsdir.clean_temp_files`` removes them); after
    them, every new file is whole.  Returns each file's stat after its
    rename; the caller fsyncs the directory."""
    if len(files) < BATCH_FROM:
        return {name: write_atomic(directory / name, data, mode) for name, data in files.items()}
    base = os.fspath(directory)  # strings, not Paths: a first sync writes 10k files
    temps: dict[str, str] = {}
    try:
        for name, data in files.items():
            temps[name] = temp = f"{base}/{TEMP_PREFIX}{name}.{secrets.token_hex(4)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        os.sync()
        stats = {}
        for name, temp in temps.items():
            os.replace(temp, f"{base}/{name}")  # noqa: PTH105 -- a str path: 10k Paths cost a second
            stats[name] = os.lstat(f"{base}/{name}")
        return stats
    except BaseException:
        for temp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # noqa: PTH108 -- as above
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` and its missing parents, each with exactly ``mode``
    whatever the umask.  Existing directories keep their mode (the operator's
    choice), except a mode-0 one: that is a directory this function made and
    a crash stopped before its chmod."""
    todo: list[Path] = []
    current = path
    while True:  # ends at the first existing directory; "/" always exists
        try:
            st = current.stat()  # following links: /etc/tinc may be one
        except (FileNotFoundError, NotADirectoryError):  # the latter: a parent is a file, found next
            todo.append(current)
            current = current.parent
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FatalIOError(
                f"{current}: not a directory (syncd needs {path} to be one)",
                hint=f"move {current} away, then sync again",
            )
        if stat.S_IMODE(st.st_mode) != 0 or current == current.parent:
            break
        todo.append(current)
        current = current.parent
    for directory in reversed(todo):
        with contextlib.suppress(FileExistsError):  # made by a concurrent run, or mode-0 from a crash
            directory.mkdir(0)
        directory.chmod(mode)
