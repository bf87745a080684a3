"""``syncd verify``: a node's whole acceptance rule, on a repository.

The same code a node runs on every pass (``history.verify_history``: the
rollback and clock guards and every new commit's authority; then
``content.read_and_validate``: the tip's tree as ``syncd check`` sees it),
applied to an update ``OLD..NEW`` of a local repository: in CI, and as a
git server's ``pre-receive`` hook, so that a push every node would refuse is
refused at the server, with the same message.  ``OLD`` missing (a new
branch) is checked as a node's first sync is: from the trust root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from syncd.errors import Reason, RefusedError, UsageError
from syncd.git.repository import GitRepository
from syncd.node.state import State
from syncd.signing.allowed_signers import AllowedSigner
from syncd.signing.commits import CommitInfo
from syncd.sync.content import read_and_validate
from syncd.sync.history import verify_history
from syncd.sync.ports import Settings, Signed
from syncd.sync.trust import RepoAuthority

ZERO = "0" * 40


@dataclass(frozen=True, slots=True)
class Update:
    ref: str
    old: str | None  # None: the ref is new
    new: str | None  # None: the ref is deleted


@dataclass(frozen=True, slots=True)
class Options:
    signers: Sequence[AllowedSigner]
    follow_repo: bool = True
    verify_all: bool = True
    max_clock_skew: float = 3600.0
    branches: tuple[str, ...] = ()  # empty: every branch is checked, and the repository's HEAD is the followed one

    @classmethod
    def of(cls, signers: str, no_follow: bool, verify: str, skew: str, branches: Sequence[str]) -> Options:
        """From the command line's values."""
        from syncd.node.config import read_signers_file
        from syncd.rules.units import parse_duration

        try:
            max_clock_skew = parse_duration(skew)
        except ValueError as exc:
            raise UsageError(f"--max-clock-skew: {exc}") from None
        listed = read_signers_file(Path(signers), "--allowed-signers ")
        return cls(listed, not no_follow, verify == "all", max_clock_skew, tuple(branches))


def run(repo: Path, options: Options, revs: Sequence[str], hook_input: TextIO | None, out: TextIO, err: TextIO) -> int:
    """``syncd verify``: each update checked; a refusal printed as a node
    would word it (git shows a hook's stderr to the pusher).  Exit 1 when
    any update is refused."""
    store = open_repository(repo)
    try:
        if hook_input is not None:
            updates = [u for u in read_updates(hook_input) if relevant(u, options)]
            if not options.branches:  # the branch nodes follow by default: the repository's HEAD
                options = replace(options, branches=store.head_branch())
        elif len(revs) in (1, 2):
            old = store.resolve(revs[0]) if len(revs) == 2 else None
            ref = f"refs/heads/{options.branches[0] if options.branches else 'main'}"
            updates = [Update(ref, old, store.resolve(revs[-1]))]
        else:
            raise UsageError("give NEW, or OLD NEW, or --pre-receive")
        refused = 0
        for update in updates:
            try:
                out.write(describe(update, check_update(store, update, options)) + "\n")
            except RefusedError as exc:
                refused += 1
                err.write(server_refusal(update.ref, exc))
        return 1 if refused else 0
    finally:
        store.close()


# A node's refusal, in a server's words: the server installs nothing, and
# the allowed_signers it was given is the nodes' one.
_NODE_WORDS = (
    ("; nothing was installed", ""),
    ("this node's own allowed_signers", "the nodes' allowed_signers"),
    ("this node's allowed_signers", "the nodes' allowed_signers"),
)


def in_server_words(message: str) -> str:
    """A node's refusal as the server says it."""
    for node, server in _NODE_WORDS:
        message = message.replace(node, server)
    return message


def server_refusal(ref: str, exc: RefusedError) -> str:
    """A refused update as the pusher reads it (git shows each line after
    ``remote:``): a one-line summary naming the ref and the reason, then the
    node's message, line by line (a content refusal: one finding a line)."""
    first, *rest = in_server_words(exc.message).split("\n")
    return "".join(f"{line}\n" for line in (f"syncd verify: {ref}: refused ({exc.reason}): {first}", *rest))


def read_updates(stream: TextIO) -> list[Update]:
    """The ``OLD NEW REF`` lines git gives a pre-receive hook."""
    updates = []
    for number, line in enumerate(stream, 1):
        parts = line.split()
        if len(parts) != 3:
            raise UsageError(f"pre-receive input line {number}: expected 'OLD NEW REF', got {line.strip()!r}")
        old, new, ref = parts
        updates.append(Update(ref, None if old == ZERO else old, None if new == ZERO else new))
    return updates


def check_update(store: GitRepository, update: Update, options: Options) -> list[tuple[CommitInfo, Signed | None]]:
    """Refuse (``RefusedError``, as a node would) or return the new commits
    of ``update`` with who signed them, newest first."""
    if update.new is None:
        branch = update.ref.removeprefix("refs/heads/")
        if branch in options.branches:
            raise RefusedError(
                f"{update.ref}: deleting the branch the nodes follow: every node would fail until it is back",
                reason=Reason.UNAUTHORIZED,
            )
        return []
    old_info = store.commit(update.old) if update.old is not None else None
    # what a node that applied OLD remembers: the rollback anchor and its time
    state = State(last_applied=update.old, commit_time=old_info.committer_time if old_info else None)
    authority = RepoAuthority(store, options.signers, follow_repo=options.follow_repo)
    settings = Settings(
        node="",
        branch=update.ref.removeprefix("refs/heads/"),
        verify_all=options.verify_all,
        max_clock_skew=options.max_clock_skew,
        rewind_command="nothing: a node refuses a rewound history unless its operator allows it once",
    )
    tip = store.commit(update.new)
    history = verify_history(store, authority, settings, state, tip, allow_rewind=False)
    read_and_validate(store, update.new)  # no hosts directory, no parse index: nothing to install
    return history


def relevant(update: Update, options: Options) -> bool:
    if not update.ref.startswith("refs/heads/"):
        return False  # tags and other refs: nodes fetch branches only
    return not options.branches or update.ref.removeprefix("refs/heads/") in options.branches


def describe(update: Update, history: Sequence[tuple[CommitInfo, Signed | None]]) -> str:
    if update.new is None:
        return f"{update.ref}: deleted"
    if not history:
        return f"{update.ref}: {update.new[:12]}: nothing new"
    roles = ", ".join(
        f"{info.sha[:12]} by {signed.name} ({signed.role})" if signed else f"{info.sha[:12]} (not checked)"
        for info, signed in reversed(history)
    )
    return f"{update.ref}: {len(history)} new commit{'s' if len(history) != 1 else ''} accepted: {roles}"


def open_repository(path: Path) -> GitRepository:
    if not (path / "objects").is_dir() and not (path / ".git" / "objects").is_dir():
        raise UsageError(f"{path}: not a git repository")
    return GitRepository.reading(path if (path / "objects").is_dir() else path / ".git")
