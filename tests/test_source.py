"""The dulwich edge: object sizes from headers (loose, packed, deltas),
history walks, and tree reading limits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from syncd.errors import UnsafeTreeError
from syncd.git.objects import object_size
from syncd.git.repository import GitRepository
from syncd.rules.tree import EntryKind
from tests.gitutil import commit, git, init_repo


def all_objects(repo: Path) -> dict[str, int]:
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objectsize)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {sha: int(size) for sha, size in (line.split() for line in out.splitlines())}


@pytest.fixture
def history(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    (repo / "hosts").mkdir()
    big = "".join(f"# line {i} of a long comment that compresses and deltifies well\n" for i in range(3000))
    for i in range(4):
        (repo / "hosts" / "gateway").write_text(big + f"Subnet = 10.0.{i}.0/24\n")
        (repo / "hosts" / f"n{i}").write_text(f"Subnet = 10.1.{i}.0/24\n")
        commit(repo, f"change {i}", None)
    return repo


def test_sizes_of_loose_objects(history: Path) -> None:
    store = GitRepository.reading(history / ".git")
    for sha, size in all_objects(history).items():
        assert object_size(store.store, sha.encode()) == size  # type: ignore[arg-type]


def test_sizes_of_packed_objects_and_deltas(history: Path) -> None:
    git(history, "gc", "-q", "--aggressive", "--prune=now")
    verify = subprocess.run(
        ["git", "-C", str(history), "verify-pack", "-v", *map(str, (history / ".git/objects/pack").glob("*.idx"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "chain length" in verify, "the pack should contain deltas"
    store = GitRepository.reading(history / ".git")
    for sha, size in all_objects(history).items():
        assert object_size(store.store, sha.encode()) == size  # type: ignore[arg-type]


def test_walks(history: Path) -> None:
    store = GitRepository.reading(history / ".git")
    revs = git(history, "rev-list", "HEAD").split()
    assert [c.sha for c in store.ancestors(revs[0])] == revs
    assert [c.sha for c in store.ancestors(revs[0], revs[2])] == revs[:2]
    assert store.is_ancestor(revs[3], revs[0]) and not store.is_ancestor(revs[0], revs[3])
    assert store.commit(revs[0]).summary == "change 3"


def test_read_hosts_kinds_and_limits(history: Path) -> None:
    repo = history
    (repo / "hosts" / "link").symlink_to("gateway")
    (repo / "hosts" / "dir").mkdir()
    (repo / "hosts" / "dir" / "x").write_text("x")
    tip = commit(repo, "odd entries", None)
    store = GitRepository.reading(repo / ".git")
    entries = {e.name: e for e in store.host_entries(tip, "hosts", 100, 1000)}
    assert entries["link"].kind is EntryKind.SYMLINK and entries["link"].blob is None
    assert entries["dir"].kind is EntryKind.DIRECTORY
    assert entries["gateway"].kind is EntryKind.FILE and entries["gateway"].data is None  # nothing is read
    assert entries["gateway"].size > 100_000
    blob = entries["n0"].blob
    assert blob == git(repo, "rev-parse", f"{tip}:hosts/n0")
    assert store.blob(blob, 1000) == b"Subnet = 10.1.0.0/24\n"
    with pytest.raises(UnsafeTreeError, match="over 1000"):
        store.blob(entries["gateway"].blob or "", 1000)  # size from the header: never inflated
    with pytest.raises(UnsafeTreeError, match="max_files"):
        store.host_entries(tip, "hosts", 3, 1000)
    with pytest.raises(UnsafeTreeError, match="no directory"):
        store.host_entries(tip, "nothere", 100, 1000)
    with pytest.raises(UnsafeTreeError, match="not a directory"):
        store.host_entries(tip, "hosts/n0", 100, 1000)


def test_range_across_a_merge(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    (repo / "f").write_text("0\n")
    base = commit(repo, "base", None)
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "g").write_text("side\n")
    side = commit(repo, "side", None)
    git(repo, "checkout", "-q", "main")
    (repo / "f").write_text("1\n")
    applied = commit(repo, "applied", None)
    git(repo, "merge", "-q", "--no-edit", "--no-gpg-sign", "side")
    merge = git(repo, "rev-parse", "HEAD")
    (repo / "f").write_text("2\n")
    tip = commit(repo, "after the merge", None)
    store = GitRepository.reading(repo / ".git")
    # what git itself calls applied..tip
    expected = git(repo, "rev-list", f"{applied}..{tip}").split()
    assert sorted(c.sha for c in store.ancestors(tip, applied)) == sorted(expected)
    assert set(expected) == {tip, merge, side}
    assert base not in expected
    # on a plain line the range is just the line
    assert [c.sha for c in store.ancestors(applied, base)] == [applied]
