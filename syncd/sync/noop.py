"""What an unchanged pass needs of the store, without opening it.

When every URL advertises the applied commit (or a tip the last pass
settled against it, ``mirrors``), ``agent.sync_once`` runs the pass
(``mirrors.apply_newest`` and ``pipeline.run_pass``, the very code of every
pass) against ``AppliedOnly``, a repository that knows only the applied
commit, from the state file, and an authority that knows nothing.  That is
exact for a pass that changes nothing: ``run_pass`` reads of a tip equal to
the last applied commit its id and committer date alone (the state records
both when it applies the commit), and the authority is never asked (no new
commit).  Any other question (a new tip, drift of an installed file that
must be read, a tip to compare) raises ``NotUnchanged`` before anything is
written: the caller then runs the whole pass, fetch included, as if this
one had not been tried.

``store_refs_agree`` checks that the store's own refs are what the fetch
path would leave them: the fetch path writes ``syncd-fetched`` (the tip of
the last URL offering one) and reads nothing else a no-op could change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from syncd.git.refnames import APPLIED_REF_NAME, FETCHED_REF_NAME
from syncd.signing.commits import CommitInfo

if TYPE_CHECKING:
    from syncd.node.state import Applied, State
    from syncd.rules.tree import TreeEntry
    from syncd.signing.allowed_signers import AllowedSigner
    from syncd.sync.ports import Signed, StateFile

_SHA = re.compile(r"[0-9a-f]{40}\n")


class NotUnchanged(BaseException):
    """The pass needs more than the applied commit: run it in full."""


def _more(*_: object, **__: object) -> NoReturn:
    raise NotUnchanged


class AppliedOnly:
    """A ``ports.Repository`` that knows the applied commit's id and date."""

    def __init__(self, applied: str, committer_time: int) -> None:
        self.applied, self.committer_time = applied, committer_time

    def commit(self, sha: str) -> CommitInfo:
        if sha != self.applied:
            raise NotUnchanged
        return CommitInfo(sha, b"", None, self.committer_time, (), "")

    def has(self, sha: str) -> bool:
        if sha != self.applied:
            raise NotUnchanged
        return True

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        _more()

    def ancestors(self, tip: str, stop: str | None = None) -> Iterator[CommitInfo]:
        _more()

    def policy_bytes(self, commit: str) -> bytes | None:
        _more()

    def host_entries(
        self, commit: str, hosts_dir: str, max_files: int, max_file_bytes: int, sizes: Mapping[str, int] | None = None
    ) -> list[TreeEntry]:
        _more()

    def blob(self, blob: str, limit: int) -> bytes:
        _more()

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        _more()

    def changed_blob_sizes(self, sha: str) -> dict[str, int]:
        _more()

    def file_at(self, sha: str, path: str, limit: int) -> bytes | None:
        _more()


class NoAuthority:
    """A ``ports.Authority`` for a pass with no new commit: never asked."""

    def check(self, info: CommitInfo, *, tip_only: bool = False) -> Signed:
        _more()

    def from_trust_root(self, tip: CommitInfo) -> list[tuple[CommitInfo, Signed | None]]:
        _more()

    def admins_at(self, sha: str | None) -> Sequence[AllowedSigner]:
        _more()


def loose_ref(store: Path, name: str) -> str | None:
    """The commit a loose ref of the store names; None when it is not a
    plain loose ref (missing, packed, symbolic, unreadable)."""
    try:
        text = (store / name).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return text[:40] if _SHA.fullmatch(text) else None


def store_refs_agree(store: Path, applied: str, tips: Sequence[str | None]) -> bool:
    """The store's applied ref names ``applied`` and its fetched ref the tip
    of the last URL offering one (what the fetch path would write)."""
    offered = [t for t in tips if t is not None]
    if not offered or loose_ref(store, APPLIED_REF_NAME) != applied:
        return False
    return loose_ref(store, FETCHED_REF_NAME) == offered[-1]


class LoadedOnce:
    """A ``ports.StateFile`` over ``states`` that reads the state file once,
    for a caller that holds the network's lock (nobody else writes it)."""

    def __init__(self, states: StateFile, state: State) -> None:
        self.states, self.state = states, state

    def load(self) -> State:
        return self.state

    def save(self, state: State) -> None:
        self.states.save(state)
        self.state = state

    def log(self, entries: list[Applied]) -> None:
        self.states.log(entries)
