"""The authority rule of syncd.rules.authority: tables for each rule and outcome, a
cross-check of the admin match against real signatures, and a property test
over random histories."""

from __future__ import annotations

import base64
import functools
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import SignatureError
from syncd.rules.authority import (
    Change,
    Decision,
    Roles,
    admin_principal,
    authorize,
    host_name,
)
from syncd.rules.owners import owner_keys
from syncd.rules.policy import Policy
from syncd.signing.allowed_signers import AllowedSigner, parse_allowed_signers, verify_signed_object
from syncd.signing.sshsig import fingerprint, parse_signature
from syncd.tinc.names import is_node_name
from tests.gitutil import make_key

NOW = 1_750_000_000  # 2025-06-15


@functools.cache
def key_line(seed: int) -> str:
    """``ssh-ed25519 BASE64``: a real public key, one per seed."""
    del seed
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def blob(seed: int) -> bytes:
    return base64.b64decode(key_line(seed).split()[1])


ADMIN, ALICE, BOB, CAROL, NEWBIE, STRANGER = range(1, 7)
WHO = {ADMIN: "admin", ALICE: "alice", BOB: "bob", CAROL: "carol", NEWBIE: "newbie", STRANGER: "stranger"}
ADMINS = f"admin@example.org {key_line(ADMIN)}\n"


def host(n: int, *owners: int, extra: str = "") -> bytes:
    lines = "".join(f"# syncd-owner: {key_line(o)} {WHO.get(o, o)}@example.org\n" for o in owners)
    return f"Subnet = 10.0.{n}.0/24\n{extra}{lines}".encode()


BASE: dict[str, bytes] = {
    "syncd.yaml": b"hosts_dir: hosts\n",
    "allowed_signers": ADMINS.encode(),
    "README.md": b"the network\n",
    "hosts/alice": host(1, ALICE),
    "hosts/bob": host(2, BOB, CAROL),
    "hosts/orphan": host(3),
}


def applied(before: Mapping[str, bytes], edits: Mapping[str, bytes | None]) -> dict[str, bytes]:
    after = dict(before)
    for path, data in edits.items():
        if data is None:
            after.pop(path, None)
        else:
            after[path] = data
    return after


def roles_at(admins: list[AllowedSigner], policy: Policy, hosts: Mapping[str, bytes]) -> Roles:
    """The rule's input at a parent whose host files are ``hosts`` (NAME ->
    bytes), as ``trust.RepoAuthority`` reads it from a commit."""
    owners: dict[str, frozenset[bytes]] = {}
    comments: dict[bytes, str] = {}
    for name, data in hosts.items():
        if is_node_name(name):
            owners[name], named = owner_keys(f"{policy.hosts_dir}/{name}", data)
            for key, comment in named.items():
                comments.setdefault(key, comment)
    return Roles(tuple(admins), owners, policy.join, policy.hosts_dir, comments)


def change_between(parent: Mapping[str, bytes], child: Mapping[str, bytes], hosts_dir: str, parents: int = 1) -> Change:
    """The rule's ``Change`` from one tree (path -> bytes) to the next, as
    ``trust.RepoAuthority`` diffs a commit against its first parent."""
    paths = tuple(sorted(p for p in parent.keys() | child.keys() if parent.get(p) != child.get(p)))
    added: dict[str, frozenset[bytes]] = {}
    comments: dict[bytes, str] = {}
    for path in paths:
        if path not in parent and (name := host_name(path, hosts_dir)) is not None:
            added[name], named = owner_keys(path, child[path])
            for key, comment in named.items():
                comments.setdefault(key, comment)
    return Change(parents, paths, added, comments)


def decide(
    edits: Mapping[str, bytes | None],
    signer: int,
    join: str = "admins",
    parents: int = 1,
    admins: str = ADMINS,
    before: Mapping[str, bytes] = BASE,
) -> Decision:
    hosts = {p.removeprefix("hosts/"): d for p, d in before.items() if p.startswith("hosts/")}
    roles = roles_at(parse_allowed_signers(admins), Policy(join=join), hosts)
    change = change_between(before, applied(before, edits), "hosts", parents)
    return authorize(roles, change, blob(signer), NOW)


