"""What a pass talks through, and the values it carries.

``pipeline.run_pass`` touches nothing itself: the repository, the installed
hosts directory, the state file, the parse index, the authority rule, the
node's own keys and tincd are ``Ports``.  ``agent.sync_once`` wires the real
ones (the git store, ``tinc.dir/hosts``, ``state_dir``, ``trust.RepoAuthority``,
a signal); tests wire fakes (tests/test_pipeline.py).  Each check takes only
the ports it uses: ``history.verify_history`` the repository and the
authority, ``content.read_and_validate`` the repository and, where a node has
them, its installed files and its parse index (``syncd verify`` has neither).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from syncd.node.hostsdir import FileStat
    from syncd.node.parseindex import Key as IndexKey
    from syncd.node.parseindex import Record as IndexRecord
    from syncd.node.reload import Reloaded
    from syncd.node.state import Applied, State
    from syncd.rules.plan import Plan
    from syncd.rules.tree import TreeEntry
    from syncd.signing.allowed_signers import AllowedSigner
    from syncd.signing.commits import CommitInfo
    from syncd.tinc.keys import PublicKey


# --- the values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """Who signed a commit, as the audit log names them."""

    name: str  # the allowed_signers principal (or the owner's key comment)
    key: str | None = None  # the key's fingerprint, SHA256:...
    role: str = "admin"  # admin, owner:NAME, join:NAME


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What a pass needs of the node's config, as plain values."""

    node: str
    branch: str = "main"
    verify_all: bool = True  # trust.verify: all (else only the tip)
    max_clock_skew: float = 3600.0
    tinc_dir: Path = Path()
    rewind_command: str = "syncd sync --allow-rewind"


# What a URL of repo.url + repo.mirrors offered, against the applied commit (``mirrors.url_states``)
CURRENT, BEHIND, AHEAD, FORKED, FAILING = "current", "behind", "ahead", "forked", "failing"


@dataclass(frozen=True, slots=True)
class UrlState:
    """One URL in the last pass: the tip it advertised and what that is to
    the applied commit; ``detail`` says why it failed or was refused."""

    url: str  # redacted
    tip: str | None
    state: str  # CURRENT, BEHIND, AHEAD, FORKED or FAILING
    detail: str | None = None
    reason: str | None = None  # the refusal's (errors.Reason), when the tip was refused
    against: str | None = None  # the applied commit the state is relative to

    def to_json(self) -> dict[str, str | None]:
        return {
            "url": self.url,
            "tip": self.tip,
            "state": self.state,
            "detail": self.detail,
            "reason": self.reason,
            "applied": self.against,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> UrlState:
        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        return cls(text("url") or "", text("tip"), text("state") or "", text("detail"), text("reason"), text("applied"))


@dataclass(frozen=True, slots=True)
class SyncResult:
    status: str  # "applied", "unchanged" or "planned" (dry run)
    commit: str
    signer: str | None
    url: str
    plan: Plan
    new_commits: int = 0
    previous: str | None = None  # the commit applied before this sync
    warnings: tuple[str, ...] = field(default_factory=tuple)
    reloaded: Reloaded | None = None
    commit_time: int | None = None  # the committer time of ``commit`` (for staleness)
    # Ed25519 keys tincd appended to installed files (name → key), first seen in this pass
    learned: Mapping[str, str] = field(default_factory=dict)
    duration_s: float | None = None  # seconds the pass took, fetch included (set by ``agent.sync_once``)
    urls: tuple[UrlState, ...] = ()  # each URL's offer in this pass (none: no fetch)

    def __post_init__(self) -> None:
        # a reload that was due and did not happen (tincd not running) is
        # a warning like the findings': `sync` prints it, `run` logs it
        note = self.reloaded.warning if self.reloaded is not None else None
        if note is not None and note not in self.warnings:
            object.__setattr__(self, "warnings", (*self.warnings, note))

    def tip_age(self, now: float) -> float | None:
        return None if self.commit_time is None else now - self.commit_time


# --- the ports ------------------------------------------------------------------------------


class Repository(Protocol):
    """The verified local store, read (``git.repository.GitRepository``)."""

    def commit(self, sha: str) -> CommitInfo: ...
    def has(self, sha: str) -> bool: ...
    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...
    def ancestors(self, tip: str, stop: str | None = None) -> Iterator[CommitInfo]: ...
    def policy_bytes(self, commit: str) -> bytes | None: ...

    def host_entries(
        self, commit: str, hosts_dir: str, max_files: int, max_file_bytes: int, sizes: Mapping[str, int] | None = None
    ) -> list[TreeEntry]:
        """The hosts directory's entries with their blob ids and sizes,
        checked before anything is read (``sizes``: blob id → size already
        known); ``data`` is not filled in."""
        ...

    def blob(self, blob: str, limit: int) -> bytes: ...

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        """The paths ``sha`` changes against its first parent (all of its
        files for a root commit)."""
        ...

    def changed_blob_sizes(self, sha: str) -> dict[str, int]:
        """The size of each blob ``sha`` adds or changes against its first
        parent, anywhere in its tree, by path."""
        ...

    def file_at(self, sha: str, path: str, limit: int) -> bytes | None:
        """The regular file at ``path`` in commit ``sha``, or None."""
        ...


class InstalledHosts(Protocol):
    """The installed hosts directory (``node.hostsdir.HostsDir``)."""

    def scan(self, manifest: Mapping[str, FileStat]) -> tuple[dict[str, str], set[str]]:
        """name → blob id of each host file there, and the managed names
        whose stat no longer matches the manifest."""
        ...

    def read(self, name: str) -> bytes | None: ...

    def apply(
        self, plan: Plan, manifest: Mapping[str, FileStat], recheck: Collection[str] | None = None
    ) -> dict[str, FileStat]:
        """Carry out ``plan``; the new manifest.  ``recheck``: the names
        ``scan`` found stale (None: every name is looked at again)."""
        ...


class StateFile(Protocol):
    """What the node remembers and its audit log (``node.state.StateDir``)."""

    def load(self) -> State: ...
    def save(self, state: State) -> None: ...
    def log(self, entries: list[Applied]) -> None: ...


class ParseIndex(Protocol):
    """What validation needs of each host file, by blob id
    (``node.parseindex.ParseIndexFile``)."""

    def load(self) -> dict[IndexKey, IndexRecord]: ...
    def save(self, index: dict[IndexKey, IndexRecord]) -> None: ...


class Authority(Protocol):
    """Who may change what (``trust.RepoAuthority``, docs/trust.md)."""

    def check(self, info: CommitInfo, *, tip_only: bool = False) -> Signed:
        """Who signed ``info`` and in which role, or a refusal."""
        ...

    def from_trust_root(self, tip: CommitInfo) -> list[tuple[CommitInfo, Signed | None]]:
        """A first sync: the commits from the trust root to ``tip``, newest
        first, each authorized."""
        ...

    def admins_at(self, sha: str | None) -> Sequence[AllowedSigner]:
        """The admins at commit ``sha``: whom a child of it needs as signer."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Ports:
    repo: Repository
    hosts: InstalledHosts
    state: StateFile
    index: ParseIndex
    authority: Authority
    pin_applied: Callable[[str], None]  # keep the applied commit referenced in the store (git.store.GitStore)
    own_keys: Callable[[], list[tuple[str, PublicKey]]]  # (file, public key) of the node's private keys
    reload: Callable[[], Reloaded]
    # every commit this node applied (the audit log), read only for a tip that does not descend from the last
    applied_log: Callable[[], Collection[str]] = frozenset
