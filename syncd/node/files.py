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
from pathlib import Path

from syncd.errors import FatalIOError

TEMP_PREFIX = ".syncd-"  # a temporary file beside its target: a dot file, which tincd ignores
FILE_MODE = 0o644  # host files: tincd may run unprivileged after start-up
DIR_MODE = 0o755  # the hosts directory and any parent syncd creates


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
    temp.replace(path)
    return path.lstat()  # after the rename, which changes the ctime


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
