"""A static mirror (dumb HTTP): a real nginx serving a bare repository after
`git update-server-info`, with no git on the server side.  A change costs
the objects it adds, not the repository; a mirror that serves a damaged
pack or a lying index costs one refused pass and nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitutil import env, git
from tests.servers import StaticServer, static_http
from tests.syncenv import Hub, Node, admin_and_signers, make_node


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    admin, _ = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    hook = hub.server / "hooks" / "post-update"  # what a static mirror runs after each push
    hook.write_text("#!/bin/sh\nexec git update-server-info\n")
    hook.chmod(0o755)
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q")
    git(hub.server, "update-server-info")
    return hub


@pytest.fixture
def mirror(hub: Hub, tmp_path: Path) -> Iterator[StaticServer]:
    with static_http(hub.server.parent, tmp_path / "nginx") as server:
        yield server


def node_of(server: StaticServer, root: Path, **overrides: object) -> Node:
    signers = root.parent / "keys" / "allowed_signers"
    return make_node(root, f"{server.url}/hosts.git", signers, "my_pc", **overrides)


def change(hub: Hub, line: str) -> None:
    """One signed commit changing one host file; the server's history packed
    first, so the new commit's objects are the only loose ones."""
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q")
    git(hub.server, "update-server-info")
    hub.change(line, lambda w: (w / "hosts" / "gateway").open("a").write(f"# {line}\n"))


def git_fetch_bytes(server: StaticServer, clone: Path) -> int:
    """What `git fetch` over the same static mirror downloads, from nginx's log."""
    server.clear()
    subprocess.run(["git", "-C", str(clone), "fetch", "-q", "origin"], check=True, env=env())
    return server.sent()


def test_a_change_costs_what_it_changes(hub: Hub, mirror: StaticServer, tmp_path: Path) -> None:
    node = node_of(mirror, tmp_path / "n")
    code, out, err = node.sync()
    assert code == 0, err
    assert "3 added" in out
    assert any(path.endswith(".pack") for path, _, _ in mirror.requests())  # the first sync takes the pack
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--bare", f"{mirror.url}/hosts.git", str(clone)], check=True, env=env())

    for n in range(2):
        change(hub, f"on call: {n}")
        mirror.clear()
        code, out, err = node.sync()
        assert code == 0, err
        assert "1 updated" in out
        assert (node.hosts / "gateway").read_text().endswith(f"# on call: {n}\n")
        fetched = mirror.requests()
        paths = [path for path, _, _ in fetched]
        assert not [p for p in paths if p.endswith((".pack", ".idx"))], paths  # only the new, loose objects
        assert len([p for p in paths if "/objects/" in p]) == 4, paths  # commit, root tree, hosts/, the file
        ours = mirror.sent()
        theirs = git_fetch_bytes(mirror, clone)
        assert ours <= 2 * theirs, (ours, theirs, fetched)

    mirror.clear()
    code, out, err = node.sync()  # no-op: the advertised tip is the applied one
    assert code == 0, err
    assert [path for path, _, _ in mirror.requests()] == ["/hosts.git/info/refs"]


def test_a_packed_change_and_more_than_one_pack(hub: Hub, mirror: StaticServer, tmp_path: Path) -> None:
    node = node_of(mirror, tmp_path / "n")
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q")
    git(hub.server, "update-server-info")
    assert node.sync()[0] == 0
    hub.change("a", lambda w: (w / "hosts" / "gateway").open("a").write("# a\n"))
    hub.change("b", lambda w: (w / "hosts" / "gateway").open("a").write("# b\n"))
    # the two new commits into a second pack, beside the first
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-d", "-q")
    git(hub.server, "update-server-info")
    mirror.clear()
    code, out, err = node.sync()
    assert code == 0, err
    assert "2 new commits" in out
    assert (node.hosts / "gateway").read_text().endswith("# a\n# b\n")
    packs = [path for path, _, _ in mirror.requests() if path.endswith(".pack")]
    assert len(packs) == 1, mirror.requests()  # the new pack only