EDIT = "Address = 192.0.2.1\n"
NEW = {"hosts/newbie": host(9, NEWBIE)}
RENAME = {"hosts/alice": None, "hosts/alice2": host(1, ALICE)}
BOB_EDIT = {"hosts/bob": host(2, BOB, CAROL, extra=EDIT)}
SCRIPT = {"hosts/newbie-up": host(9, NEWBIE)}
RULES = [
    # rule 1: an admin may do anything
    ("admin edits the policy", {"syncd.yaml": b"join: open\n"}, ADMIN, "admins", ("ok", "admin")),
    ("admin rotates the admins", {"allowed_signers": b""}, ADMIN, "admins", ("ok", "admin")),
    ("admin adds a node", {"hosts/new": host(9)}, ADMIN, "admins", ("ok", "admin")),
    ("admin edits an owned node", {"hosts/alice": host(1)}, ADMIN, "admins", ("ok", "admin")),
    ("admin empty commit", {}, ADMIN, "admins", ("ok", "admin")),
    # rule 2: an owner and its own host file
    ("owner edits own", {"hosts/alice": host(1, ALICE, extra=EDIT)}, ALICE, "admins", ("ok", "owner:alice")),
    ("co-owner edits", {"hosts/bob": host(2, BOB, CAROL, extra=EDIT)}, CAROL, "admins", ("ok", "owner:bob")),
    ("owner deletes own", {"hosts/alice": None}, ALICE, "admins", ("ok", "owner:alice")),
    ("owner rotates its key", {"hosts/alice": host(1, NEWBIE)}, ALICE, "admins", ("ok", "owner:alice")),
    ("owner removes itself", {"hosts/bob": host(2, CAROL)}, BOB, "admins", ("ok", "owner:bob")),
    ("owner orphans its file", {"hosts/alice": host(1)}, ALICE, "admins", ("ok", "owner:alice")),
    (
        "owner edits another",
        {"hosts/bob": host(2, BOB, CAROL, extra=EDIT)},
        ALICE,
        "open",
        ("unauthorized", "hosts/bob"),
    ),
    (
        "owner edits own and another",
        {"hosts/alice": host(1, ALICE, extra=EDIT), "hosts/bob": host(2, ALICE)},
        ALICE,
        "open",
        ("unauthorized", "hosts/bob"),
    ),
    ("owner claims an orphan", {"hosts/orphan": host(3, ALICE)}, ALICE, "open", ("unauthorized", "hosts/orphan")),
    ("owner edits the policy", {"syncd.yaml": b"join: open\n"}, ALICE, "open", ("unauthorized", "syncd.yaml")),
    (
        "owner adds itself as admin",
        {"allowed_signers": (ADMINS + f"alice@example.org {key_line(ALICE)}\n").encode()},
        ALICE,
        "open",
        ("unauthorized", "allowed_signers"),
    ),
    ("owner edits the README", {"README.md": b"mine\n"}, ALICE, "open", ("unauthorized", "README.md")),
    ("owner adds a script", {"hosts/alice-up": b"#!/bin/sh\n"}, ALICE, "open", ("unauthorized", "hosts/alice-up")),
    ("owner adds a nested path", {"hosts/x/alice": host(1, ALICE)}, ALICE, "open", ("unauthorized", "hosts/x/alice")),
    ("owner empty commit", {}, ALICE, "open", ("unauthorized", None)),
    # no role at all
    ("stranger edits a node", {"hosts/alice": host(1, STRANGER)}, STRANGER, "open", ("signature", "hosts/alice")),
    ("stranger edits the admins", {"allowed_signers": b""}, STRANGER, "open", ("signature", "allowed_signers")),
    ("stranger empty commit", {}, STRANGER, "open", ("signature", None)),
    # rule 3, by join mode: the newcomer itself, a member inviting it, a stranger
    ("admins: newcomer joins", NEW, NEWBIE, "admins", ("unauthorized", "hosts/newbie")),
    ("admins: member invites", NEW, ALICE, "admins", ("unauthorized", "hosts/newbie")),
    ("admins: stranger adds", NEW, STRANGER, "admins", ("signature", "hosts/newbie")),
    ("members: newcomer joins", NEW, NEWBIE, "members", ("unauthorized", "hosts/newbie")),
    ("members: member invites", NEW, ALICE, "members", ("ok", "join:newbie")),
    ("members: stranger adds", NEW, STRANGER, "members", ("signature", "hosts/newbie")),
    ("open: newcomer joins", NEW, NEWBIE, "open", ("ok", "join:newbie")),
    ("open: member invites", NEW, ALICE, "open", ("ok", "join:newbie")),
    ("open: stranger adds", NEW, STRANGER, "open", ("signature", "hosts/newbie")),
    ("open: a node without owners", {"hosts/newbie": host(9)}, ALICE, "open", ("unauthorized", "hosts/newbie")),
    (
        "open: newcomer also edits the policy",
        {**NEW, "syncd.yaml": b"join: open\n"},
        NEWBIE,
        "open",
        ("unauthorized", "syncd.yaml"),
    ),
    (
        "open: newcomer adds two nodes",
        {**NEW, "hosts/newbie2": host(10, NEWBIE)},
        NEWBIE,
        "open",
        ("ok", "join:newbie,newbie2"),
    ),
    (
        "open: newcomer adds a script",
        {"hosts/newbie-up": host(9, NEWBIE)},
        NEWBIE,
        "open",
        ("signature", "hosts/newbie-up"),
    ),
    # rules 2 and 3 together: a rename by an owner
    (
        "admins: rename",
        {"hosts/alice": None, "hosts/alice2": host(1, ALICE)},
        ALICE,
        "admins",
        ("unauthorized", "hosts/alice2"),
    ),
    (
        "members: rename",
        {"hosts/alice": None, "hosts/alice2": host(1, ALICE)},
        ALICE,
        "members",
        ("ok", "owner:alice join:alice2"),
    ),
    (
        "open: rename",
        {"hosts/alice": None, "hosts/alice2": host(1, ALICE)},
        ALICE,
        "open",
        ("ok", "owner:alice join:alice2"),
    ),
    (
        "open: rename of another's node",
        {"hosts/bob": None, "hosts/bob2": host(2, ALICE)},
        ALICE,
        "open",
        ("unauthorized", "hosts/bob"),
    ),
]


