"""Read a hosts directory on disk into ``TreeEntry`` values (the I/O edge of
``syncd check``).  Nothing is followed: a symlink is reported as a symlink,
and a file over the size limit is not read at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from syncd.errors import UsageError
from syncd.policy import POLICY_FILE
from syncd.validate import EntryKind, TreeEntry


def read_policy(repo: Path) -> bytes | None:
    path = repo / POLICY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def read_hosts_dir(directory: Path, max_file_bytes: int) -> list[TreeEntry]:
    try:
        scan = list(os.scandir(directory))
    except FileNotFoundError:
        raise UsageError(f"{directory}: no such directory") from None
    except NotADirectoryError:
        raise UsageError(f"{directory}: not a directory") from None
    except OSError as exc:
        raise UsageError(f"{directory}: cannot read: {exc.strerror}") from None
    entries = []
    for item in scan:
        try:
            st = item.stat(follow_symlinks=False)
        except OSError as exc:
            raise UsageError(f"{item.path}: cannot stat: {exc.strerror}") from None
        if stat.S_ISREG(st.st_mode):
            kind = EntryKind.FILE
        elif stat.S_ISLNK(st.st_mode):
            kind = EntryKind.SYMLINK
        elif stat.S_ISDIR(st.st_mode):
            kind = EntryKind.SUBMODULE if (Path(item.path) / ".git").exists() else EntryKind.DIRECTORY
        else:
            kind = EntryKind.OTHER
        data = None
        if kind is EntryKind.FILE and st.st_size <= max_file_bytes:
            try:
                with open(item.path, "rb") as fh:
                    data = fh.read(max_file_bytes + 1)
            except OSError as exc:
                raise UsageError(f"{item.path}: cannot read: {exc.strerror}") from None
        entries.append(TreeEntry(item.name, kind, st.st_size if data is None else len(data), data))
    entries.sort(key=lambda e: e.name)
    return entries