def damaged_mirror(hub: Hub, root: Path, how: str) -> Path:
    """A copy of the server's repository whose newest pack is damaged."""
    copy = root / "hosts.git"
    shutil.copytree(hub.server, copy)
    packs = sorted((copy / "objects" / "pack").glob("pack-*.pack"), key=lambda p: p.stat().st_size)
    new, old = packs[0], packs[-1]
    if how == "truncated":
        data = new.read_bytes()
        new.write_bytes(data[: len(data) // 2])
    elif how == "wrong-index":  # the new pack's index, over another pack's bytes
        new.write_bytes(old.read_bytes())
    else:  # garbage for an index
        new.with_suffix(".idx").write_bytes(b"\xfftOc\x00\x00\x00\x02" + b"\x00" * 100)
    return copy


@pytest.mark.parametrize("how", ["truncated", "wrong-index", "bad-index"])
def test_a_damaged_mirror_costs_one_refused_pass(hub: Hub, tmp_path: Path, how: str) -> None:
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q")
    hub.change("a", lambda w: (w / "hosts" / "gateway").open("a").write("# a\n"))
    git(hub.server, "-c", "repack.writeBitmaps=false", "repack", "-d", "-q")
    git(hub.server, "update-server-info")
    bad_root = tmp_path / "bad"
    damaged_mirror(hub, bad_root, how)
    good = f"file://{hub.server}"
    git(hub.server, "update-ref", "refs/heads/main", "HEAD~1")  # the node has the commit before, first
    assert make_node(tmp_path / "n", good, tmp_path / "keys" / "allowed_signers").sync()[0] == 0
    git(hub.server, "update-ref", "refs/heads/main", hub.tip)
    with static_http(bad_root, tmp_path / "bad-nginx") as bad:
        node = node_of(bad, tmp_path / "n")
        before = node.snapshot()
        store = sorted(p.name for p in (tmp_path / "n" / "state").rglob("pack-*"))
        node = node_of(bad, tmp_path / "n")
        code, _, err = node.sync()
        assert code == 3, err
        expected = {"truncated": "damaged", "wrong-index": "does not hold", "bad-index": "malformed"}[how]
        assert expected in err, err
        assert node.snapshot() == before
        assert sorted(p.name for p in (tmp_path / "n" / "state").rglob("pack-*")) == store  # nothing kept
        assert not list((tmp_path / "n" / "state").glob("incoming-*"))
        # the same node, its mirrors listing a good URL after the bad one: one pass
        node = node_of(bad, tmp_path / "n", repo__mirrors=[good])
        code, _, err = node.sync()
        assert code == 0, err
        assert (node.hosts / "gateway").read_text().endswith("# a\n")


def test_a_static_mirror_is_held_to_max_fetch_bytes(hub: Hub, mirror: StaticServer, tmp_path: Path) -> None:
    node = node_of(mirror, tmp_path / "n", repo__max_fetch_bytes=2000)
    code, _, err = node.sync()
    assert code == 3, err
    assert "more than 2000 bytes" in err and "max_fetch_bytes" in err, err
    assert node.snapshot() == {}
    assert 2000 < mirror.sent() < 2000 + 70_000  # stopped within one read of the cap (plus headers)


def test_a_mirror_without_info_refs_is_named(hub: Hub, mirror: StaticServer, tmp_path: Path) -> None:
    (hub.server / "info" / "refs").unlink()  # `git update-server-info` never ran
    node = node_of(mirror, tmp_path / "n")
    code, _, err = node.sync()
    assert code == 3, err
    assert "no info/refs" in err and "git update-server-info" in err, err
    assert node.snapshot() == {}


def test_a_soft_404_page_for_a_packed_object_is_not_taken_for_it(hub: Hub, tmp_path: Path) -> None:
    """A web server that answers 200 with a page for a missing file: the
    object is then looked for in the packs, where it is."""
    root = tmp_path / "soft"
    shutil.copytree(hub.server, root / "hosts.git")
    tip = git(hub.server, "rev-parse", "main")
    loose = root / "hosts.git" / "objects" / tip[:2] / tip[2:]
    assert not loose.exists()  # packed by the fixture
    loose.parent.mkdir(exist_ok=True)
    loose.write_text("<html>Not found</html>\n")
    with static_http(root, tmp_path / "soft-nginx") as soft:
        node = node_of(soft, tmp_path / "n")
        code, out, err = node.sync()
        assert code == 0, err
        assert "3 added" in out