@pytest.mark.parametrize(
    ("edits", "signer", "join", "expected"), [row[1:] for row in RULES], ids=[row[0] for row in RULES]
)
def test_rules(edits: Mapping[str, bytes | None], signer: int, join: str, expected: tuple[str, str | None]) -> None:
    decision = decide(edits, signer, join)
    if expected[0] == "ok":
        assert (decision.ok, decision.role, decision.reason, decision.path) == (True, expected[1], None, None)
    else:
        assert (decision.ok, decision.reason, decision.path) == (False, *expected), decision.message
        assert fingerprint(blob(signer)) in decision.message
        assert decision.message.count(expected[1] or "\0") == (1 if expected[1] else 0), decision.message
        if expected[1] and host_name(expected[1], "hosts") is None:
            assert f"{expected[1]} is not a host file (hosts/NAME): only an admin may" in decision.message


def test_merges_and_root_commits_are_admin_only() -> None:
    own = {"hosts/alice": host(1, ALICE, extra=EDIT)}
    assert decide(own, ADMIN, parents=2).role == "admin"
    assert decide(own, ADMIN, parents=0).role == "admin"
    for parents in (0, 2, 3):
        refused = decide(own, ALICE, "open", parents)
        assert (refused.ok, refused.reason, refused.path, refused.role) == (False, "unauthorized", None, "owner:alice")
        assert "only an admin may make it" in refused.message
    assert decide(own, STRANGER, "open", 2).reason == "signature"


