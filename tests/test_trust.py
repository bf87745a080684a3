"""Repository-held trust end to end (DESIGN.md §6a): each authority rule and
its refusal, on real SSH-signed commits pushed to a bare server and synced by
``syncd sync``.  A refusal exits 1 with its reason in ``health.json``, names
the commit, the signer (principal or owner comment, key fingerprint), its role
and the first path outside it, and leaves the hosts files and ``state.json``
byte-for-byte as they were; ``syncd log --format json`` has every accepted
commit with the role it was accepted in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitutil import fingerprint_of, git, merge
from tests.syncenv import (
    COMMENTS,
    Edit,
    Hub,
    Keys,
    Node,
    accepted,
    add_owner,
    admins,
    append,
    both,
    files_of,
    last_applied,
    logged,
    make_keys,
    make_node,
    names,
    new_host,
    no_role,
    owner_line,
    refused,
    rekey,
    replace_in,
    roles,
    set_join,
    state_bytes,
    synced_node,
    write,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def hub(tmp_path: Path, keys: Keys) -> Hub:
    """The example network with owner lines: alice owns my_pc, bob my_laptop
    (added by the admin); gateway has none."""
    hub = Hub(tmp_path / "hub", keys.admin)
    hub.change("owners for my_pc and my_laptop", both(add_owner("my_pc", keys.alice), add_owner("my_laptop", keys.bob)))
    return hub


@pytest.fixture
def node(hub: Hub, tmp_path: Path, keys: Keys) -> Node:
    """my_pc, in sync with the hub."""
    return synced_node(hub, tmp_path / "node", keys.local)


# --- rule 2: an owner edits its own host file ----------------------------------------


def test_owner_edits_its_own_file(hub: Hub, node: Node, keys: Keys) -> None:
    sha = hub.change("my_pc: a fixed address", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice)
    accepted(node)
    assert (node.hosts / "my_pc").read_bytes() == hub.host("my_pc").read_bytes()
    assert roles(node, 1) == [(sha, COMMENTS["alice"], "owner:my_pc")]
    assert logged(node)[0]["key"] == fingerprint_of(keys.alice)
    assert logged(node)[0]["files"] == ["hosts/my_pc"]


@pytest.mark.parametrize(
    ("path", "edit"),
    [
        ("hosts/my_laptop", append("my_laptop", "Address = 192.0.2.8\n")),
        ("hosts/gateway", append("gateway", "# mine now\n")),
        ("syncd.yaml", lambda w: (w / "syncd.yaml").write_text((w / "syncd.yaml").read_text() + "join: open\n")),
        ("allowed_signers", write("allowed_signers", "")),
        ("README.md", write("README.md", "# the network\n")),
        ("hosts/my_pc-up", write("hosts/my_pc-up", "#!/bin/sh\n")),  # tincd would run it as root
    ],
)
def test_owner_outside_its_own_file_is_unauthorized(hub: Hub, node: Node, keys: Keys, path: str, edit: Edit) -> None:
    sha = hub.change(f"alice edits {path}", both(append("my_pc", "Address = 192.0.2.7\n"), edit), key=keys.alice)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["alice"], keys.alice, "owner of my_pc", path)
    assert ": hosts/my_pc " not in err  # her own file is not the problem


def test_owner_empty_commit_is_unauthorized(hub: Hub, node: Node, keys: Keys) -> None:
    sha = hub.change("alice: nothing", lambda w: None, key=keys.alice)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["alice"], keys.alice, "owner of my_pc", None)
    assert "an empty commit: only an admin may make it" in err


def test_owner_mistyping_its_owner_line_is_invalid_content(hub: Hub, node: Node, keys: Keys) -> None:
    """Authorized (her own file), but the near miss would make no one an
    owner: the content check refuses it, so she keeps her file."""
    sha = hub.change("my_pc: a typo", replace_in("my_pc", "# syncd-owner:", "#syncd-owner:"), key=keys.alice)
    err = refused(node, "invalid-content")
    assert f"commit {sha[:12]} has invalid content [owner-invalid]" in err, err


def test_owner_merge_is_unauthorized_and_an_admin_merge_is_accepted(hub: Hub, node: Node, keys: Keys) -> None:
    start = hub.tip
    git(hub.work, "checkout", "-q", "-b", "side")
    own = hub.change("my_pc: a fixed address", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice, push=False)
    git(hub.work, "checkout", "-q", "main")
    other = hub.change("gateway: a note", append("gateway", "# note\n"), push=False)
    sha = merge(hub.work, "side", "alice merges her branch", keys.alice)
    git(hub.work, "push", "-q", "--force", "origin", "HEAD:main")
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["alice"], keys.alice, "owner of my_pc", None)
    assert "a merge: only an admin may make it" in err

    hub.reset(other)
    git(hub.work, "branch", "-q", "-f", "side", own)
    sha = merge(hub.work, "side", "the admin merges alice's branch", keys.admin)
    git(hub.work, "push", "-q", "--force", "origin", "HEAD:main")
    accepted(node)
    assert {r for _, _, r in roles(node, 3)} == {"admin", "owner:my_pc"}
    assert roles(node, 3)[0] == (sha, "admin@example.org", "admin")
    assert git(hub.work, "merge-base", sha, start) == start


# --- rule 2: rotation and removal -------------------------------------------------------


def test_owner_key_rotation(hub: Hub, node: Node, keys: Keys) -> None:
    rotate = rekey("my_pc", keys.alice, keys.alice2, "alice@new-key")
    rotated = hub.change("my_pc: alice's new key", rotate, key=keys.alice)
    accepted(node)
    assert roles(node, 1) == [(rotated, COMMENTS["alice"], "owner:my_pc")]
    assert owner_line(keys.alice2, "alice@new-key") in (node.hosts / "my_pc").read_text()

    # the old key owns nothing any more: no role at all
    sha = hub.change("my_pc: with the old key", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice)
    err = refused(node, "signature")
    no_role(err, sha, keys.alice)

    hub.reset(rotated)
    sha = hub.change("my_pc: with the new key", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice2)
    accepted(node)
    assert roles(node, 1) == [(sha, "alice@new-key", "owner:my_pc")]


def test_owner_removes_its_own_file(hub: Hub, node: Node, keys: Keys) -> None:
    assert (node.hosts / "my_laptop").exists()
    sha = hub.change("my_laptop retires", lambda w: (w / "hosts" / "my_laptop").unlink(), key=keys.bob)
    assert "1 removed" in accepted(node)
    assert not (node.hosts / "my_laptop").exists()
    assert roles(node, 1) == [(sha, COMMENTS["bob"], "owner:my_laptop")]
    assert logged(node)[0]["files"] == ["hosts/my_laptop"]


# --- rule 3: joining --------------------------------------------------------------------


NEWBIE = "2002:102:304:7::/64"  # free, inside the policy's prefixes


@pytest.mark.parametrize("mode", [None, "admins"])
def test_join_admins_refuses_a_self_signed_newcomer(hub: Hub, node: Node, keys: Keys, mode: str | None) -> None:
    if mode is not None:
        hub.change(f"join: {mode}", set_join(mode))
        accepted(node)
    sha = hub.change("carol joins", new_host("newbie", NEWBIE, 31, keys.carol), key=keys.carol)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["carol"], keys.carol, "no role but owner of a host file this commit adds", "hosts/newbie")
    assert "the policy's join is admins, so only an admin may add one" in err
    # an owner may not invite either
    hub.reset(hub.tip + "~1")
    sha = hub.change("alice invites carol", new_host("newbie", NEWBIE, 31, keys.carol), key=keys.alice)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["alice"], keys.alice, "owner of my_pc", "hosts/newbie")


def test_join_members_lets_an_owner_invite(hub: Hub, node: Node, keys: Keys) -> None:
    hub.change("join: members", set_join("members"))
    accepted(node)
    invited = hub.change("alice invites carol", new_host("newbie", NEWBIE, 31, keys.carol), key=keys.alice)
    accepted(node)
    assert (node.hosts / "newbie").read_bytes() == hub.host("newbie").read_bytes()
    assert roles(node, 1) == [(invited, COMMENTS["alice"], "join:newbie")]
    # the newcomer owns its file from then on
    sha = hub.change("newbie: an address", append("newbie", "Address = 192.0.2.9\n"), key=keys.carol)
    accepted(node)
    assert roles(node, 1) == [(sha, COMMENTS["carol"], "owner:newbie")]


def test_join_members_refuses_a_self_signed_stranger(hub: Hub, node: Node, keys: Keys) -> None:
    hub.change("join: members", set_join("members"))
    accepted(node)
    sha = hub.change("dave joins", new_host("stranger", NEWBIE, 32, keys.dave), key=keys.dave)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["dave"], keys.dave, "no role but owner of a host file this commit adds", "hosts/stranger")
    assert "the policy's join is members, so only a key that owns a node may add one" in err


def test_join_open_lets_a_newcomer_add_itself(hub: Hub, node: Node, keys: Keys) -> None:
    hub.change("join: open", set_join("open"))
    accepted(node)
    sha = hub.change("carol joins", new_host("newbie", NEWBIE, 31, keys.carol), key=keys.carol)
    accepted(node)
    assert (node.hosts / "newbie").read_bytes() == hub.host("newbie").read_bytes()
    assert roles(node, 1) == [(sha, COMMENTS["carol"], "join:newbie")]
    assert logged(node)[0]["key"] == fingerprint_of(keys.carol)


def test_join_open_newcomer_may_not_sign_for_someone_else(hub: Hub, node: Node, keys: Keys) -> None:
    """Open join lets a key add a file it is an owner of; one naming only
    another key is an invitation, which a stranger cannot make."""
    hub.change("join: open", set_join("open"))
    accepted(node)
    sha = hub.change("dave adds carol", new_host("newbie", NEWBIE, 31, keys.carol), key=keys.dave)
    err = refused(node, "signature")
    no_role(err, sha, keys.dave)


def test_join_open_newcomer_claiming_an_existing_name_has_no_role(hub: Hub, node: Node, keys: Keys) -> None:
    """hosts/my_laptop exists: writing it is an edit, not an addition, and
    the newcomer owns nothing at the parent, so its key has no role at all
    (``signature``, not ``unauthorized``)."""
    hub.change("join: open", set_join("open"))
    accepted(node)
    sha = hub.change("carol takes my_laptop", new_host("my_laptop", NEWBIE, 31, keys.carol), key=keys.carol)
    err = refused(node, "signature")
    no_role(err, sha, keys.carol)
    assert "hosts/my_laptop is owned by bob@laptop" in err


def test_owner_rename_is_a_removal_and_an_invitation(hub: Hub, node: Node, keys: Keys) -> None:
    """Rules 2 and 3 combine: with ``join: members`` bob may rename his own
    node; with the default ``join: admins`` the new name is refused."""

    def rename(work: Path) -> None:
        (work / "hosts" / "my_laptop").rename(work / "hosts" / "laptop")

    start = hub.tip
    sha = hub.change("bob renames my_laptop", rename, key=keys.bob)
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["bob"], keys.bob, "owner of my_laptop", "hosts/laptop")

    hub.reset(start)
    hub.change("join: members", set_join("members"))
    sha = hub.change("bob renames my_laptop", rename, key=keys.bob)
    accepted(node)
    assert set(node.files()) == {"gateway", "laptop", "my_pc"}
    assert roles(node, 1) == [(sha, COMMENTS["bob"], "owner:my_laptop join:laptop")]


@pytest.mark.parametrize(
    ("name", "subnet", "key", "code"),
    [
        ("My_Laptop", NEWBIE, True, "name-collision"),  # my_laptop ignoring case
        ("newbie", "2002:102:304:4::/62", True, "subnet-overlap"),  # covers my_pc's /64
        ("newbie", "2002:102:304:5::/64", True, "subnet-overlap"),  # my_laptop's own
        ("newbie", "2001:db8::/64", True, "subnet-outside-prefix"),
        ("newbie", NEWBIE, False, "key-missing"),
    ],
)
def test_join_open_content_is_still_validated(
    hub: Hub, node: Node, keys: Keys, name: str, subnet: str, key: bool, code: str
) -> None:
    """The join itself is authorized (an addition carrying the signer's own
    owner line), so what stops it is the content: ``invalid-content``."""
    hub.change("join: open", set_join("open"))
    accepted(node)
    sha = hub.change(f"carol joins as {name}", new_host(name, subnet, 31, keys.carol, key=key), key=keys.carol)
    err = refused(node, "invalid-content")
    assert f"commit {sha[:12]} has invalid content [" in err and code in err, err


# --- admins held in the repository ------------------------------------------------------


def test_admin_rotation_through_the_repository(hub: Hub, node: Node, keys: Keys) -> None:
    rotation = hub.change("admins: admin2 takes over", admins(keys.admin2))
    accepted(node)
    assert roles(node, 1) == [(rotation, "admin@example.org", "admin")]

    sha = hub.change("admin2 adds newbie", new_host("newbie", NEWBIE, 31), key=keys.admin2)
    accepted(node)
    assert roles(node, 1) == [(sha, "admin2@example.org", "admin")]

    tip = sha
    sha = hub.change("the old admin adds one", new_host("late", "2002:102:304:8::/64", 32))
    err = refused(node, "signature")
    no_role(err, sha, keys.admin)
    assert "admin@example.org is an admin in this node's own allowed_signers, but not in the repository's" in err

    hub.reset(tip)
    sha = hub.change(
        "alice adds herself as admin",
        both(append("my_pc", "Address = 192.0.2.7\n"), admins(keys.admin2, keys.alice)),
        key=keys.alice,
    )
    err = refused(node, "unauthorized")
    names(err, sha, COMMENTS["alice"], keys.alice, "owner of my_pc", "allowed_signers")


def test_first_sync_follows_a_rotation_the_local_file_predates(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    """The local file lists only the first admin; the repository rotated to
    admin2 long ago: trust starts at the rotation, which the first admin
    signed, and admin2's commits after it are accepted."""
    rotation = hub.change("admins: admin2 takes over", admins(keys.admin2))
    added = hub.change("admin2 adds newbie", new_host("newbie", NEWBIE, 31), key=keys.admin2)
    tip = hub.change("admin2: a note", append("gateway", "# note\n"), key=keys.admin2)
    node = make_node(tmp_path / "fresh", str(hub.server), keys.local)
    accepted(node)
    assert node.files() == files_of(hub)
    assert last_applied(node) == tip
    log = logged(node)
    assert [e["commit"] for e in log] == [tip, added, rotation]
    assert [e["signer"] for e in log] == ["admin2@example.org", "admin2@example.org", "admin@example.org"]
    assert {e["role"] for e in log} == {"admin"}


