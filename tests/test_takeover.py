"""No one the rules admit can take the network over, freeze it, or lock its
admins out (docs/trust.md): each way a participant could, refused at a real
git server running ``syncd verify --pre-receive`` as its hook AND on a node,
with the same message; the node's files, ``state.json`` and store as they
were; and the next honest commit accepted at both.

A refused push never reaches the server, so the node is shown each attack
by pushing it with the hook switched off (a server without the hook, or
one that took the push before it had it)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.cli.main import main
from syncd.cli.verify import in_server_words
from tests.conftest import ROOT
from tests.gitutil import allowed_signers, commit, git, merge
from tests.syncenv import (
    Edit,
    Hub,
    Keys,
    Node,
    accepted,
    add_owner,
    admins,
    append,
    both,
    health,
    last_applied,
    make_keys,
    new_host,
    owner_line,
    refused,
    replace_in,
    roles,
    set_join,
    synced_node,
    write,
)
from tests.test_faults import Frozen

NEWBIE = "2002:102:304:7::/64"  # free, inside the example network's prefixes
OTHER = "2002:102:304:8::/64"
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\+00:00| UTC)")


class Server:
    """The hub's bare repository, with ``syncd verify --pre-receive`` as its
    hook (no ``--branch``: the repository's HEAD is the branch nodes follow)."""

    def __init__(self, hub: Hub, signers: Path) -> None:
        self.hub = hub
        self.hook = hub.server / "hooks" / "pre-receive"
        self.hook.write_text(
            "#!/bin/sh\n"
            f"export PYTHONPATH={shlex.quote(str(ROOT))}\n"
            f"exec {shlex.quote(sys.executable)} -m syncd verify --pre-receive "
            f"--allowed-signers {shlex.quote(str(signers))}\n"
        )
        self.hook.chmod(0o755)

    @property
    def tip(self) -> str:
        return git(self.hub.server, "rev-parse", "main")

    def push(self, *refspec: str, force: bool = False) -> subprocess.CompletedProcess[str]:
        args = ["git", "-C", str(self.hub.work), "push", *(["--force"] if force else []), "origin"]
        return subprocess.run(
            [*args, *(refspec or ("HEAD:main",))],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
        )

    def refuses(self, reason: str, *refspec: str) -> str:
        """The push is rejected by the hook with ``reason``; the server's
        branch did not move.  Returns the hook's message."""
        before = self.tip
        result = self.push(*refspec)
        assert result.returncode != 0 and "pre-receive hook declined" in result.stderr, result.stderr
        lines = result.stderr.splitlines()
        said = [line.removeprefix("remote: ").rstrip() for line in lines if "syncd verify:" in line]
        assert len(said) == 1 and f": refused ({reason}): " in said[0], result.stderr
        assert self.tip == before
        return said[0].split(f": refused ({reason}): ", 1)[1]

    def accepts(self) -> None:
        result = self.push()
        assert result.returncode == 0, result.stderr
        assert self.tip == git(self.hub.work, "rev-parse", "HEAD")

    @contextlib.contextmanager
    def without_hook(self) -> Iterator[None]:
        off = self.hook.with_name("pre-receive.off")
        self.hook.rename(off)
        try:
            yield
        finally:
            off.rename(self.hook)

    def force(self, sha: str | None = None) -> None:
        """Make the server's main ``sha`` (default: the clone's HEAD) without the hook."""
        with self.without_hook():
            result = self.push(f"{sha or 'HEAD'}:refs/heads/main", force=True)
        assert result.returncode == 0, result.stderr


def same(hook: str, node: Node) -> None:
    """The hook and the node word the refusal the same way (up to the clock,
    and in a server's words: it installs nothing), the hook's first line."""
    message = health(node)["last_error"]
    assert isinstance(message, str)
    served = in_server_words(message).split("\n")[0]
    assert STAMP.sub("<time>", hook) == STAMP.sub("<time>", served), (hook, message)


def refused_everywhere(server: Server, node: Node, reason: str) -> str:
    """The attack (the clone's HEAD) is refused by the hook, then, pushed past
    it, by the node: files, state.json and the store's applied commit as they
    were.  Returns the message."""
    message = server.refuses(reason)
    server.force()
    frozen = Frozen(node, fetched_may_move=True)
    refused(node, reason)
    frozen.assert_unchanged()
    same(message, node)
    return message


def honest_next(hub: Hub, server: Server, node: Node, start: str) -> str:
    """The admins drop the attack; their next commit lands at the hook and on the node."""
    git(hub.work, "checkout", "-q", "main")
    git(hub.work, "reset", "-q", "--hard", start)
    server.force(start)
    sha = hub.change("gateway: a note", append("gateway", f"# note {time.time()}\n"), push=False)
    server.accepts()
    accepted(node)
    assert last_applied(node) == sha
    return sha


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def hub(tmp_path: Path, keys: Keys) -> Hub:
    """alice owns my_pc, bob my_laptop; admin and admin2 are the repository's admins."""
    hub = Hub(tmp_path / "hub", keys.admin)
    owners = both(add_owner("my_pc", keys.alice), add_owner("my_laptop", keys.bob), admins(keys.admin, keys.admin2))
    hub.change("owners, and admin2 is an admin", owners)
    return hub


@pytest.fixture
def server(hub: Hub, keys: Keys) -> Server:
    return Server(hub, keys.local)


@pytest.fixture
def node(hub: Hub, tmp_path: Path, keys: Keys) -> Node:
    return synced_node(hub, tmp_path / "node", keys.local)


def checkout(hub: Hub, branch: str, at: str) -> None:
    git(hub.work, "checkout", "-q", "-B", branch, at)


# --- 1. a removed admin is an admin again, through a merge ----------------------------------


def remove_admin2(hub: Hub, server: Server, node: Node, keys: Keys) -> str:
    hub.change("admin2 leaves", admins(keys.admin), push=False)
    server.accepts()
    accepted(node)
    return hub.tip


@pytest.mark.parametrize("readds", [True, False], ids=["merge-re-adds-it", "plain-merge"])
def test_a_removed_admin_merging_its_old_fork_first_is_refused(
    hub: Hub, server: Server, node: Node, keys: Keys, readds: bool
) -> None:
    removal = remove_admin2(hub, server, node, keys)
    checkout(hub, "fork", f"{removal}~1")  # admin2 was an admin there
    hub.change("admin2 adds evil", new_host("evil", NEWBIE, 51), key=keys.admin2, push=False)
    args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys.admin2.private}"]
    git(hub.work, *args, "merge", "-q", "--no-ff", "--no-commit", "main")
    if readds:
        admins(keys.admin, keys.admin2)(hub.work)
    sha = commit(hub.work, "admin2 merges main into its fork", keys.admin2)
    assert git(hub.work, "rev-parse", "HEAD^2") == removal  # main is the second parent
    message = refused_everywhere(server, node, "signature")
    assert message.startswith(f"commit {sha[:12]} ('admin2 merges main into its fork'): signed by admin2@example.org (")
    assert "a merge: only an admin of every parent may make it, and this is its parent 2" in message
    honest_next(hub, server, node, removal)


