"""The pipeline against fakes: no git, no disk, no tincd.

Every outcome of ``pipeline.run_pass``: applied, unchanged (also for a
touched but identical file), planned, and a refusal at each step (the tip's
signature, a middle commit's signature, a rewound history, a backdated
commit, an unsafe tree, invalid content), a foreign own key held back, and
a failed reload.  A refusal leaves the fakes exactly as they were."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from syncd.commits import CommitInfo
from syncd.errors import RefusedError, ReloadError, SignatureError, UnsafeTreeError
from syncd.hostsdir import FileStat
from syncd.keys import PublicKey
from syncd.parseindex import Key, Record
from syncd.pipeline import Applied, Ports, Rules, Signed, run_pass
from syncd.plan import Plan, blob_id
from syncd.reload import Reloaded
from syncd.signers import AllowedSigner
from syncd.state import State
from syncd.validate import EntryKind, TreeEntry
from tests.keyfactory import ed25519_text


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

    def apply(self, plan: Plan, manifest: Mapping[str, FileStat]) -> dict[str, FileStat]:
        for name in plan.writes:
            self.files[name] = plan.desired[name]
            self.writes.append(name)
        for name in plan.remove:
            self.files.pop(name, None)
            self.writes.append(f"-{name}")
        self.touched.clear()
        return {n: FileStat(b, 0, 0, 0, 0) for n, b in sorted(plan.ids.items())}


@dataclass
class FakeState:
    state: State = field(default_factory=State)
    saves: int = 0
    audit: list[Applied] = field(default_factory=list)
    index: dict[Key, Record] = field(default_factory=dict)

    def log(self, entries: list[Applied]) -> None:
        self.audit.extend(entries)

    def load_index(self) -> dict[Key, Record]:
        return dict(self.index)

    def save_index(self, index: dict[Key, Record]) -> None:
        self.index = dict(index)

    def load(self) -> State:
        return self.state

    def save(self, state: State) -> None:
        self.state = state
        self.saves += 1


@dataclass
class Node:
    repo: FakeRepo = field(default_factory=FakeRepo)
    hosts: FakeHosts = field(default_factory=FakeHosts)
    state: FakeState = field(default_factory=FakeState)
    own: list[tuple[str, PublicKey]] = field(default_factory=list)
    reload_fails: bool = False
    reloads: int = 0
    rules: Rules = field(default_factory=lambda: Rules(node="alpha", max_clock_skew=3600))

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
        return Ports(self.repo, self.hosts, self.state, self, lambda: self.own, self.reload)

    def sync(self, tip: str, allow_rewind: bool = False) -> str:
        return run_pass(self.ports(), self.rules, tip, "fake://", allow_rewind=allow_rewind).status

    def snapshot(self) -> tuple[dict[str, bytes], State, list[str], int, list[Applied]]:
        return copy.deepcopy((self.hosts.files, self.state.state, self.repo.pinned, self.reloads, self.state.audit))


@pytest.fixture
def node() -> Node:
    node = Node()
    node.repo.add("c1", {"alpha": host("10.1.0.0/16", 1), "bravo": host("10.2.0.0/16", 2)})
    assert node.sync("c1") == "applied"
    return node


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
    result = run_pass(node.ports(), node.rules, "c2", "fake://")
    assert (result.status, result.new_commits, result.previous) == ("applied", 1, "c1")
    assert node.hosts.writes[-1:] == ["charlie"] and len(node.hosts.writes) == 3
    assert node.repo.blobs_read == blobs + 1, "unchanged files come from the hosts directory, not the store"
    assert [(e.commit, e.signer, e.files) for e in node.state.audit] == [
        ("c1", "admin", ("hosts/alpha", "hosts/bravo")),
        ("c2", "admin", ("hosts/charlie",)),
    ]


def test_a_touched_identical_file_is_not_a_change(node: Node) -> None:
    node.hosts.touched.add("alpha")
    result = run_pass(node.ports(), node.rules, "c1", "(local store)")
    assert result.status == "unchanged" and not result.plan.changes_files
    assert node.reloads == 1 and len(node.hosts.writes) == 2


def test_drift_is_repaired(node: Node) -> None:
    node.hosts.files["alpha"] = b"Subnet = 10.0.0.0/8\n"
    result = run_pass(node.ports(), node.rules, "c1", "(local store)")
    assert result.status == "applied" and result.plan.update == ("alpha",)
    assert node.hosts.files["alpha"] == node.repo.trees["c1"]["alpha"]


def test_dry_run_changes_nothing(node: Node) -> None:
    node.repo.add("c2", {"alpha": host("10.1.0.0/16", 1)}, ("c1",))
    before = node.snapshot()
    result = run_pass(node.ports(), node.rules, "c2", "fake://", dry_run=True)
    assert result.status == "planned" and result.plan.remove == ("bravo",)
    assert node.snapshot() == before


def refused(node: Node, tip: str, reason: str) -> str:
    before = node.snapshot()
    with pytest.raises(RefusedError) as caught:
        run_pass(node.ports(), node.rules, tip, "fake://")
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
    node.rules = replace(node.rules, verify_all=False)
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
    from syncd.keys import ed25519_from_text

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
    from syncd.keys import ed25519_from_text

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
