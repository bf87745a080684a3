"""A static mirror's loose objects are not all held in memory until the
walk ends: a loose object inflates to up to ``repo.max_fetch_bytes`` from a
few hundred compressed bytes, so a hostile mirror serving many of them
would otherwise cost a multiple of the cap in memory for a few megabytes
sent.  They go to the quarantine as a pack whenever ``dumb.HELD`` bytes
are held (a real nginx serving a real bare repository)."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID
from dulwich.repo import Repo

from syncd.git import dumb
from syncd.git.dumb import Response, StaticMirror
from tests.gitutil import env, git
from tests.servers import static_http

BLOB = 1 << 20  # each blob inflates to this; zeros compress to about a kilobyte


class _Answer:
    def __init__(self, status: int, close: Callable[[], None]) -> None:
        self.status = status
        self._close = close

    def close(self) -> None:
        self._close()


def get(url: str) -> tuple[Response, Callable[[int], bytes]]:
    try:
        response = urllib.request.urlopen(url, timeout=30)  # a loopback nginx
    except urllib.error.HTTPError as exc:
        return _Answer(exc.code, exc.close), exc.read
    return _Answer(response.status, response.close), response.read


def bare_with_big_blobs(root: Path, count: int) -> str:
    repo = root / "hosts.git"
    root.mkdir()
    git(root, "init", "-q", "--bare", str(repo))
    lines = []
    for n in range(count):
        blob = repo / f"blob{n}"
        blob.write_bytes(bytes(BLOB) + str(n).encode())
        lines.append(f"100644 blob {git(repo, 'hash-object', '-w', str(blob))}\tfile{n}\n")
        blob.unlink()
    listing = "".join(lines)
    tree = subprocess.run(
        ["git", "-C", str(repo), "mktree"], input=listing, env=env(), check=True, capture_output=True, text=True
    ).stdout.strip()
    tip = git(repo, "commit-tree", "-m", "big blobs", tree)
    git(repo, "update-ref", "refs/heads/main", tip)
    git(repo, "update-server-info")
    return tip


def test_loose_objects_are_written_out_as_the_walk_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dumb, "HELD", 2 * BLOB)
    tip = bare_with_big_blobs(tmp_path / "srv", 6)
    store = Repo.init_bare(str(tmp_path / "store"), mkdir=True).object_store
    assert isinstance(store, DiskObjectStore)
    incoming = tmp_path / "incoming"
    (incoming / "pack").mkdir(parents=True)
    (incoming / "info").mkdir()
    received: list[int] = []
    held: list[int] = []
    with static_http(tmp_path / "srv", tmp_path / "nginx") as server:
        mirror = StaticMirror(f"{server.url}/hosts.git", get, received.append, 64 << 20, store, incoming)
        write = mirror._write_loose

        def watched() -> None:
            held.append(mirror._held)
            write()

        monkeypatch.setattr(mirror, "_write_loose", watched)
        mirror.fetch(ObjectID(tip.encode()))
        mirror.close()
    assert sum(received) < BLOB  # six megabytes of objects, a few kilobytes sent
    assert max(held) <= 2 * BLOB + BLOB + 64  # never more than HELD and one object
    assert len(held) >= 3
    quarantine = DiskObjectStore(str(incoming))
    assert ObjectID(tip.encode()) in quarantine
    assert len(list((incoming / "pack").glob("pack-*.pack"))) >= 2  # written out more than once
    quarantine.close()