def test_first_sync_refuses_a_rotated_out_admin_signing_a_new_tip(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    """The rotated-out admin signs a new tip: on a fresh node whose file
    lists only that admin, the tip is not a trust root (it has no role at
    its parent), the rotation is, and the tip is then refused."""
    hub.change("admins: admin2 takes over", admins(keys.admin2))
    hub.change("admin2 adds newbie", new_host("newbie", NEWBIE, 31), key=keys.admin2)
    sha = hub.change("the old admin's tip", new_host("evil", "2002:102:304:8::/64", 32))
    node = make_node(tmp_path / "fresh", str(hub.server), keys.local)
    err = refused(node, "signature")
    no_role(err, sha, keys.admin)
    assert node.snapshot() == {} and state_bytes(node) is None


def test_follow_repo_false_ignores_the_repositorys_admins(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    node = synced_node(hub, tmp_path / "pinned", keys.local, trust__follow_repo=False)
    rotation = hub.change("admins: admin2 takes over", admins(keys.admin2))
    accepted(node)  # signed by the node's own admin: an ordinary admin commit
    sha = hub.change("admin2 adds newbie", new_host("newbie", NEWBIE, 31), key=keys.admin2)
    err = refused(node, "signature")
    no_role(err, sha, keys.admin2)

    hub.reset(rotation)
    sha = hub.change("the node's admin adds newbie", new_host("newbie", NEWBIE, 31))
    accepted(node)
    assert roles(node, 1) == [(sha, "admin@example.org", "admin")]
    # a node that follows the repository refuses that very commit
    follower = make_node(tmp_path / "follower", str(hub.server), keys.local)
    err = refused(follower, "signature")
    no_role(err, sha, keys.admin)


@pytest.mark.parametrize(
    "text",
    [
        "admin@example.org ssh-ed25519 not-base64\n",
        "just-a-principal\n",
        'admin@example.org valid-after="yesterday" ssh-ed25519 AAAA\n',
        "# every admin removed: no admin commit could ever follow\n",
    ],
)
def test_a_root_allowed_signers_that_does_not_parse_is_invalid_content(hub: Hub, node: Node, text: str) -> None:
    sha = hub.change("a broken allowed_signers", write("allowed_signers", text))
    err = refused(node, "invalid-content")
    assert f"commit {sha[:12]}: its allowed_signers does not parse: " in err, err


# --- several commits in one pass: the roles carried from commit to commit --------------


def test_rotation_and_the_old_key_in_one_pass(hub: Hub, node: Node, keys: Keys) -> None:
    """The roles each commit is checked against come from its own parent,
    not from the last applied commit: the old key loses my_pc at once."""
    start = hub.tip
    rotate = rekey("my_pc", keys.alice, keys.alice2, "alice@new-key")
    hub.change("my_pc: alice's new key", rotate, key=keys.alice, push=False)
    sha = hub.change("my_pc: with the old key", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice)
    err = refused(node, "signature")
    no_role(err, sha, keys.alice)

    hub.reset(start)
    rotated = hub.change("my_pc: alice's new key", rotate, key=keys.alice, push=False)
    sha = hub.change("my_pc: with the new key", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice2)
    assert "2 new commits" in accepted(node)
    assert roles(node, 2) == [(sha, "alice@new-key", "owner:my_pc"), (rotated, COMMENTS["alice"], "owner:my_pc")]


def test_admin_rotation_and_both_admins_in_one_pass(hub: Hub, node: Node, keys: Keys) -> None:
    start = hub.tip
    hub.change("admins: admin2 takes over", admins(keys.admin2), push=False)
    sha = hub.change("the old admin, just after", append("gateway", "# note\n"))
    err = refused(node, "signature")
    no_role(err, sha, keys.admin)

    hub.reset(start)
    rotation = hub.change("admins: admin2 takes over", admins(keys.admin2), push=False)
    sha = hub.change("admin2, just after", append("gateway", "# note\n"), key=keys.admin2)
    accepted(node)
    assert roles(node, 2) == [(sha, "admin2@example.org", "admin"), (rotation, "admin@example.org", "admin")]


# --- trust.verify: tip ----------------------------------------------------------------


def test_verify_tip_accepts_only_an_admins_tip(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    node = synced_node(hub, tmp_path / "tip", keys.local, trust__verify="tip")
    start = hub.tip
    sha = hub.change("my_pc: a fixed address", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice)
    err = refused(node, "unauthorized")
    assert f"commit {sha[:12]} " in err and f"signed by {COMMENTS['alice']} ({fingerprint_of(keys.alice)})" in err
    assert "with trust.verify: tip only an admin's commit is accepted" in err

    hub.reset(start)
    hub.change("my_pc: a fixed address", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice, push=False)
    sha = hub.change("the admin signs the tip", append("gateway", "# note\n"))
    accepted(node)
    assert roles(node, 1) == [(sha, "admin@example.org", "admin")]


def test_first_sync_with_verify_tip_refuses_an_owner_signed_tip(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    """A fresh node with ``trust.verify: tip`` applies the same rule as one
    that synced before: only an admin's tip."""
    sha = hub.change("my_pc: a fixed address", append("my_pc", "Address = 192.0.2.7\n"), key=keys.alice)
    node = make_node(tmp_path / "fresh", str(hub.server), keys.local, trust__verify="tip")
    err = refused(node, "unauthorized")
    assert f"commit {sha[:12]} " in err and "with trust.verify: tip only an admin's commit is accepted" in err


def test_verify_tip_does_not_take_admins_from_an_unchecked_commit(hub: Hub, keys: Keys, tmp_path: Path) -> None:
    """With ``trust.verify: tip`` the commits under the tip are not checked,
    so anyone who can push may write them: an unsigned one naming a stranger
    in the root allowed_signers must not make the stranger's tip an admin's."""
    node = synced_node(hub, tmp_path / "tip", keys.local, trust__verify="tip")
    hub.change("unsigned: dave is an admin now", admins(keys.dave), key=None, push=False)
    sha = hub.change("dave adds evil", new_host("evil", NEWBIE, 32), key=keys.dave)
    err = refused(node, "signature")
    assert f"commit {sha[:12]} " in err and fingerprint_of(keys.dave) in err
    # the node's own admin still signs tips over it
    sha = hub.change("the admin's tip", append("gateway", "# note\n"))
    accepted(node)
    assert roles(node, 1) == [(sha, "admin@example.org", "admin")]