def test_a_removed_admins_octopus_is_refused(hub: Hub, server: Server, node: Node, keys: Keys) -> None:
    removal = remove_admin2(hub, server, node, keys)
    checkout(hub, "one", f"{removal}~1")
    hub.change("admin2 adds evil", new_host("evil", NEWBIE, 51), key=keys.admin2, push=False)
    checkout(hub, "two", f"{removal}~1")
    hub.change("admin2 adds evil2", new_host("evil2", OTHER, 52), key=keys.admin2, push=False)
    checkout(hub, "octopus", "one")
    args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys.admin2.private}"]
    git(hub.work, *args, "merge", "-q", "--no-ff", "-S", "-m", "admin2's octopus", "two", "main")
    assert git(hub.work, "rev-parse", "HEAD^3") == removal
    message = refused_everywhere(server, node, "signature")
    assert "a merge: only an admin of every parent may make it, and this is its parent 3" in message
    honest_next(hub, server, node, removal)


def test_an_owner_removed_from_its_file_merging_an_old_fork_is_refused(
    hub: Hub, server: Server, node: Node, keys: Keys
) -> None:
    removal = hub.change("my_pc: alice owns it no more", replace_in("my_pc", owner_line(keys.alice), ""), push=False)
    server.accepts()
    accepted(node)
    checkout(hub, "fork", f"{removal}~1")  # alice owned my_pc there
    top = "# A home PC behind NAT; it connects to the gateway.\n"
    hub.change("alice's address", replace_in("my_pc", top, f"{top}Address = 192.0.2.7\n"), key=keys.alice, push=False)
    sha = merge(hub.work, "main", "alice merges main into her fork", keys.alice)
    message = refused_everywhere(server, node, "unauthorized")
    assert message.startswith(f"commit {sha[:12]} ('alice merges main into her fork'): signed by alice@home-pc")
    assert "owner of my_pc: a merge: only an admin may make it" in message
    honest_next(hub, server, node, removal)


