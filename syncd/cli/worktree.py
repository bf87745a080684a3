"""A working tree (or a bare hosts directory) on disk as a ``TreeSource``: the
I/O edge of ``syncd check`` and ``add-node``.  Nothing is followed: a symlink
is reported as a symlink, and a file over the size limit is not read at all."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import UnsafeTreeError, UsageError
from syncd.findings import Finding
from syncd.rules.policy import POLICY_FILE
from syncd.rules.tree import EntryKind, TreeEntry, without_gc
from syncd.rules.validate import Report, check_tree

if TYPE_CHECKING:
    from syncd.signing.allowed_signers import AllowedSigner
    from syncd.sync.lastchange import History


class WorkTree:
    """A repository's working tree (``root``: its ``syncd.yaml`` and its
    policy's ``hosts_dir``), or a bare ``hosts_dir`` such as
    ``/etc/tinc/NET/hosts`` (under the default policy, or ``root``'s when
    both are given).  Neither given: the working tree ``.``."""

    def __init__(self, root: Path | None = None, hosts_dir: Path | None = None) -> None:
        self.root = root if root is not None or hosts_dir is not None else Path()
        self.hosts_dir = hosts_dir

    @property
    def label(self) -> str:
        return str(self.hosts_dir if self.hosts_dir is not None else self.root)

    def policy_bytes(self) -> bytes | None:
        if self.root is None:
            return None
        if not self.root.is_dir():
            raise UsageError(f"{self.root}: no such directory")
        return read_policy(self.root)

    def host_entries(self, hosts_dir: str, max_files: int, max_file_bytes: int) -> list[TreeEntry]:
        # max_files is not enforced here: it bounds what a node reads from a
        # server, and a working tree is the user's own disk.
        if self.hosts_dir is not None:
            return read_hosts_dir(self.hosts_dir, max_file_bytes)
        assert self.root is not None
        directory = self.root / hosts_dir
        if not os.path.lexists(directory) and read_policy(self.root) is None:
            where = self.root.resolve()
            raise UsageError(
                f"{where}: not a hosts repository (no {POLICY_FILE}, no {hosts_dir}/ directory)",
                hint="run syncd check in a clone of the hosts repository, or name it: syncd check REPO; "
                "for a node's installed host files: syncd check --hosts-dir /etc/tinc/NET/hosts",
            )
        return read_hosts_dir(directory, max_file_bytes)


def run_check(repo: Path | None, hosts_dir: Path | None) -> Report:
    """``syncd check [REPO] [--hosts-dir DIR]``: read the tree and validate
    it, and the repository's own ``allowed_signers`` when it has one."""
    return _checked(WorkTree(repo, hosts_dir), hosts_dir, False, None, lean=True)[0]


def check_worktree(
    repo: Path | None,
    hosts_dir: Path | None,
    *,
    with_history: bool = False,
    signers: Sequence[AllowedSigner] | None = None,
    lean: bool = False,
) -> tuple[Report, dict[str, bytes], History]:
    """``run_check``, with the valid nodes' host files and the history
    (read when asked for, or when the policy has ``stale_after``: then the
    nodes whose file had no signed change for that long are warned about).
    ``signers``: the admins the history's roles are worked out from.
    ``lean``: the findings are all the caller wants (``check_tree``): no
    host file is returned, and each host's parse is kept only as far as the
    checks across files need it."""
    report, files, history = _checked(WorkTree(repo, hosts_dir), hosts_dir, with_history, signers, lean=lean)
    if history is None:
        from syncd.sync.lastchange import NO_HISTORY

        history = NO_HISTORY
    return report, files, history


def _checked(
    tree: WorkTree,
    hosts_dir: Path | None,
    with_history: bool,
    signers: Sequence[AllowedSigner] | None,
    *,
    lean: bool,
) -> tuple[Report, dict[str, bytes], History | None]:
    """``check_worktree``; the history is ``None`` when it was not read."""
    with without_gc():  # the process exits right after the check
        report, files = check_tree(tree, installed=hosts_dir is not None, lean=lean)
    found: list[Finding] = []
    signers_file = read_repo_file(tree.root, "allowed_signers") if tree.root is not None else None
    if signers_file is not None:  # the admins, as the nodes read them (docs/trust.md)
        from syncd.rules.authority import admin_findings  # imported only for a repository with admins

        found += admin_findings(signers_file, time.time())
    stale_after = report.policy.stale_after
    history: History | None = None  # not read: lastchange is imported only when it is
    if tree.root is not None and hosts_dir is None and (with_history or stale_after is not None):
        history = repo_history(tree.root, report.policy.hosts_dir, signers)
    # a plain directory has no history to judge by
    if stale_after is not None and history is not None and history.known:
        from syncd.rules.stale import stale_findings

        last = {name: change.when for name, change in history.changes.items()}
        hosts, where = report.hosts, report.policy.hosts_dir
        found += stale_findings(hosts, where, last, history.at_tip, stale_after, time.time())
    if found:
        findings = tuple(sorted((*report.findings, *found), key=lambda f: f.sort_key()))
        report = dataclasses.replace(report, findings=findings)
    return report, files, history


