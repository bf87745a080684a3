"""A property over random signed histories (docs/trust.md): admins added and
removed, owners changed, host files edited, side branches merged with their
parents in either order, commits dated normally, backdated, a little ahead
or far in the future.  Every commit is a real SSH-signed git commit; a node
syncs the main branch after each step, and ``syncd verify`` checks the whole
range from the root to that tip.  A tip both refuse is dropped, as admins
would drop it (main goes back to what the node applied), and the history
goes on from there.

* The node and ``syncd verify`` reach the same verdict (and reason) on every tip.
* No accepted commit is signed by a key after a commit that took its role
  away, unless a commit signed by another key gave the role back in between.
* Every accepted commit's signer had its role at each of its parents, as the
  model (not syncd) computes the roles.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from syncd.cli.main import main
from tests.conftest import EXAMPLE_REPO
from tests.gitutil import SshKey, env, git, make_key
from tests.syncenv import Node, make_node

PEOPLE = ("admin", "admin2", "alice", "bob", "carol")
NODES = ("gateway", "my_laptop", "my_pc")
SKEW = 3600
NOW = int(time.time())
START = NOW - 30 * 86400  # the root commit's date


@dataclass(frozen=True)
class File:
    owners: frozenset[str]
    version: int = 0


@dataclass(frozen=True)
class Tree:
    """What the model says a commit holds."""

    admins: frozenset[str]
    files: tuple[File, ...]  # in NODES order

    def owners_of(self, name: str) -> frozenset[str]:
        return self.files[NODES.index(name)].owners

    def with_file(self, name: str, file: File) -> Tree:
        files = list(self.files)
        files[NODES.index(name)] = file
        return replace(self, files=tuple(files))


@dataclass
class Commit:
    sha: str
    parents: tuple[str, ...]
    signer: str
    tree: Tree
    date: int


@dataclass
class World:
    """A work repository, its commits as the model sees them, and a node."""

    root: Path
    keys: dict[str, SshKey]
    base: dict[str, str]  # the example network's files
    node: Node  # syncs main from the work repository
    commits: dict[str, Commit] = field(default_factory=dict)
    main: str = ""
    side: str | None = None  # the head of a side branch being built, if any

    @property
    def work(self) -> Path:
        return self.root / "work"

    def write(self, tree: Tree) -> None:
        lines = "".join(f"{p}@example.org {self.keys[p].public_line()}\n" for p in sorted(tree.admins))
        (self.work / "allowed_signers").write_text(lines)
        for name, file in zip(NODES, tree.files, strict=True):
            owners = "".join(f"# syncd-owner: {self.keys[o].public_line()} {o}@node\n" for o in sorted(file.owners))
            (self.work / "hosts" / name).write_text(f"{self.base[name]}# v{file.version}\n{owners}")

    def commit(self, tree: Tree, parents: tuple[str, ...], signer: str, date: int) -> str:
        self.write(tree)
        git(self.work, "add", "-A")
        written = git(self.work, "write-tree")
        args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.keys[signer].private}", "commit-tree", "-S"]
        for parent in parents:
            args += ["-p", parent]
        stamp = f"@{date} +0000"
        sha = git(self.work, *args, "-m", f"{signer} at {date}", written, extra_env=_dates(stamp))
        self.commits[sha] = Commit(sha, parents, signer, tree, date)
        return sha

    def ancestors(self, sha: str) -> set[str]:
        """``sha`` and every commit it reaches."""
        seen: set[str] = set()
        pending = [sha]
        while pending:
            at = pending.pop()
            if at not in seen:
                seen.add(at)
                pending.extend(self.commits[at].parents)
        return seen


def _dates(stamp: str) -> dict[str, str]:
    return {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}


@dataclass(frozen=True)
class Step:
    kind: str  # admins, owners, edit, fork, merge
    when: str = "normal"  # normal, backdated, ahead, future
    signer: int = 0  # picks the signer: an admin or owner of the head more often than anyone
    person: str = "admin2"  # admins, owners: who is added, or removed if there
    node: str = "my_pc"
    back: int = 1  # fork: how far back along main's first parents
    main_first: bool = True  # merge: main is the first parent
    picks: tuple[bool, ...] = (True, True, True, True)  # merge: the first parent's admins, and each node's file


steps = st.builds(
    Step,
    kind=st.sampled_from(("admins",) * 2 + ("owners",) * 2 + ("edit",) * 3 + ("fork",) * 2 + ("merge",) * 3),
    when=st.sampled_from(("normal",) * 10 + ("backdated", "ahead", "future")),
    signer=st.integers(0, 63),
    person=st.sampled_from(PEOPLE[1:]),
    node=st.sampled_from(NODES),
    back=st.integers(1, 4),
    main_first=st.booleans(),
    picks=st.tuples(*(st.booleans() for _ in range(4))),
)


def signer_of(step: Step, tree: Tree) -> str:
    """The step's signer: the head's admins and the edited file's owners
    are drawn more often than anyone (so that many commits are accepted)."""
    admins = [a for a in sorted(tree.admins) for _ in range(4)]
    choices = admins + [o for o in sorted(tree.owners_of(step.node)) for _ in range(3)] + list(PEOPLE)
    return choices[step.signer % len(choices)]


def date_for(world: World, parents: tuple[str, ...], when: str) -> int:
    latest = max(world.commits[p].date for p in parents)
    return {
        "normal": latest + 60,
        "backdated": latest - 2 * SKEW,
        "ahead": max(latest, int(time.time())) + 50 * 60,  # within the skew
        "future": 4_070_908_800,  # 2099
    }[when]


def fork(world: World, back: int) -> None:
    """Build on a commit ``back`` first parents behind main from now on."""
    line = [world.main]
    while world.commits[line[-1]].parents and len(line) <= back:
        line.append(world.commits[line[-1]].parents[0])
    world.side = line[-1]


def apply_step(world: World, step: Step) -> bool:
    """One step; True when main moved (the node then syncs)."""
    if step.kind == "fork":
        fork(world, step.back)
        return False
    if step.kind == "merge":
        if world.side is None or world.side in world.ancestors(world.main):  # a side branch of one edit
            fork(world, step.back)
            assert world.side is not None
            tree = world.commits[world.side].tree
            file = tree.files[NODES.index(step.node)]
            edited = tree.with_file(step.node, replace(file, version=file.version + 1))
            side = (world.side,)
            world.side = world.commit(edited, side, signer_of(step, tree), date_for(world, side, "normal"))
        parents = (world.main, world.side) if step.main_first else (world.side, world.main)
        first, second = (world.commits[p].tree for p in parents)
        files = tuple(a if pick else b for a, b, pick in zip(first.files, second.files, step.picks[1:], strict=True))
        tree = Tree(first.admins if step.picks[0] else second.admins, files)
        signer = signer_of(step, world.commits[world.main].tree)
        world.main = world.commit(tree, parents, signer, date_for(world, parents, step.when))
        world.side = None
        return True
    head = world.side or world.main
    tree = world.commits[head].tree
    file = tree.files[NODES.index(step.node)]
    if step.kind == "admins":
        changed = replace(tree, admins=tree.admins ^ {step.person} or tree.admins)
    elif step.kind == "owners":
        changed = tree.with_file(step.node, replace(file, owners=file.owners ^ {step.person}))
    else:
        changed = tree.with_file(step.node, replace(file, version=file.version + 1))
    sha = world.commit(changed, (head,), signer_of(step, tree), date_for(world, (head,), step.when))
    if world.side is not None:
        world.side = sha
        return False
    world.main = sha
    return True


# --- the verdicts ----------------------------------------------------------------------------------


def node_verdict(world: World) -> str:
    git(world.work, "update-ref", "refs/heads/main", world.main)
    code, out, err = world.node.sync()
    if code == 0:
        return "accepted"
    assert code == 1, (out, err)
    reason = json.loads((world.node.state / "health.json").read_text())["last_error_reason"]
    return f"refused ({reason})"


def verify_verdict(world: World, root: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    signers = world.root / "local_signers"
    code = main(["verify", "--repo", str(world.work), "--allowed-signers", str(signers), root, world.main], out, err)
    if code == 0:
        return "accepted"
    assert code == 1, err.getvalue()
    return "refused " + err.getvalue().split(": refused ", 1)[1].split(":", 1)[0]


# --- the properties on what the node applied --------------------------------------------------


def applied_tip(node: Node) -> str:
    tip = json.loads((node.state / "state.json").read_text())["last_applied"]
    assert isinstance(tip, str)
    return tip


def applied_roles(node: Node) -> dict[str, str]:
    out, err = io.StringIO(), io.StringIO()
    assert main(["log", "-c", str(node.config), "--format", "json"], out, err) == 0, err.getvalue()
    return {entry["commit"]: entry["role"] for entry in map(json.loads, out.getvalue().splitlines())}


def holds(tree: Tree, role: str, who: str) -> bool:
    if role == "admin":
        return who in tree.admins
    return who in tree.owners_of(role.removeprefix("owner:"))


def check_roles(world: World, roles: dict[str, str], root: str) -> None:
    for sha, role in roles.items():
        if sha == root:
            continue
        commit = world.commits[sha]
        for kind in role.split():
            if kind == "admin":  # an admin at every parent
                assert all(holds(world.commits[p].tree, "admin", commit.signer) for p in commit.parents), sha
            else:  # an owner edits its own files, one parent
                assert len(commit.parents) == 1, sha
                for name in kind.removeprefix("owner:").split(","):
                    assert holds(world.commits[commit.parents[0]].tree, f"owner:{name}", commit.signer), sha
        for kind in role.split():
            for single in _roles(kind):
                check_revocation(world, sha, single)


def _roles(kind: str) -> Iterator[str]:
    if kind == "admin":
        yield "admin"
    else:
        yield from (f"owner:{name}" for name in kind.removeprefix("owner:").split(","))


def check_revocation(world: World, sha: str, role: str) -> None:
    """No commit R before ``sha`` took ``role`` from its signer K unless a
    commit A between them, signed by another key, gave it back."""
    signer = world.commits[sha].signer
    before = world.ancestors(sha) - {sha}
    for removal in before:
        r = world.commits[removal]
        if holds(r.tree, role, signer) or not any(holds(world.commits[p].tree, role, signer) for p in r.parents):
            continue  # R did not take the role away
        after_removal = {c for c in before if removal in world.ancestors(c)} - {removal}
        given_back = any(
            holds(world.commits[a].tree, role, signer)
            and world.commits[a].signer != signer
            and any(
                removal in world.ancestors(p) and not holds(world.commits[p].tree, role, signer)
                for p in world.commits[a].parents
            )
            for a in after_removal
        )
        assert given_back, f"{sha[:12]} signed by {signer} as {role} after {removal[:12]} took it away"
        if currently_in_test_context():
            event(f"{role.split(':')[0]}: taken away, given back by another key, used")


# --- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key(directory, name) for name in PEOPLE}


def new_world(directory: Path, keys: dict[str, SshKey]) -> tuple[World, str]:
    base = {name: (EXAMPLE_REPO / "hosts" / name).read_text() for name in NODES}
    signers = directory / "local_signers"
    world = World(directory, keys, base, make_node(directory / "node", str(directory / "work"), signers))
    shutil.copytree(EXAMPLE_REPO, world.work, ignore=shutil.ignore_patterns(".pre-commit-config.yaml"))
    git(world.work, "init", "-q", "-b", "main")
    signers.write_text(f"admin@example.org {keys['admin'].public_line()}\n")
    signers.chmod(0o644)
    files = (File(frozenset()), File(frozenset({"bob"})), File(frozenset({"alice"})))
    root = world.commit(Tree(frozenset({"admin"}), files), (), "admin", START)
    world.main = root
    git(world.work, "update-ref", "refs/heads/main", root)
    assert world.node.sync()[0] == 0
    return world, root


@settings(
    max_examples=int(os.environ.get("SYNCD_HISTORY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(steps, min_size=3, max_size=12))
def test_random_histories(keys: dict[str, SshKey], history: list[Step]) -> None:
    with tempfile.TemporaryDirectory(prefix="syncd-history-") as tmp:
        world, root = new_world(Path(tmp), keys)
        for step in history:
            if apply_step(world, step):
                on_node, by_verify = node_verdict(world), verify_verdict(world, root)
                assert on_node == by_verify, (step, on_node, by_verify)
                event(f"{step.kind} {step.when}: {on_node}")
                if on_node != "accepted":  # the admins drop it: main back at what the node applied
                    world.main = applied_tip(world.node)
        roles = applied_roles(world.node)
        check_roles(world, roles, root)


HANDWRITTEN = {
    # admin2 is made an admin, removed, then merges its fork of the time
    # before, main second: refused at the parent where it is no admin
    "removed admin merges its fork": (
        [
            Step("admins", signer=0, person="admin2"),  # the admin adds admin2
            Step("edit", signer=4),  # admin2 (the head's admins, sorted, four picks each)
            Step("admins", signer=0, person="admin2"),  # the admin removes admin2
            Step("fork", back=1),
            Step("edit", signer=4),  # admin2, where it is still an admin
            # main's admins: admin (4 picks), my_pc's owner alice (3), then PEOPLE: admin2 is pick 8
            Step("merge", signer=8, main_first=False, picks=(False, True, True, True)),
        ],
        ["accepted"] * 3 + ["refused (signature)"],
    ),
    # removed, then given back by the admin: admin2's next commit is its own again
    "removed admin given back": (
        [Step("admins", signer=0, person="admin2")] * 3 + [Step("edit", signer=4)],
        ["accepted"] * 4,
    ),
    # alice loses my_pc and edits it anyway: no role; the admin gives it back, and she may again
    "owner removed and given back": (
        [
            Step("owners", signer=0, person="alice"),  # the admin takes my_pc from alice
            Step("edit", signer=6),  # alice: no owner of my_pc now, so PEOPLE[2] after the admin's 4 picks
            Step("owners", signer=0, person="alice"),  # the admin gives it back
            Step("edit", signer=4),  # alice, my_pc's owner (3 picks after the admin's 4)
        ],
        ["accepted", "refused (signature)", "accepted", "accepted"],
    ),
}


@pytest.mark.parametrize("name", HANDWRITTEN)
def test_handwritten_histories(keys: dict[str, SshKey], tmp_path: Path, name: str) -> None:
    """Histories written out by hand, each verdict as expected: the
    generator's pieces reach the attacks, and the property holds on them."""
    plan, expected = HANDWRITTEN[name]
    world, root = new_world(tmp_path, keys)
    verdicts = []
    for step in plan:
        if apply_step(world, step):
            on_node, by_verify = node_verdict(world), verify_verdict(world, root)
            assert on_node == by_verify
            verdicts.append(on_node)
            if on_node != "accepted":
                world.main = applied_tip(world.node)
    assert verdicts == expected
    check_roles(world, applied_roles(world.node), root)
    result = subprocess.run(["git", "-C", str(world.work), "fsck", "--no-dangling"], env=env(), capture_output=True)
    assert result.returncode == 0, result.stderr