def test_an_honest_admin_merging_a_removed_admins_fork_is_accepted(
    hub: Hub, server: Server, node: Node, keys: Keys
) -> None:
    """The honest admin is an admin at every parent: the merge is its act
    (it reviewed the fork), the fork's commit is judged at its own parent,
    where admin2 was an admin.  admin2 stays removed: its next commit is refused."""
    removal = remove_admin2(hub, server, node, keys)
    checkout(hub, "fork", f"{removal}~1")
    fork = hub.change("admin2 adds newbie", new_host("newbie", NEWBIE, 51), key=keys.admin2, push=False)
    git(hub.work, "checkout", "-q", "main")
    merged = merge(hub.work, "fork", "admin merges admin2's fork", keys.admin)
    server.accepts()
    accepted(node)
    assert roles(node, 2) == [(merged, "admin@example.org", "admin"), (fork, "admin2@example.org", "admin")]
    assert (node.hosts / "newbie").exists()
    sha = hub.change("admin2 is back?", append("gateway", "# admin2\n"), key=keys.admin2, push=False)
    message = refused_everywhere(server, node, "signature")
    assert message.startswith(f"commit {sha[:12]} ('admin2 is back?'): signed by unknown key (")
    honest_next(hub, server, node, merged)


# --- 2. a date far ahead freezes every later commit ---------------------------------------


def future(days: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * 86400))


@pytest.mark.parametrize("who", ["newcomer", "owner", "admin"])
def test_a_future_dated_commit_is_refused(hub: Hub, server: Server, node: Node, keys: Keys, who: str) -> None:
    hub.change("join: open", set_join("open"), push=False)
    server.accepts()
    start = hub.tip
    accepted(node)
    edit = {
        "newcomer": (new_host("newbie", NEWBIE, 51, keys.carol), keys.carol),
        "owner": (append("my_pc", "Address = 192.0.2.7\n"), keys.alice),
        "admin": (append("gateway", "# a mistyped clock\n"), keys.admin),
    }[who]
    sha = hub.change(f"{who} from 2099", edit[0], key=edit[1], push=False, date="2099-01-01T00:00:00Z")
    message = refused_everywhere(server, node, "future-dated")
    assert message.startswith(f"commit {sha[:12]} ('{who} from 2099') is dated 2099-01-01T00:00:00+00:00, more ")
    assert "than 1h after the clock here (" in message
    honest_next(hub, server, node, start)


def test_a_range_and_commit_by_commit_agree_on_dates(hub: Hub, server: Server, node: Node, keys: Keys) -> None:
    """Commit A dated 50 minutes ahead (within the skew), then B 80 minutes
    before A: a node that applied A refuses B, and so does `syncd verify`
    over both at once, and the hook."""
    start = hub.tip
    ahead = hub.change("A", append("gateway", "# A\n"), push=False, date=future(50 / 1440))
    behind = hub.change("B", append("gateway", "# B\n"), push=False, date=future(-30 / 1440))
    assert verify(hub, keys.local, start, ahead)[0] == 0
    code, err = verify(hub, keys.local, start, behind)
    assert code == 1 and "refused (backdated)" in err and f"commit {behind[:12]} ('B')" in err, err
    server.force(ahead)
    accepted(node)  # the node applies A alone first
    message = server.refuses("backdated", f"{behind}:refs/heads/main")
    server.force(behind)
    frozen = Frozen(node, fetched_may_move=True)
    refused(node, "backdated")
    frozen.assert_unchanged()
    same(message, node)
    assert f"more than 1h before its parent {ahead[:12]}" in message
    honest_next(hub, server, node, ahead)


def verify(hub: Hub, signers: Path, old: str, new: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["verify", "--repo", str(hub.work), "--allowed-signers", str(signers), old, new], out, err)
    return code, err.getvalue()


def test_a_node_that_applied_a_future_dated_commit_recovers(
    hub: Hub, server: Server, keys: Keys, tmp_path: Path
) -> None:
    """An older syncd (here: a node and a server that allowed a month of
    skew) took a commit dated a month ahead.  With the bound back at an
    hour, the next honest commit is taken at once, at the hook and on the
    node: the old commit counts as dated when it was applied."""
    node = synced_node(hub, tmp_path / "lenient", keys.local, trust__max_clock_skew="60d")
    ahead = hub.change("a month ahead", append("gateway", "# ahead\n"), push=False, date=future(30))
    server.force()
    accepted(node)
    config = yaml.safe_load(node.config.read_text())
    config["trust"]["max_clock_skew"] = "1h"
    node.config.write_text(yaml.safe_dump(config))
    sha = hub.change("the next honest commit", append("gateway", "# now\n"), push=False)
    server.accepts()
    out = accepted(node)
    assert last_applied(node) == sha and "1 new commit" in out, out
    assert git(hub.server, "rev-parse", "main^") == ahead