def test_refusal_names_signer_role_and_owners() -> None:
    refused = decide({"hosts/bob": host(2, ALICE)}, ALICE, "open")
    assert refused.role == "owner:alice"
    assert refused.signer == f"alice@example.org ({fingerprint(blob(ALICE))})"
    assert refused.message.startswith(f"signed by alice@example.org ({fingerprint(blob(ALICE))}), owner of alice: ")
    assert "hosts/bob is owned by " in refused.message
    assert f"bob@example.org ({fingerprint(blob(BOB))})" in refused.message
    assert f"carol@example.org ({fingerprint(blob(CAROL))})" in refused.message
    stranger = decide({"hosts/bob": None}, STRANGER, "open")
    assert stranger.role == "" and "unknown key" in stranger.signer
    assert "no role at the parent commit" in stranger.message
    joining = decide(NEW, NEWBIE, "members")
    assert "no role but owner of a host file this commit adds" in joining.message
    assert "join is members" in joining.message


def test_a_name_that_exists_at_the_parent_is_not_a_join() -> None:
    hosts = {p.removeprefix("hosts/"): d for p, d in BASE.items() if p.startswith("hosts/")}
    roles = roles_at(parse_allowed_signers(ADMINS), Policy(join="open"), hosts)
    for name in ("bob", "orphan"):  # a caller's diff that calls a present file "added" changes nothing
        change = Change(1, (f"hosts/{name}",), {name: frozenset({blob(NEWBIE)})})
        refused = authorize(roles, change, blob(NEWBIE), NOW)
        assert (refused.ok, refused.reason, refused.path) == (False, "unauthorized", f"hosts/{name}")
    # change_between sees a modification, which only the owners may make
    assert decide({"hosts/bob": host(2, NEWBIE)}, NEWBIE, "open").reason == "signature"


def history(steps: list[tuple[Mapping[str, bytes | None], int]], join: str = "admins") -> list[Decision]:
    """Apply each accepted step; each is authorized by the roles at its parent."""
    files, decisions = dict(BASE), []
    for edits, signer in steps:
        decision = decide(edits, signer, join, before=files)
        decisions.append(decision)
        if decision.ok:
            files = applied(files, edits)
    return decisions


def test_key_rotation_takes_effect_at_the_next_commit() -> None:
    rotate = ({"hosts/alice": host(1, NEWBIE)}, ALICE)
    old_key = ({"hosts/alice": host(1, ALICE)}, ALICE)
    new_key = ({"hosts/alice": host(1, NEWBIE, extra=EDIT)}, NEWBIE)
    decisions = history([rotate, old_key, new_key])
    assert [(d.ok, d.role, d.reason) for d in decisions] == [
        (True, "owner:alice", None),
        (False, "", "signature"),  # the old key owns nothing any more
        (True, "owner:alice", None),
    ]


def test_self_removal_takes_effect_at_the_next_commit() -> None:
    decisions = history(
        [
            ({"hosts/bob": host(2, CAROL)}, BOB),
            ({"hosts/bob": host(2, BOB, CAROL)}, BOB),
            ({"hosts/bob": host(2, CAROL, extra=EDIT)}, CAROL),
        ]
    )
    assert [(d.ok, d.reason) for d in decisions] == [(True, None), (False, "signature"), (True, None)]


def test_a_joined_node_is_owned_at_the_next_commit() -> None:
    decisions = history([(NEW, NEWBIE), ({"hosts/newbie": host(9, NEWBIE, extra=EDIT)}, NEWBIE)], join="open")
    assert [d.role for d in decisions] == ["join:newbie", "owner:newbie"]


ADMIN_WINDOWS = [
    ('valid-before="20200101Z" ', "is not valid at 2025-06-15"),
    ('valid-after="20300101Z" ', "is not valid at 2025-06-15"),
    ('namespaces="file" ', "does not allow it to sign commits"),
]


@pytest.mark.parametrize(("options", "note"), ADMIN_WINDOWS)
def test_an_admin_outside_its_window_is_not_an_admin(options: str, note: str) -> None:
    admins = f"admin@example.org {options}{key_line(ADMIN)}\n"
    refused = decide({"syncd.yaml": b""}, ADMIN, admins=admins)
    assert (refused.ok, refused.reason, refused.path) == (False, "signature", "syncd.yaml")
    assert note in refused.message and refused.signer.startswith("admin@example.org (")
    # ... but an owner still, if it owns a node
    admins += f"alice@example.org {options}{key_line(ALICE)}\n"
    assert decide({"hosts/alice": host(1, ALICE, extra=EDIT)}, ALICE, admins=admins).role == "owner:alice"