def repo_history(root: Path, hosts_dir: str, admins: Sequence[AllowedSigner] | None) -> History:
    """The last signed change of each host file, from the history of the
    git repository at ``root`` (its ``HEAD``); ``NO_HISTORY`` when ``root``
    is a plain directory or has no commit yet."""
    from syncd.git.repository import GitRepository
    from syncd.sync.lastchange import NO_HISTORY, last_changes

    bare = (root / "objects").is_dir() and (root / "HEAD").is_file()
    if not bare and not (root / ".git").exists():
        return NO_HISTORY
    dot_git = root / ".git"
    if not bare and not _readable_git(dot_git):
        raise UsageError(f"{dot_git}: not a git repository syncd can read", hint="git -C REPO status says why")
    # a ".git" file (a linked worktree, a submodule) names the real one: git's reader follows it
    repo = GitRepository.reading(root if bare or dot_git.is_file() else dot_git)
    try:
        try:
            tip = repo.resolve("HEAD")
        except UnsafeTreeError:
            return NO_HISTORY  # no commit yet
        return last_changes(repo, tip, hosts_dir, admins)
    finally:
        repo.close()


def _readable_git(dot_git: Path) -> bool:
    """A ``.git`` directory with its ``HEAD``, or a ``.git`` file naming
    one (``gitdir: PATH``, relative to the file's directory)."""
    if dot_git.is_dir():
        return (dot_git / "HEAD").is_file()
    try:
        text = dot_git.read_text(errors="replace")
    except OSError:
        return False
    target = text.removeprefix("gitdir:").strip()
    return text.startswith("gitdir:") and (dot_git.parent / target / "HEAD").is_file()


def read_policy(repo: Path) -> bytes | None:
    return read_repo_file(repo, POLICY_FILE)


def read_repo_file(repo: Path, name: str) -> bytes | None:
    path = repo / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise  # errors.outcome names the path and the user
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def read_hosts_dir(directory: Path, max_file_bytes: int) -> list[TreeEntry]:
    try:
        scan = list(os.scandir(directory))
    except FileNotFoundError:
        raise UsageError(f"{directory}: no such directory") from None
    except NotADirectoryError:
        raise UsageError(f"{directory}: not a directory") from None
    except PermissionError:
        raise  # errors.outcome names the path and the user
    except OSError as exc:
        raise UsageError(f"{directory}: cannot read: {exc.strerror}") from None
    entries = []
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    for item in scan:
        # d_type from the directory listing: no stat() per entry
        if item.is_symlink():
            entries.append(TreeEntry(item.name, EntryKind.SYMLINK, 0, None))
            continue
        if item.is_dir(follow_symlinks=False):
            kind = EntryKind.SUBMODULE if (Path(item.path) / ".git").exists() else EntryKind.DIRECTORY
            entries.append(TreeEntry(item.name, kind, 0, None))
            continue
        if not item.is_file(follow_symlinks=False):
            entries.append(TreeEntry(item.name, EntryKind.OTHER, 0, None))
            continue
        try:
            # O_NOFOLLOW: a file swapped for a symlink after the listing is
            # refused, not followed.
            fd = os.open(item.path, flags)
        except PermissionError:
            raise
        except OSError as exc:
            raise UsageError(f"{item.path}: cannot open: {exc.strerror}") from None
        try:
            data = _read_at_most(fd, max_file_bytes + 1)
            size = len(data) if len(data) <= max_file_bytes else os.fstat(fd).st_size
        except OSError as exc:
            raise UsageError(f"{item.path}: cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)
        entries.append(_new_entry(TreeEntry, (item.name, _FILE, size, data if size <= max_file_bytes else None, None)))
    entries.sort()  # by name: names in one directory differ
    return entries


_new_entry = tuple.__new__  # one per file: skips the namedtuple's Python-level __new__
_FILE = EntryKind.FILE


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    while limit > 0:
        chunk = os.read(fd, limit)
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
