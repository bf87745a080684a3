"""The pipeline against fakes: no git, no disk, no tincd.

Every outcome of ``pipeline.run_pass``: applied, unchanged (also for a
touched but identical file), planned, and a refusal at each step (the tip's
signature, a middle commit's signature, a rewound history, a backdated
commit, an unsafe tree, invalid content), a foreign own key held back, a
failed reload, and the Ed25519 key tincd 1.1 appends (kept, never a reload).
A refusal leaves the fakes exactly as they were."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from syncd.errors import RefusedError, ReloadError, SignatureError, UnsafeTreeError
from syncd.node.hostsdir import FileStat
from syncd.node.parseindex import Key, Record
from syncd.node.reload import Reloaded
from syncd.node.state import Applied, State
from syncd.rules.plan import Plan, blob_id
from syncd.rules.tree import EntryKind, TreeEntry
from syncd.signing.allowed_signers import AllowedSigner
from syncd.signing.commits import CommitInfo
from syncd.sync.pipeline import run_pass
from syncd.sync.ports import Ports, Settings, Signed
from syncd.tinc.keys import PublicKey
from tests.keyfactory import ed25519_text, rsa_pem, rsa_private


def host(subnet: str, seed: int) -> bytes:
    return f"Subnet = {subnet}\nEd25519PublicKey = {ed25519_text(seed)}\n".encode()


POLICY = b'tinc: "1.1"\nprefixes: [10.0.0.0/8]\nmax_files: 50\n'


@dataclass
class FakeRepo:
    commits: dict[str, CommitInfo] = field(default_factory=dict)
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)
    blobs_read: int = 0

    def add(self, sha: str, files: Mapping[str, bytes], parents: tuple[str, ...] = (), **kw: object) -> str:
        signer = str(kw.get("signer", "admin"))
        time = int(kw.get("time", 1_000_000 + len(self.commits) * 60))  # type: ignore[call-overload]
        self.commits[sha] = CommitInfo(sha, b"payload " + sha.encode(), signer.encode(), time, parents, sha)
        self.trees[sha] = dict(files)
        return sha

    def commit(self, sha: str) -> CommitInfo:
        return self.commits[sha]

    def has(self, sha: str) -> bool:
        return sha in self.commits

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return any(c.sha == ancestor for c in self.ancestors(descendant))

    def ancestors(self, tip: str, stop: str | None = None) -> Iterator[CommitInfo]:
        excluded = set() if stop is None else {c.sha for c in self.ancestors(stop)}
        pending, seen = [tip], set(excluded)
        while pending:
            sha = pending.pop()
            if sha in seen:
                continue
            seen.add(sha)
            yield self.commits[sha]
            pending.extend(self.commits[sha].parents)

    def policy_bytes(self, commit: str) -> bytes | None:
        return POLICY

    def host_entries(
        self, commit: str, hosts_dir: str, max_files: int, max_file_bytes: int, sizes: Mapping[str, int] | None = None
    ) -> list[TreeEntry]:
        files = self.trees[commit]
        if len(files) > max_files:
            raise UnsafeTreeError(f"{hosts_dir}/ has {len(files)} entries, over max_files")
        return [TreeEntry(n, EntryKind.FILE, len(d), None, blob_id(d)) for n, d in sorted(files.items())]

    def blob(self, blob: str, limit: int) -> bytes:
        self.blobs_read += 1
        return next(d for files in self.trees.values() for d in files.values() if blob_id(d) == blob)

    def pin_applied(self, sha: str) -> None:
        self.pinned.append(sha)

    def file_at(self, sha: str, path: str, limit: int) -> bytes | None:
        return self.trees[sha].get(path.removeprefix("hosts/")) if path.startswith("hosts/") else None

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        parents = self.commits[sha].parents
        old = self.trees[parents[0]] if parents else {}
        new = self.trees[sha]
        return tuple(sorted(f"hosts/{n}" for n in old.keys() | new.keys() if old.get(n) != new.get(n)))

    def changed_blob_sizes(self, sha: str) -> dict[str, int]:
        new = self.trees[sha]
        return {p: len(new[p.removeprefix("hosts/")]) for p in self.changed_paths(sha) if p[6:] in new}


@dataclass
class FakeHosts:
    files: dict[str, bytes] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # stat changed, bytes maybe not
    writes: list[str] = field(default_factory=list)
    reads: int = 0

    def scan(self, manifest: Mapping[str, FileStat]) -> tuple[dict[str, str], set[str]]:
        installed = {n: blob_id(d) for n, d in self.files.items()}
        stale = {n for n in manifest if n in self.touched or (n in installed and installed[n] != manifest[n].blob)}
        return installed, stale

    def read(self, name: str) -> bytes | None:
        self.reads += 1
        return self.files.get(name)

    def apply(
        self, plan: Plan, manifest: Mapping[str, FileStat], recheck: Collection[str] | None = None
    ) -> dict[str, FileStat]:
        for name in plan.writes:
            self.files[name] = plan.desired[name]
            self.writes.append(name)
        for name in plan.remove:
            self.files.pop(name, None)
            self.writes.append(f"-{name}")
        self.touched.clear()
        kept = {n: FileStat(blob_id(self.files[n]), 0, 0, 0, 0, key) for n, key in plan.learned.items()}
        return {n: kept.get(n) or FileStat(b, 0, 0, 0, 0) for n, b in sorted(plan.ids.items())}


@dataclass
class FakeState:
    state: State = field(default_factory=State)
    saves: int = 0
    audit: list[Applied] = field(default_factory=list)

    def log(self, entries: list[Applied]) -> None:
        self.audit.extend(entries)

    def load(self) -> State:
        return self.state

    def save(self, state: State) -> None:
        self.state = state
        self.saves += 1


@dataclass
class FakeIndex:
    index: dict[Key, Record] = field(default_factory=dict)

    def load(self) -> dict[Key, Record]:
        return dict(self.index)

    def save(self, index: dict[Key, Record]) -> None:
        self.index = dict(index)


@dataclass
class Node:
    repo: FakeRepo = field(default_factory=FakeRepo)
    hosts: FakeHosts = field(default_factory=FakeHosts)
    state: FakeState = field(default_factory=FakeState)
    own: list[tuple[str, PublicKey]] = field(default_factory=list)
    reload_fails: bool = False
    reloads: int = 0
    index: FakeIndex = field(default_factory=FakeIndex)
    settings: Settings = field(default_factory=lambda: Settings(node="alpha", max_clock_skew=3600))

    def check(self, info: CommitInfo, *, tip_only: bool = False) -> Signed:
        if info.signature is None or not info.signature.startswith(b"admin"):
            raise SignatureError(f"commit {info.sha}: not signed by an allowed signer")
        return Signed(info.signature.decode(), "SHA256:fake")

    def from_trust_root(self, tip: CommitInfo) -> list[tuple[CommitInfo, Signed | None]]:
        return [(tip, self.check(tip))]

    def admins_at(self, sha: str | None) -> list[AllowedSigner]:
        return []

    def reload(self) -> Reloaded:
        if self.reload_fails:
            raise ReloadError("tincd did not take the new files")
        self.reloads += 1
        return Reloaded("signal", "SIGHUP to tincd")

    def ports(self) -> Ports:
        return Ports(
            repo=self.repo,
            hosts=self.hosts,
            state=self.state,
            index=self.index,
            authority=self,
            pin_applied=self.repo.pin_applied,
            own_keys=lambda: self.own,
            reload=self.reload,
        )

    def sync(self, tip: str, allow_rewind: bool = False) -> str:
        return run_pass(self.ports(), self.settings, tip, "fake://", allow_rewind=allow_rewind).status

    def snapshot(self) -> tuple[dict[str, bytes], State, list[str], int, list[Applied]]:
        return copy.deepcopy((self.hosts.files, self.state.state, self.repo.pinned, self.reloads, self.state.audit))


def synced(make: Callable[[str, int], bytes]) -> Node:
    """A node that applied c1: alpha and bravo, their files made by ``make``."""
    node = Node()
    node.repo.add("c1", {"alpha": make("10.1.0.0/16", 1), "bravo": make("10.2.0.0/16", 2)})
    assert node.sync("c1") == "applied"
    return node


@pytest.fixture
def node() -> Node:
    return synced(host)


def test_first_sync_applies_and_reloads(node: Node) -> None:
    assert set(node.hosts.files) == {"alpha", "bravo"}
    assert node.state.state.last_applied == "c1" and node.repo.pinned == ["c1"]
    assert node.reloads == 1 and not node.state.state.reload_pending


def test_nothing_new_reads_nothing(node: Node) -> None:
    reads, blobs, saves = node.hosts.reads, node.repo.blobs_read, node.state.saves
    assert node.sync("c1") == "unchanged"
    assert (node.hosts.reads, node.repo.blobs_read, node.state.saves, node.reloads) == (reads, blobs, saves, 1)


def test_a_new_commit_writes_only_what_changed(node: Node) -> None:
    node.repo.add("c2", {**node.repo.trees["c1"], "charlie": host("10.3.0.0/16", 3)}, ("c1",))
    blobs = node.repo.blobs_read
    result = run_pass(node.ports(), node.settings, "c2", "fake://")
    assert (result.status, result.new_commits, result.previous) == ("applied", 1, "c1")
    assert node.hosts.writes[-1:] == ["charlie"] and len(node.hosts.writes) == 3
    assert node.repo.blobs_read == blobs + 1, "unchanged files come from the hosts directory, not the store"
    assert [(e.commit, e.signer, e.files) for e in node.state.audit] == [
        ("c1", "admin", ("hosts/alpha", "hosts/bravo")),
        ("c2", "admin", ("hosts/charlie",)),
    ]


def test_a_touched_identical_file_is_not_a_change(node: Node) -> None:
    node.hosts.touched.add("alpha")
    result = run_pass(node.ports(), node.settings, "c1", "(local store)")
    assert result.status == "unchanged" and not result.plan.changes_files
    assert node.reloads == 1 and len(node.hosts.writes) == 2


def test_drift_is_repaired(node: Node) -> None:
    node.hosts.files["alpha"] = b"Subnet = 10.0.0.0/8\n"
    result = run_pass(node.ports(), node.settings, "c1", "(local store)")
    assert result.status == "applied" and result.plan.update == ("alpha",)
    assert node.hosts.files["alpha"] == node.repo.trees["c1"]["alpha"]


def test_dry_run_changes_nothing(node: Node) -> None:
    node.repo.add("c2", {"alpha": host("10.1.0.0/16", 1)}, ("c1",))
    before = node.snapshot()
    result = run_pass(node.ports(), node.settings, "c2", "fake://", dry_run=True)
    assert result.status == "planned" and result.plan.remove == ("bravo",)
    assert node.snapshot() == before


def refused(node: Node, tip: str, reason: str) -> str:
    before = node.snapshot()
    with pytest.raises(RefusedError) as caught:
        run_pass(node.ports(), node.settings, tip, "fake://")
    assert caught.value.reason == reason, caught.value.message
    assert node.snapshot() == before, "a refusal changed something"
    return caught.value.message


def test_unsigned_tip(node: Node) -> None:
    node.repo.add("c2", node.repo.trees["c1"], ("c1",), signer="stranger")
    refused(node, "c2", "signature")


def test_unsigned_middle_commit_with_verify_all_and_tip(node: Node) -> None:
    node.repo.add("c2", node.repo.trees["c1"], ("c1",), signer="stranger")
    node.repo.add("c3", node.repo.trees["c1"], ("c2",))
    refused(node, "c3", "signature")
    node.settings = replace(node.settings, verify_all=False)
    assert node.sync("c3") == "applied"


def test_rewound_history(node: Node) -> None:
    node.repo.add("other", node.repo.trees["c1"])
    message = refused(node, "other", "non-fast-forward")
    assert "c1" in message
    assert node.sync("other", allow_rewind=True) == "applied"


def test_backdated_commit(node: Node) -> None:
    node.repo.add("c2", node.repo.trees["c1"], ("c1",), time=1_000_000 - 2 * 3600)
    assert "backdated" in refused(node, "c2", "backdated")


def test_unsafe_tree(node: Node) -> None:
    node.repo.add("c2", {f"n{i}": host(f"10.{i}.0.0/16", i) for i in range(51)}, ("c1",))
    refused(node, "c2", "unsafe-tree")


def test_invalid_content(node: Node) -> None:
    node.repo.add("c2", {**node.repo.trees["c1"], "evil": host("10.1.2.0/24", 9)}, ("c1",))
    assert "subnet-overlap" in refused(node, "c2", "invalid-content")


def test_own_key_mismatch_holds_back_only_the_own_file(node: Node) -> None:
    """The repository's alpha names another key than the node holds: the
    rest of the commit is applied, the installed alpha stays as it was, and
    the state says why until the keys agree again."""
    from syncd.tinc.keys import ed25519_from_text

    installed = node.hosts.files["alpha"]
    node.own = [("ed25519_key.priv", ed25519_from_text(ed25519_text(77)))]
    edited = {"alpha": host("10.1.0.0/16", 5), "bravo": host("10.2.0.0/16", 2), "charlie": host("10.3.0.0/16", 3)}
    node.repo.add("c2", edited, ("c1",))
    assert node.sync("c2") == "applied"
    assert node.hosts.files["charlie"] == edited["charlie"] and node.hosts.files["alpha"] == installed
    held = node.state.state.held_back
    assert held is not None and held.startswith("own-key-mismatch: hosts/alpha in commit c2 carries ")
    assert f"Ed25519PublicKey = {ed25519_text(5)}" in held and f"Ed25519PublicKey = {ed25519_text(77)}" in held
    assert str(Path("ed25519_key.priv")) in held
    assert node.state.state.last_applied == "c2" and node.state.state.manifest["alpha"].blob == blob_id(installed)
    # the repository catches up with the node's key: the own file is installed at once
    node.repo.add("c3", {**edited, "alpha": host("10.1.0.0/16", 77)}, ("c2",))
    assert node.sync("c3") == "applied"
    assert node.hosts.files["alpha"] == host("10.1.0.0/16", 77) and node.state.state.held_back is None


def test_own_key_mismatch_on_a_first_sync_installs_no_own_file() -> None:
    from syncd.tinc.keys import ed25519_from_text

    node = Node()
    node.own = [("ed25519_key.priv", ed25519_from_text(ed25519_text(77)))]
    node.repo.add("c1", {"alpha": host("10.1.0.0/16", 1), "bravo": host("10.2.0.0/16", 2)})
    assert node.sync("c1") == "applied"
    assert set(node.hosts.files) == {"bravo"} and set(node.state.state.manifest) == {"bravo"}
    assert node.state.state.held_back is not None
    # the node's key is installed as the repository says: the next pass installs the own file
    node.own = [("ed25519_key.priv", ed25519_from_text(ed25519_text(1)))]
    assert node.sync("c1") == "applied"
    assert set(node.hosts.files) == {"alpha", "bravo"} and node.state.state.held_back is None


def test_a_failed_reload_stays_pending_and_is_retried(node: Node) -> None:
    node.repo.add("c2", {**node.repo.trees["c1"], "charlie": host("10.3.0.0/16", 3)}, ("c1",))
    node.reload_fails = True
    with pytest.raises(ReloadError):
        node.sync("c2")
    assert "charlie" in node.hosts.files and node.state.state.reload_pending
    node.reload_fails = False
    assert node.sync("c2") == "unchanged"
    assert node.reloads == 2 and not node.state.state.reload_pending


# --- what tincd 1.1 appends (syncd.tinc.learnedkey) ------------------------------------------------

TINC_BLOCK = "\n# The following line was automatically added by tinc\nEd25519PublicKey = {}\n"


def legacy(subnet: str, seed: int) -> bytes:
    """A host file with an RSA key only: tinc 1.1 learns its Ed25519 key."""
    return f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}".encode()


def rsa_of(seed: int) -> PublicKey:
    from syncd.tinc.keys import rsa_key

    numbers = rsa_private(2048, seed).public_key().public_numbers()  # as rsa_pem() calls it: the same key
    return rsa_key(numbers.n, numbers.e)


@pytest.fixture
def legacy_node() -> Node:
    return synced(legacy)


def tincd_appends(node: Node, name: str, key: str) -> None:
    node.hosts.files[name] += TINC_BLOCK.format(key).encode()
    node.hosts.touched.add(name)


def test_a_key_tincd_appended_is_kept_and_reported_once(legacy_node: Node) -> None:
    node, key = legacy_node, ed25519_text(2)
    tincd_appends(node, "bravo", key)
    appended = node.hosts.files["bravo"]
    result = run_pass(node.ports(), node.settings, "c1", "(local store)")
    assert (result.status, result.plan.learned, result.learned) == ("unchanged", {"bravo": key}, {"bravo": key})
    assert node.hosts.files["bravo"] == appended and node.hosts.writes == ["alpha", "bravo"]
    assert node.reloads == 1 and node.state.state.manifest["bravo"].learned == key
    assert any(f"Ed25519PublicKey = {key}" in line for line in result.plan.describe())
    # the next passes: nothing new to say, nothing written, never a reload
    for _ in range(3):
        result = run_pass(node.ports(), node.settings, "c1", "(local store)")
        assert (result.status, result.learned, node.reloads) == ("unchanged", {}, 1)
    tincd_appends(node, "bravo", key)  # a key request and a handshake crossed: a second block
    result = run_pass(node.ports(), node.settings, "c1", "(local store)")
    assert (result.status, result.learned, node.reloads, len(node.hosts.writes)) == ("unchanged", {}, 1, 2)


def test_once_the_repository_carries_the_key_it_converges_with_one_reload(legacy_node: Node) -> None:
    node, key = legacy_node, ed25519_text(2)
    tincd_appends(node, "bravo", key)
    assert node.sync("c1") == "unchanged"
    with_key = legacy("10.2.0.0/16", 2) + f"Ed25519PublicKey = {key}\n".encode()
    node.repo.add("c2", {**node.repo.trees["c1"], "bravo": with_key}, ("c1",))
    assert node.sync("c2") == "applied"
    assert node.hosts.files["bravo"] == with_key and node.reloads == 2
    assert node.state.state.manifest["bravo"].learned == ""
    assert node.sync("c2") == "unchanged" and node.reloads == 2


def test_the_repository_taking_the_appended_file_as_it_is_writes_nothing(legacy_node: Node) -> None:
    node, key = legacy_node, ed25519_text(2)
    tincd_appends(node, "bravo", key)
    assert node.sync("c1") == "unchanged"
    node.repo.add("c2", {**node.repo.trees["c1"], "bravo": node.hosts.files["bravo"]}, ("c1",))
    assert node.sync("c2") == "applied"
    assert node.hosts.writes == ["alpha", "bravo"] and node.reloads == 1  # identical bytes: no write, no reload
    assert node.state.state.manifest["bravo"].learned == ""


def test_an_appended_key_beside_the_repositorys_own_is_drift(node: Node) -> None:
    tincd_appends(node, "bravo", ed25519_text(3))  # bravo's repository file names its own Ed25519 key
    result = run_pass(node.ports(), node.settings, "c1", "(local store)")
    assert (result.status, result.plan.update, result.plan.learned) == ("applied", ("bravo",), {})
    assert node.hosts.files["bravo"] == node.repo.trees["c1"]["bravo"]


def test_own_file_without_the_nodes_ed25519_key_is_installed(legacy_node: Node) -> None:
    """A tinc 1.1 node whose Ed25519 key is not in the repository yet: its
    RSA key is there, so it is not cut off (its peers learn the other)."""
    from syncd.tinc.keys import ed25519_from_text

    node = legacy_node
    node.own = [("rsa_key.priv", rsa_of(1)), ("ed25519_key.priv", ed25519_from_text(ed25519_text(1)))]
    node.repo.add("c2", {**node.repo.trees["c1"], "charlie": legacy("10.3.0.0/16", 3)}, ("c1",))
    assert node.sync("c2") == "applied"
    # another RSA key than the node's: the own file is held back, the rest applied
    node.own = [("rsa_key.priv", rsa_of(5)), ("ed25519_key.priv", ed25519_from_text(ed25519_text(1)))]
    node.repo.add("c3", {**node.repo.trees["c2"], "delta": legacy("10.4.0.0/16", 4)}, ("c2",))
    assert node.sync("c3") == "applied" and node.hosts.files["delta"] == legacy("10.4.0.0/16", 4)
    held = node.state.state.held_back
    assert held is not None and "but this node holds an RSA key of 2048 bits" in held and "rsa_key.priv" in held
    # none of the node's keys in the file at all: held back too
    node.own = [("ed25519_key.priv", ed25519_from_text(ed25519_text(1)))]
    assert node.sync("c3") == "unchanged"
    held = node.state.state.held_back
    assert held is not None and f"but this node holds Ed25519PublicKey = {ed25519_text(1)}" in held


def test_an_applied_pass_saves_the_state_once_after_the_reload(node: Node) -> None:
    node.repo.add("c2", {**node.repo.trees["c1"], "charlie": host("10.3.0.0/16", 3)}, ("c1",))
    saves = node.state.saves
    assert node.sync("c2") == "applied"
    assert node.state.saves == saves + 1 and node.reloads == 2
    assert node.state.state.last_applied == "c2" and not node.state.state.reload_pending


@pytest.mark.parametrize("change", ["update", "add", "remove"])
def test_a_pass_stopped_between_its_writes_and_its_save_leaves_the_reload_to_the_next(node: Node, change: str) -> None:
    """The pass dies after writing the files and before tincd's reload and
    the state's save: the next pass finds the files already right, and
    still reloads tincd, which has not read them."""
    tree = dict(node.repo.trees["c1"])
    if change == "update":
        tree["alpha"] = host("10.9.0.0/16", 1)
    elif change == "add":
        tree["charlie"] = host("10.3.0.0/16", 3)
    else:
        del tree["bravo"]
    node.repo.add("c2", tree, ("c1",))
    ports = node.ports()

    def power_cut(tip: str) -> None:
        raise SystemExit(77)

    with pytest.raises(SystemExit):
        run_pass(replace(ports, pin_applied=power_cut), node.settings, "c2", "fake://")
    assert node.state.state.last_applied == "c1" and node.reloads == 1
    assert node.hosts.files == tree
    assert node.sync("c2") == "applied"
    assert node.reloads == 2 and not node.state.state.reload_pending
    assert node.state.state.last_applied == "c2" and set(node.state.state.manifest) == set(tree)