def test_admin_match_agrees_with_signature_verification(tmp_path: Path) -> None:
    """admin_principal says what verify_signed_object decides for a real
    signature of that key, for each kind of allowed_signers entry."""
    key = make_key(tmp_path, "admin")
    line = key.public_line()
    payload = tmp_path / "payload"
    payload.write_bytes(b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nmessage\n")
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(key.private), str(payload)], check=True)
    armored = payload.with_name("payload.sig").read_bytes()
    variants = [
        f"a@x {line}",
        f"a@x,b@x {line}",
        f'a@x valid-before="20200101Z" {line}',
        f'a@x valid-after="20300101Z" {line}',
        f'a@x valid-after="20200101Z",valid-before="20300101Z" {line}',
        f'a@x namespaces="file" {line}',
        f'a@x namespaces="file,git" {line}',
        f'a@x namespaces="g*" {line}',
        f'a@x valid-before="20200101Z" {line}\nb@x {line}',
        f'a@x {line}\na@x,!a@x namespaces="git" {line}',
        f'a@x namespaces="file" {line}\na@x namespaces="git" {line}',
        f'a@x namespaces="file" {line}\nb@x namespaces="git" {line}',
        f"other@x {key_line(ADMIN)}",
    ]
    for text in variants:
        admins = parse_allowed_signers(text + "\n")
        try:
            expected: str | None = verify_signed_object(payload.read_bytes(), armored, admins, NOW).principal
        except SignatureError:
            expected = None
        assert admin_principal(admins, parse_signature(armored).public_key, NOW) == expected, text


# --- property: an accepted non-admin commit never reaches past its authority ----

NODES = ("n0", "n1", "n2", "n3")
PATHS = (*(f"hosts/{n}" for n in NODES), "hosts/n0-up", "hosts/d/n1", "syncd.yaml", "allowed_signers", "README")
PEOPLE = (ALICE, BOB, CAROL, NEWBIE, STRANGER)


def _model_bytes(path: str, version: int, owners: frozenset[int]) -> bytes:
    if path.startswith("hosts/"):
        return host(version % 200, *sorted(owners))
    return f"v{version}\n".encode()


def _expected(
    changed: list[str],
    before: Mapping[str, frozenset[int]],
    after: Mapping[str, frozenset[int]],
    signer: int,
    join: str,
) -> bool:
    """The rule, stated from the model's own owner sets (no parsing)."""
    member = any(signer in owners for path, owners in before.items() if path.startswith("hosts/"))
    for path in changed:
        name = path.removeprefix("hosts/")
        if not path.startswith("hosts/") or not is_node_name(name):
            return False
        if path in before:
            if signer not in before[path]:
                return False
            continue
        new = after.get(path, frozenset())
        if not new or not {"members": member, "open": member or signer in new}.get(join, False):
            return False
    return bool(changed)


