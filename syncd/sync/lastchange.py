"""The last signed change of each host file, from a repository's history.

A host file's last signed change is the newest commit (by committer time)
that changed ``HOSTS/NAME`` against its parent and carries a signature that
verifies (namespace ``git``, in git's own encoding).  Merges are skipped:
the commit that made a change on a branch names its author, the merge only
the admin who merged it.  Unsigned commits are no signed change, so an edit
nobody signed never renews a node.

Who signed it, and in which role, is the authority rule's own answer
(``trust.RepoAuthority``: the same code a node runs on every pass), from
the trust root the given allowed_signers names.  When there is none, or the
history is refused, each change still names its key's fingerprint and the
reason the roles are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from syncd.errors import SyncdError
from syncd.rules.authority import host_name
from syncd.signing.allowed_signers import AllowedSigner
from syncd.signing.commits import signing_key
from syncd.signing.sshsig import fingerprint
from syncd.sync.ports import Repository, Signed
from syncd.sync.trust import RepoAuthority


@dataclass(frozen=True, slots=True)
class LastChange:
    """The newest signed commit that changed one host file."""

    commit: str
    when: int  # committer time, seconds since the epoch
    summary: str
    key: str  # the signing key's fingerprint
    signer: str | None = None  # principal or owner comment; None: roles unknown
    role: str | None = None  # admin, owner:NAME, join:NAME; None: roles unknown


@dataclass(frozen=True, slots=True)
class History:
    """What the history says of the host files at ``tip``."""

    tip: str | None  # None: no history at all (a plain directory)
    changes: dict[str, LastChange] = field(default_factory=dict)  # name -> its last signed change
    at_tip: frozenset[str] = frozenset()  # the host files the tip has
    roles_note: str | None = None  # why signers and roles are unknown, if they are

    @property
    def known(self) -> bool:
        return self.tip is not None


NO_HISTORY = History(None, roles_note="no git history")


def last_changes(
    repo: Repository,
    tip: str,
    hosts_dir: str,
    admins: Sequence[AllowedSigner] | None,
    *,
    follow_repo: bool = True,
) -> History:
    """The last signed change of every host file ever in ``tip``'s history.

    ``admins``: the trust root (a node's allowed_signers); None: roles are
    not worked out, each change names its key only."""
    roles, note = _roles(repo, tip, admins, follow_repo)
    changes: dict[str, LastChange] = {}
    for info in repo.ancestors(tip):
        if len(info.parents) > 1:
            continue
        names = [n for p in repo.changed_paths(info.sha) if (n := host_name(p, hosts_dir)) is not None]
        newer = [n for n in names if n not in changes or changes[n].when < info.committer_time]
        if not newer:
            continue
        try:
            key = fingerprint(signing_key(info))
        except SyncdError:
            continue  # not signed, or not verifiable: no signed change
        signed = roles.get(info.sha)
        change = LastChange(
            info.sha,
            info.committer_time,
            info.summary,
            key,
            signed.name if signed else None,
            signed.role if signed else None,
        )
        for name in newer:
            changes[name] = change
    from syncd.rules.policy import policy_of

    policy, _ = policy_of(repo.policy_bytes(tip))
    entries = repo.host_entries(tip, hosts_dir, policy.max_files, policy.max_file_bytes)
    return History(tip, changes, frozenset(e.name for e in entries), note)


def _roles(
    repo: Repository, tip: str, admins: Sequence[AllowedSigner] | None, follow_repo: bool
) -> tuple[dict[str, Signed], str | None]:
    """Who signed each commit from the trust root on, in which role; or
    why that is unknown."""
    if admins is None:
        return {}, "no allowed_signers: signers are named by key only"
    try:
        verified = RepoAuthority(repo, admins, follow_repo=follow_repo).from_trust_root(repo.commit(tip))
    except SyncdError as exc:
        return {}, f"the history is not accepted: {exc.message.removesuffix('; nothing was installed')}"
    return {info.sha: signed for info, signed in verified if signed is not None}, None