# --- 3. an admin list whose only key is not valid now -------------------------------------


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ('valid-before="20250101Z"', "expired at 2025-01-01 00:00:00 UTC (valid-before)"),
        ('valid-after="20990101Z"', "is not valid before 2099-01-01 00:00:00 UTC (valid-after)"),
        ('namespaces="file"', 'may not sign commits (namespaces="file")'),
    ],
)
def test_an_admin_list_with_no_key_valid_now_is_refused(
    hub: Hub, server: Server, node: Node, keys: Keys, options: str, why: str
) -> None:
    start = hub.tip
    sha = hub.change("the admin list", admins_with(keys, options), push=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(hub.work)], out, err) == 1
    assert "allowed_signers:1: error[admins-invalid]: " in out.getvalue(), out.getvalue()
    message = refused_everywhere(server, node, "invalid-content")
    if "namespaces" in options:  # no line may sign commits at all: the file is refused as it reads
        assert "it lists no admin who may sign commits" in message
    else:
        assert message.startswith(f"commit {sha[:12]} ('the admin list'): after it no admin key is valid now (")
        assert f"its allowed_signers line 1 (admin@example.org) {why}" in message
    honest_next(hub, server, node, start)


def test_an_admin_list_expiring_soon_is_a_warning(hub: Hub, server: Server, node: Node, keys: Keys) -> None:
    soon = time.strftime("%Y%m%d", time.gmtime(time.time() + 10 * 86400))
    hub.change("the admin key expires", admins_with(keys, f'valid-before="{soon}Z"'), push=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(hub.work)], out, err) == 0
    assert (
        f"allowed_signers:1: warning[admins-expiring]: the last valid admin key expires at {soon[:4]}-"
        in out.getvalue()
    )
    server.accepts()
    accepted(node)
    doc = status(node, 0)
    [warning] = doc["warnings"]
    assert (
        warning.startswith("the last admin key valid at the applied commit expires in 9d")
        or "expires in 10d" in warning
    )
    assert f"({soon[:4]}-{soon[4:6]}-{soon[6:]}T00:00:00+00:00)" in warning


def admins_with(keys: Keys, options: str) -> Edit:
    return lambda w: allowed_signers(w / "allowed_signers", (keys.admin, options))


# --- 4. what the hook accepts, every node can fetch -----------------------------------------


def test_a_blob_over_max_blob_bytes_is_refused(hub: Hub, server: Server, node: Node) -> None:
    start = hub.tip
    sha = hub.change("a big file", write("big.bin", "x" * (3 << 20)), push=False)
    message = refused_everywhere(server, node, "unsafe-tree")  # the hook's words: a server installs nothing
    assert (
        message
        == f"commit {sha[:12]} ('a big file'): big.bin is 3145728 bytes, over the policy's max_blob_bytes (1MiB)"
    )
    assert health(node)["last_error"] == f"{message}; nothing was installed"
    honest_next(hub, server, node, start)


def test_a_node_that_cannot_fetch_what_the_policy_allows_says_so(
    hub: Hub, server: Server, keys: Keys, tmp_path: Path
) -> None:
    small = synced_node(hub, tmp_path / "small", keys.local, repo__max_fetch_bytes="2MiB")
    large = synced_node(hub, tmp_path / "large", keys.local)
    raised = hub.change("max_blob_bytes: 4MiB", append_policy("max_blob_bytes: 4MiB\n"), push=False)
    server.accepts()
    accepted(small)
    accepted(large)
    problem = (
        "repo.max_fetch_bytes (2MiB) is lower than the repository needs: its policy lets a commit carry a blob "
        "of up to 4MiB (max_blob_bytes)"
    )
    assert problem in status(small, 1)["problems"][0]
    assert status(large, 0)["problems"] == []
    hub.change("a big file", write("big.bin", os.urandom(3 << 20).hex()[: 3 << 20]), push=False)
    server.accepts()  # within the policy
    accepted(large)
    frozen = Frozen(small)
    code, _, err = small.sync()
    assert code == 3 and health(small)["last_error_reason"] == "fetch-too-large", err
    frozen.assert_unchanged()
    assert any(problem in p for p in status(small, 1)["problems"])
    assert last_applied(small) == raised


def append_policy(text: str) -> Edit:
    def edit(work: Path) -> None:
        (work / "syncd.yaml").write_text((work / "syncd.yaml").read_text() + text)

    return edit