edit = st.tuples(st.integers(0, 63), st.booleans(), st.frozensets(st.sampled_from(PEOPLE), max_size=2))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(("admins", "members", "open")),
    st.lists(st.frozensets(st.sampled_from(PEOPLE), min_size=1, max_size=2), min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 63), st.lists(edit, max_size=2)), max_size=12),
)
def test_accepted_commits_stay_within_the_signers_authority(
    join: str, start: list[frozenset[int]], commits: list[tuple[int, list[tuple[int, bool, frozenset[int]]]]]
) -> None:
    """Random commits by non-admin keys, each judged at its parent; only the
    accepted ones are applied.  authorize() must agree with the rule stated
    on the model, and nothing but host files the signer owned (or added
    under its join mode) may ever change."""
    admins = parse_allowed_signers(ADMINS)
    model = {"syncd.yaml": frozenset[int](), "allowed_signers": frozenset[int]()}
    model |= {f"hosts/{n}": owners for n, owners in zip(NODES, start, strict=False)}
    files = {p: _model_bytes(p, 0, o) for p, o in model.items()}
    fixed = {p: files[p] for p in ("syncd.yaml", "allowed_signers")}
    for version, (pick, edits) in enumerate(commits, 1):
        owning = sorted({k for p, o in model.items() if p.startswith("hosts/") for k in o})
        signer = (owning * 3 + list(PEOPLE))[pick % (len(owning) * 3 + len(PEOPLE))]  # owners more often
        new_model, new_files = dict(model), dict(files)
        # the signer's own files and new names are drawn more often, so that many commits are accepted
        mine = [p for p, o in model.items() if p.startswith("hosts/") and signer in o]
        choices = mine * 3 + [f"hosts/{n}" for n in NODES if f"hosts/{n}" not in model] * 2 + list(PATHS)
        for path_pick, delete, owners in edits:
            path = choices[path_pick % len(choices)]
            if delete:
                new_model.pop(path, None)
                new_files.pop(path, None)
            else:
                new_model[path] = owners
                new_files[path] = _model_bytes(path, version, owners)
        changed = sorted(p for p in files.keys() | new_files.keys() if files.get(p) != new_files.get(p))
        hosts = {p.removeprefix("hosts/"): d for p, d in files.items() if p.startswith("hosts/")}
        roles = roles_at(admins, Policy(join=join), hosts)
        change = change_between(files, new_files, "hosts")
        decision = authorize(roles, change, blob(signer), NOW)
        assert list(change.paths) == changed
        assert decision.ok == _expected(changed, model, new_model, signer, join), (decision, changed)
        if not decision.ok:
            owns = any(signer in o for p, o in model.items() if p.startswith("hosts/"))
            adds = any(signer in new_model[f"hosts/{n}"] for n in change.added_owners)
            assert decision.reason == ("unauthorized" if owns or adds else "signature")
            continue
        for path in changed:  # the invariant, from the parent's owner sets
            assert signer in model[path] if path in model else join != "admins" and new_model[path], path
        model, files = new_model, new_files
        assert {p: files[p] for p in fixed} == fixed  # the policy and the admins never move


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(NODES), st.frozensets(st.sampled_from(PEOPLE))),
    st.lists(st.dictionaries(st.sampled_from(NODES), st.none() | st.frozensets(st.sampled_from(PEOPLE))), max_size=6),
)
def test_the_owner_index_carried_from_commit_to_commit_equals_a_fresh_one(
    start: dict[str, frozenset[int]], commits: list[dict[str, frozenset[int] | None]]
) -> None:
    """``Roles.evolved`` updates who owns what for the files a commit
    changed; asked of every key, it answers as roles built afresh do."""
    owners = {name: frozenset(blob(k) for k in keys) for name, keys in start.items()}
    roles = Roles((), owners)
    roles.owned_by(blob(ALICE))  # the index is built: from now on it is carried
    for edits in commits:
        owners = dict(owners)
        for name, keys in edits.items():
            if keys is None:
                owners.pop(name, None)
            else:
                owners[name] = frozenset(blob(k) for k in keys)
        roles = roles.evolved(owners, {}, edits)
        fresh = Roles((), owners)
        assert all(roles.owned_by(blob(k)) == fresh.owned_by(blob(k)) for k in PEOPLE)


def test_a_thousand_commits_are_authorized_quickly() -> None:
    nodes = {f"n{i}": host(i % 250, 100 + i) for i in range(1000)}
    roles = roles_at(parse_allowed_signers(ADMINS), Policy(join="members"), nodes)
    changes = []
    for i in range(1000):
        signer = ADMIN if i % 2 else 100 + i
        target = f"hosts/n{i if i % 3 else (i + 1) % 1000}"  # every third owner commit is refused
        changes.append((Change(1, (target,)), blob(signer)))
    start = time.perf_counter()
    decisions = [authorize(roles, change, key, NOW) for change, key in changes]
    elapsed = time.perf_counter() - start
    assert sum(d.ok for d in decisions) == 1000 - sum(1 for i in range(1000) if i % 2 == 0 and i % 3 == 0)
    assert elapsed < 2.0, elapsed
