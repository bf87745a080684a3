"""The connectivity check of a fetch (syncd/git/objects.py ``check_connected``)
on real packs, made by ``git pack-objects`` and indexed by syncd as a fetch
indexes them (``packindex.add_pack``): a pack that lacks any object the new
commits reach is refused, however deep the object sits, whether the commits
before it are in the same pack or in the store behind it.  And the diff the
check computes is the one the pass reads back (``commitdiff``)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID

from syncd.git import commitdiff
from syncd.git.objects import check_connected, known_ids, nothing_known
from syncd.git.packindex import add_pack
from syncd.git.repository import GitRepository
from tests.gitutil import git


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def store_with_pack(path: Path, source: Path, objects: list[str]) -> DiskObjectStore:
    """A new store at ``path`` holding one pack of ``objects`` from ``source``."""
    pack = subprocess.run(
        ["git", "-C", str(source), "pack-objects", "--stdout"],
        input="".join(f"{o}\n" for o in objects).encode(),
        capture_output=True,
        check=True,
    ).stdout
    store = DiskObjectStore.init(str(path))
    add_pack(store, io.BytesIO(pack).read)
    return store


def reachable(repo: Path, tip: str, stop: str | None = None) -> list[str]:
    args = ["rev-list", "--objects", tip] + ([f"^{stop}"] if stop else [])
    return [line.split()[0] for line in git(repo, *args).splitlines()]


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with a file three directories deep; a second commit
    changes only that file."""
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    deep = repo / "hosts" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "node1").write_text("Subnet = 10.0.0.1\n")
    (repo / "hosts" / "node2").write_text("Subnet = 10.0.0.2\n")
    first = commit_all(repo, "first")
    (deep / "node1").write_text("Subnet = 10.0.0.9\n")
    second = commit_all(repo, "second")
    return repo, first, second


def deep_blob(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", f"{rev}:hosts/a/b/node1").strip()


@pytest.mark.parametrize("lacking", ["blob", "subtree"])
def test_a_pack_lacking_an_object_at_depth_is_refused(
    history: tuple[Path, str, str], tmp_path: Path, lacking: str
) -> None:
    """Both commits in one pack (a first fetch), less the second commit's
    blob three directories deep, or the directory holding it."""
    repo, _first, second = history
    gone = deep_blob(repo, second) if lacking == "blob" else git(repo, "rev-parse", f"{second}:hosts/a/b").strip()
    objects = [o for o in reachable(repo, second) if o != gone]
    store = store_with_pack(tmp_path / "incoming", repo, objects)
    found = check_connected(store, nothing_known, ObjectID(second.encode()))
    assert found is not None and gone in found and "is missing" in found, found
    assert check_connected(store_with_pack(tmp_path / "whole", repo, reachable(repo, second)), nothing_known,
                           ObjectID(second.encode())) is None  # fmt: skip


@pytest.mark.parametrize("lacking", ["blob", "subtree", "none"])
def test_a_thin_pack_on_a_complete_store_is_checked_against_it(
    history: tuple[Path, str, str], tmp_path: Path, lacking: str
) -> None:
    """The first commit already in the store (complete), the second fetched
    alone: the new commit is compared with its parent read from the store,
    and what it changes must be in the pack."""
    repo, first, second = history
    base = store_with_pack(tmp_path / "base", repo, reachable(repo, first))
    new = reachable(repo, second, first)
    gone = {"blob": deep_blob(repo, second), "subtree": git(repo, "rev-parse", f"{second}:hosts/a").strip()}
    assert all(o in new for o in gone.values())  # both changed with the file
    objects = [o for o in new if o != gone.get(lacking)]
    incoming = store_with_pack(tmp_path / "incoming", repo, objects)
    found = check_connected(incoming, known_ids(base), ObjectID(second.encode()))
    if lacking == "none":
        assert found is None
    else:
        assert found is not None and gone[lacking] in found and "is missing" in found, found


def test_the_pass_reads_back_the_diff_the_check_made(history: tuple[Path, str, str], tmp_path: Path) -> None:
    """The diff kept by the check is what a full diff of the store gives."""
    repo, first, second = history
    base = store_with_pack(tmp_path / "base", repo, reachable(repo, second))
    commitdiff.forget()
    assert check_connected(base, nothing_known, ObjectID(second.encode())) is None
    kept = commitdiff.known_diff(ObjectID(second.encode()))
    assert kept is not None and kept.plain
    assert list(kept.entries) == ["hosts/a/b/node1"]
    commitdiff.forget()
    git(repo, "update-ref", "refs/heads/x", second)
    reading = GitRepository.reading(repo)
    try:
        assert reading.changed_paths(second) == ("hosts/a/b/node1",)
        assert reading.changed_paths(first) == ("hosts/a/b/node1", "hosts/node2")
        assert reading.file_at(second, "hosts/a/b/node1", 100) == b"Subnet = 10.0.0.9\n"
        assert reading.file_at(second, "hosts/node2", 100) == b"Subnet = 10.0.0.2\n"
    finally:
        reading.close()
    assert commitdiff.known_diff(ObjectID(second.encode())) == kept