def status(node: Node, code: int) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "-c", str(node.config), "--format", "json"], out, err) == code, out.getvalue()
    doc = json.loads(out.getvalue())
    assert isinstance(doc, dict)
    return doc


# --- 5. the branch nodes follow is neither deleted nor rewound ----------------------------


def test_the_followed_branch_cannot_be_deleted_or_rewound(hub: Hub, server: Server, node: Node) -> None:
    git(hub.server, "config", "receive.denyDeleteCurrent", "false")
    start = hub.tip
    message = server.refuses("unauthorized", ":main")
    assert message == "refs/heads/main: deleting the branch the nodes follow: every node would fail until it is back"
    git(hub.work, "push", "-q", "origin", "HEAD:topic")
    assert server.push(":topic").returncode == 0  # any other branch may go
    git(hub.work, "reset", "-q", "--hard", "HEAD~1")
    result = server.push(force=True)
    assert result.returncode != 0 and "refused (non-fast-forward)" in result.stderr, result.stderr
    assert server.tip == start
    # deleted past the hook, the node fails (exit 2: no URL has the branch) and keeps everything
    with server.without_hook():
        assert server.push(":main").returncode == 0
    frozen = Frozen(node)
    code, _, err = node.sync()
    assert code == 2 and "no repository URL has the branch main" in err, err
    frozen.assert_unchanged()
    honest_next(hub, server, node, start)


# --- 6. the node's own key changed in the repository before the node has it -----------------


def test_an_own_key_mismatch_holds_back_only_the_own_file(hub: Hub, server: Server, node: Node, keys: Keys) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.keyfactory import rsa_pem, rsa_private

    def private(seed: int) -> bytes:
        key = rsa_private(2048, seed)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    def own_key(seed: int) -> Edit:
        return write("hosts/my_pc", f"Subnet = 2002:102:304:4::/64\n{owner_line(keys.alice)}{rsa_pem(2048, seed)}")

    (node.hosts.parent / "rsa_key.priv").write_bytes(private(61))
    hub.change("my_pc: its real key", own_key(61), key=keys.alice, push=False)
    server.accepts()
    accepted(node)
    installed = (node.hosts / "my_pc").stat()
    hub.change("my_pc: a new key, before the node has it", own_key(62), key=keys.alice, push=False)
    server.accepts()  # nothing wrong with it for the server
    tip = hub.change("bob's address", append("my_laptop", "Address = 192.0.2.8\n"), key=keys.bob, push=False)
    server.accepts()
    code, out, err = node.sync()
    assert code == 0 and "1 updated" in out and "own-key-mismatch" in err, (out, err)
    assert last_applied(node) == tip
    assert (node.hosts / "my_laptop").read_bytes() == hub.host("my_laptop").read_bytes()
    assert (node.hosts / "my_pc").stat().st_mtime_ns == installed.st_mtime_ns
    doc = status(node, 1)
    [problem] = doc["problems"]
    assert problem.startswith(f"own host file held back [own-key-mismatch]: hosts/my_pc in commit {tip[:12]} ")
    assert "carries an RSA key of 2048 bits (SHA256 of modulus/exponent " in problem
    assert "but this node holds an RSA key of 2048 bits" in problem and "rsa_key.priv" in problem
    # the operator installs the new private key: the next pass installs my_pc
    (node.hosts.parent / "rsa_key.priv").write_bytes(private(62))
    code, out, err = node.sync()
    assert code == 0 and "1 updated" in out and "own-key-mismatch" not in err, (out, err)
    assert (node.hosts / "my_pc").read_bytes() == hub.host("my_pc").read_bytes()
    assert status(node, 0)["problems"] == []
    honest_next(hub, server, node, tip)


# --- 7. an owner line hiding a second key ------------------------------------------------


def test_an_owner_line_hiding_a_second_key_is_refused(hub: Hub, server: Server, node: Node, keys: Keys) -> None:
    start = hub.tip
    two = f"# syncd-owner: {keys.carol.public_line()} own1 {keys.dave.public_line()} own2\n"
    sha = hub.change("carol and dave own my_laptop", append("my_laptop", two), push=False)
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(hub.work)], out, err) == 1
    assert "error[owner-invalid]: one key per owner line (its comment holds another key)" in out.getvalue()
    message = refused_everywhere(server, node, "invalid-content")  # the summary line; one finding a line follows
    assert message == f"commit {sha[:12]} has invalid content [owner-invalid]: 1 error"
    details = str(health(node)["last_error"]).split("\n")[1:]
    assert len(details) == 1 and details[0].startswith("hosts/my_laptop:"), details
    assert "error[owner-invalid]: one key per owner line" in details[0], details
    honest_next(hub, server, node, start)
