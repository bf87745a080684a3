"""A hostile or stalled server costs one refused pass, never more.

Each test: a node in sync; a faulty pass against a misbehaving git server
(tests/hostile.py) changes nothing on the node (hosts files, state.json,
the refs of its store), and the next honest pass converges without anyone
touching the node."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.git.store import APPLIED_REF, FETCHED_REF
from tests.gitutil import git
from tests.hostile import REENCODINGS, hostile_git, reencode_signature
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, Node, make_node


def node_at(hub: Hub, tmp_path: Path, url: str, name: str = "node", **overrides: Any) -> Node:
    return make_node(tmp_path / name, str(url), tmp_path / "keys" / "allowed_signers", **overrides)


def add_host(name: str, subnet: str, seed: int) -> Callable[[Path], None]:
    def edit(work: Path) -> None:
        (work / "hosts" / name).write_text(f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}")

    return edit


def refs(node: Node) -> dict[str, str]:
    store = node.state / "repo.git"
    out = {}
    for ref in (APPLIED_REF, FETCHED_REF):
        path = store / ref.decode()
        out[ref.decode()] = path.read_text() if path.exists() else ""
    return out


class Frozen:
    """What a faulty pass must leave exactly as it was."""

    def __init__(self, node: Node, *, fetched_may_move: bool = False) -> None:
        self.node = node
        self.fetched_may_move = fetched_may_move
        self.hosts = node.snapshot()
        self.state = (node.state / "state.json").read_bytes()
        self.refs = refs(node)

    def assert_unchanged(self) -> None:
        assert self.node.snapshot() == self.hosts
        assert (self.node.state / "state.json").read_bytes() == self.state
        now = refs(self.node)
        if self.fetched_may_move:  # a signed, complete tip refused for what it is
            now[FETCHED_REF.decode()] = self.refs[FETCHED_REF.decode()]
        assert now == self.refs
        assert not list(self.node.state.glob("incoming-*")), "a quarantine was left behind"


def health(node: Node) -> dict[str, object]:
    data: dict[str, object] = json.loads((node.state / "health.json").read_text())
    return data


def converge(node: Node, hub: Hub) -> None:
    code, _, err = node.sync()
    assert code == 0, err
    assert json.loads((node.state / "state.json").read_text())["last_applied"] == hub.tip
    assert node.files() == {p.name: p.read_bytes() for p in (hub.work / "hosts").iterdir()}


# --- 1. a re-encoded copy of a signed commit ---------------------------------------------------


@pytest.mark.parametrize("how", REENCODINGS)
def test_reencoded_commit_is_refused_and_honest_children_are_taken(hub: Hub, tmp_path: Path, how: str) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    genuine = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--mirror", str(hub.server), str(mirror))
    forged = reencode_signature(mirror, genuine, how)
    assert forged != genuine
    frozen = Frozen(node)
    with hostile_git(mirror, "substitute", tip=forged, source=mirror) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 1, err
    assert "re-encoded" in err and forged[:12] in err
    assert health(node)["last_error_reason"] == "signature"
    frozen.assert_unchanged()
    # the honest server: the genuine commit and its child are taken
    node.config.write_text(node.config.read_text().replace(url, str(hub.server)))
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    converge(node, hub)


def test_a_node_that_applied_a_reencoded_copy_follows_the_honest_history(hub: Hub, tmp_path: Path) -> None:
    """A node that an older syncd let apply a re-encoded copy C' of C: the
    honest children of C are taken, recognised by their signed content."""
    node = node_at(hub, tmp_path, str(hub.server))
    genuine = hub.tip
    assert node.sync()[0] == 0
    store = node.state / "repo.git"
    forged = reencode_signature(store, genuine, "blank-line")
    state = json.loads((node.state / "state.json").read_text())
    state["last_applied"] = forged
    (node.state / "state.json").write_text(json.dumps(state))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    converge(node, hub)


# --- 2. an incomplete pack ------------------------------------------------------------------------


@pytest.mark.parametrize("omit", ["tree", "blobs", "parent"])
def test_incomplete_pack_is_not_kept_and_the_next_pass_converges(hub: Hub, tmp_path: Path, omit: str) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    frozen = Frozen(node)
    with hostile_git(hub.server, "incomplete", omit=omit) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 3, err
    assert "incomplete" in err or "missing" in err
    assert health(node)["last_error_reason"] == "fetch-failed"
    frozen.assert_unchanged()
    with hostile_git(hub.server, "honest") as url2:
        node.config.write_text(node.config.read_text().replace(url, url2))
        converge(node, hub)


def test_a_store_poisoned_by_an_older_syncd_is_repaired(hub: Hub, tmp_path: Path) -> None:
    """syncd-fetched names a commit whose tree is missing (what an older
    syncd recorded after an incomplete pack): one pass sets the store aside
    (exit 3, store-repaired), the next fetches afresh and converges; the
    rollback anchor survives."""
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    tip = hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    store = node.state / "repo.git"
    raw = subprocess.run(["git", "-C", str(hub.server), "cat-file", "commit", tip], capture_output=True, check=True)
    written = subprocess.run(
        ["git", "--git-dir", str(store), "hash-object", "-t", "commit", "-w", "--literally", "--stdin"],
        input=raw.stdout,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert written.strip() == tip
    (store / FETCHED_REF.decode()).write_text(tip + "\n")
    before = node.snapshot()
    code, _, err = node.sync()
    assert code == 3 and "set aside" in err, err
    assert health(node)["last_error_reason"] == "store-repaired"
    assert node.snapshot() == before
    converge(node, hub)
    # and the rollback guard still holds: an older signed tip is refused
    git(hub.work, "push", "-q", "--force", "origin", f"{tip}~1:main")
    assert node.sync()[0] == 1


def test_phantom_tip_is_refused_and_nothing_recorded(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    frozen = Frozen(node)
    with hostile_git(hub.server, "phantom") as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 3, err
    frozen.assert_unchanged()


def test_garbage_is_a_transient_failure(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    frozen = Frozen(node)
    with hostile_git(hub.server, "garbage") as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        code, _, err = node.sync()
    assert code == 3, err
    frozen.assert_unchanged()


# --- 3. deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stall", "stall_after_refs", "drip"])
def test_a_stalled_server_times_out_and_the_mirror_is_used(hub: Hub, tmp_path: Path, mode: str) -> None:
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    opts: dict[str, object] = {"interval": 0.5, "chunk": 4} if mode == "drip" else {}
    with hostile_git(hub.server, mode, **opts) as url:
        node = node_at(hub, tmp_path, url, repo__timeout=2)
        started = time.monotonic()
        code, _, err = node.sync()
        elapsed = time.monotonic() - started
        assert code == 3 and "within 2 s" in err, err
        assert health(node)["last_error_reason"] == "fetch-timeout"
        assert elapsed < 6, f"the deadline of 2 s took {elapsed:.1f} s"
        # the same server first, then an honest mirror: one pass converges
        mirrored = node_at(hub, tmp_path, url, name="mirrored", repo__timeout=2, repo__mirrors=[str(hub.server)])
        converge(mirrored, hub)
        # the lock was released: another pass runs at once
        assert node.sync()[0] == 3


# --- 5. work before trust ----------------------------------------------------------------------------


def test_a_flood_is_cut_at_max_fetch_bytes(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    frozen = Frozen(node)
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40))
    with hostile_git(hub.server, "flood", size=64 << 20) as url:
        node.config.write_text(node.config.read_text().replace(str(hub.server), url))
        node.config.write_text(node.config.read_text().replace("repo:\n", "repo:\n  max_fetch_bytes: 1048576\n"))
        code, _, err = node.sync()
    assert code == 3 and "more than 1048576 bytes" in err, err
    assert health(node)["last_error_reason"] == "fetch-too-large"
    frozen.assert_unchanged()


def test_an_unsigned_commit_with_a_huge_blob_is_refused_cheaply(hub: Hub, tmp_path: Path) -> None:
    """A blob that inflates past max_fetch_bytes is refused from its header,
    before the pack is indexed or anything is verified."""
    node = node_at(hub, tmp_path, str(hub.server), repo__max_fetch_bytes=4 << 20)
    assert node.sync()[0] == 0
    frozen = Frozen(node)
    with (hub.work / "junk").open("wb") as fh:
        fh.truncate(64 << 20)  # 64 MiB of zeros: a pack of about 64 KiB
    hub.change("junk", lambda w: None, key=None)
    code, _, err = node.sync()
    assert code == 3 and "over the limit" in err, err
    assert health(node)["last_error_reason"] == "fetch-too-large"
    frozen.assert_unchanged()


# --- 7. a retired key signing "in the past" ----------------------------------------------------------


def test_backdated_commit_is_refused(hub: Hub, tmp_path: Path) -> None:
    from tests.gitutil import allowed_signers, make_key, verify_with_git

    retired = make_key(tmp_path / "keys", "retired")
    signers = allowed_signers(
        tmp_path / "keys" / "allowed_signers", (hub.admin, ""), (retired, 'valid-before="20200101"')
    )
    node = node_at(hub, tmp_path, str(hub.server))
    assert node.sync()[0] == 0
    frozen = Frozen(node, fetched_may_move=True)
    sha = hub.change(
        "steal a subnet", add_host("alpha", "2002:102:304:10::/64", 40), key=retired, date="2019-06-01T00:00:00Z"
    )
    assert verify_with_git(hub.work, sha, signers), "git itself accepts the backdated commit"
    code, _, err = node.sync()
    assert code == 1 and "backdated" in err and sha[:12] in err, err
    assert health(node)["last_error_reason"] == "backdated"
    frozen.assert_unchanged()
    # the admins drop it; the node takes the next honest commit
    git(hub.work, "reset", "-q", "--hard", "HEAD~1")
    hub.change("add bravo", add_host("bravo", "2002:102:304:11::/64", 41))
    converge(node, hub)


def test_clock_skew_within_the_bound_is_accepted(hub: Hub, tmp_path: Path) -> None:
    node = node_at(hub, tmp_path, str(hub.server), trust__max_clock_skew="1h")
    assert node.sync()[0] == 0
    applied = json.loads((node.state / "state.json").read_text())["commit_time"]
    half_hour_earlier = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(applied - 1800))
    hub.change("add alpha", add_host("alpha", "2002:102:304:10::/64", 40), date=half_hour_earlier)
    converge(node, hub)


def test_a_stalled_http_server_times_out(hub: Hub, tmp_path: Path) -> None:
    from tests.hostile import stalling_http

    with stalling_http() as url:
        node = node_at(hub, tmp_path, url, repo__timeout=2, repo__mirrors=[str(hub.server)])
        started = time.monotonic()
        converge(node, hub)  # the stalled URL costs its deadline, then the mirror answers
        assert time.monotonic() - started < 8
        assert url.connections, "the stalled server was asked first"


def test_a_stalled_ssh_server_times_out_and_its_ssh_is_killed(hub: Hub, tmp_path: Path) -> None:
    from tests.hostile import stalled_ssh_pids, stalling_ssh_command

    command = stalling_ssh_command(tmp_path / "ssh")
    node = node_at(hub, tmp_path, "ssh://git@127.0.0.1/srv/hosts.git", repo__timeout=2, repo__ssh_command=command)
    started = time.monotonic()
    code, _, err = node.sync()
    assert code == 3 and "within 2 s" in err, err
    assert time.monotonic() - started < 6
    pids = stalled_ssh_pids(tmp_path / "ssh")
    assert pids
    deadline = time.monotonic() + 5

    def alive() -> list[int]:
        return [pid for pid in pids if _proc_state(pid) not in ("gone", "Z")]

    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    assert not alive(), f"the stand-in ssh is still running: {alive()}"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# --- 8. a freeze: a mirror serving an old signed tip ----------------------------------------------


def test_an_old_tip_makes_the_node_stale(hub: Hub, tmp_path: Path) -> None:
    """trust.max_age: a tip signed 30 days ago is applied, but sync, the log
    and status all say the node is stale; a signed heartbeat cures it."""
    from tests.test_status import status

    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
    hub.change("a month ago", lambda w: None, date=old)
    node = node_at(hub, tmp_path, str(hub.server), trust__max_age="14d")
    code, _, err = node.sync()
    assert code == 0 and "stale" in err and "heartbeat" in err, err
    assert "stale" in status(node, code=1)
    code, _, log = node.sync("--log")
    assert code == 0 and '"event":"sync.stale"' in log.replace(" ", ""), log
    hub.change("heartbeat", lambda w: None)  # git commit --allow-empty -S -m heartbeat
    code, _, err = node.sync()
    assert code == 0 and "stale" not in err, err
    status(node, code=0)
