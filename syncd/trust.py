"""Who may change what, on a real history (DESIGN.md §6a).

``authority.authorize`` is the rule; this module feeds it from the store:
the key that made a commit's signature (the signature verified, in git's own
encoding), the roles at the commit's first parent (its ``allowed_signers``
when ``trust.follow_repo``, else the node's own; the owner lines of its host
files; its policy's ``join``) and what the commit changes.  Roles are read
once at the first commit and then carried forward commit by commit, reading
only the files each commit changes (and the parse index knows the owner
lines of every file the node validated before).

The node's own allowed_signers is the trust root.  On a first sync (or after
``--allow-rewind``) the newest commit on the tip's first-parent chain signed
by a key in it, and itself accepted at its parent (or a root commit), is
where trust starts; every commit after it must be accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from syncd.authority import ADMIN, SIGNATURE, Change, Roles, admin_principal, authorize, host_name
from syncd.commits import CommitInfo
from syncd.errors import AllowedSignersError, RefusedError, SignatureError
from syncd.owners import fingerprint, parse_owners
from syncd.signers import AllowedSigner, parse_allowed_signers
from syncd.sshsig import parse_signature, verify

if TYPE_CHECKING:
    from syncd.pipeline import Repository, Signed

REPO_SIGNERS = "allowed_signers"  # the repository's own, at its root
MAX_SIGNERS_BYTES = 1 << 20
OwnerLookup = Callable[[str], tuple[frozenset[bytes], dict[bytes, str]] | None]


def signing_key(info: CommitInfo) -> bytes:
    """The key that made ``info``'s signature, once the signature verifies
    (namespace ``git``) in git's own encoding; ``SignatureError`` else."""
    what = f"commit {info.sha[:12]} ({info.summary!r})"
    if info.noncanonical is not None:
        raise SignatureError(
            f"{what}: {info.noncanonical}: a copy of a signed commit re-encoded by the server or a mirror; "
            "nothing was installed"
        )
    if info.signature is None:
        raise SignatureError(f"{what}: not signed; nothing was installed")
    try:
        sig = parse_signature(info.signature)
        verify(sig, info.payload, "git")
    except SignatureError as exc:
        raise SignatureError(f"{what}: {exc.message}; nothing was installed") from None
    return sig.public_key


class Authority:
    """Authorizes commits of one repository for one pass.

    A ``check`` with ``tip_only`` (``trust.verify: tip``) takes the admins
    from the node's own allowed_signers: the repository's counts only where
    every commit before it was checked."""

    def __init__(
        self,
        repo: Repository,
        local: Sequence[AllowedSigner],
        *,
        follow_repo: bool = True,
        owners_of: OwnerLookup | None = None,
    ) -> None:
        self.repo = repo
        self.local = tuple(local)
        self.follow_repo = follow_repo
        self.owners_of = owners_of or (lambda _blob: None)
        self._roles: dict[str | None, Roles] = {}

    # --- one commit -----------------------------------------------------------------

    def check(self, info: CommitInfo, *, tip_only: bool = False) -> Signed:
        """Who signed ``info`` and in which role; ``SignatureError`` (no
        role at all) or ``RefusedError`` (``unauthorized``) naming the commit,
        the signer, the role and the first path outside it."""
        from syncd.pipeline import Signed

        key = signing_key(info)
        parent = info.parents[0] if info.parents else None
        roles = self.roles_at(parent)
        if tip_only and roles.admins != self.local:
            # nothing checked the commits under the tip, so anyone who can push
            # may have written the allowed_signers they hold: the node's own counts
            roles = dataclasses.replace(roles, admins=self.local)
        change = self._change(info, roles)
        decision = authorize(roles, change, key, info.committer_time)
        if decision.ok and tip_only and decision.role != ADMIN:
            message = f"signed by {decision.signer}: with trust.verify: tip only an admin's commit is accepted"
            raise RefusedError(f"commit {info.sha[:12]} ({info.summary!r}): {message}", reason="unauthorized")
        if not decision.ok:
            note = self._not_admin_here(roles, key, info.committer_time)
            text = f"commit {info.sha[:12]} ({info.summary!r}): {decision.message}{note}; nothing was installed"
            if decision.reason == SIGNATURE:
                raise SignatureError(text)
            raise RefusedError(text, reason="unauthorized")
        self._roles[info.sha] = self._advance(roles, info, change)
        name = decision.signer.rsplit(" (", 1)[0]
        return Signed(name, fingerprint(key), decision.role)

    def _not_admin_here(self, roles: Roles, key: bytes, when: int) -> str:
        """A key the node's own file makes an admin, refused because the
        repository's allowed_signers (rotated) says otherwise: say so."""
        principal = admin_principal(self.local, key, when) if roles.admins != self.local else None
        if principal is None or admin_principal(roles.admins, key, when) is not None:
            return ""
        return (
            f"; {principal} is an admin in this node's own allowed_signers, but not in the repository's "
            f"{REPO_SIGNERS} at the parent commit, which counts (trust.follow_repo)"
        )

    def _change(self, info: CommitInfo, roles: Roles) -> Change:
        paths = self.repo.changed_paths(info.sha)
        added: dict[str, frozenset[bytes]] = {}
        comments: dict[bytes, str] = {}
        for path in paths:
            name = host_name(path, roles.hosts_dir)
            if name is not None and name not in roles.owners:
                data = self.repo.file_at(info.sha, path, MAX_SIGNERS_BYTES)
                if data is not None:
                    parsed = parse_owners(path, data)
                    added[name] = parsed.keys
                    comments.update((o.key, o.comment) for o in parsed.owners if o.comment and o.key not in comments)
        return Change(len(info.parents), paths, added, comments)

    # --- roles ------------------------------------------------------------------------

    def roles_at(self, sha: str | None) -> Roles:
        """The roles at commit ``sha`` (None: before the root commit, where
        only the node's own admins count)."""
        known = self._roles.get(sha)
        if known is not None:
            return known
        roles = Roles(self.local, {}) if sha is None else self._read_roles(sha)
        self._roles[sha] = roles
        return roles

    def _read_roles(self, sha: str) -> Roles:
        from syncd.tree import EntryKind, policy_of

        policy, _ = policy_of(self.repo.policy_bytes(sha))
        owners: dict[str, frozenset[bytes]] = {}
        comments: dict[bytes, str] = {}
        entries = self.repo.host_entries(sha, policy.hosts_dir, policy.max_files, policy.max_file_bytes)
        for entry in entries:
            if entry.kind is not EntryKind.FILE or entry.blob is None or entry.size > policy.max_file_bytes:
                continue
            found = self.owners_of(entry.blob)
            if found is None:
                parsed = parse_owners(entry.name, self.repo.blob(entry.blob, policy.max_file_bytes))
                found = parsed.keys, {o.key: o.comment for o in parsed.owners if o.comment}
            owners[entry.name] = found[0]
            for key, comment in found[1].items():
                comments.setdefault(key, comment)
        return Roles(self._admins(sha), owners, policy.join, policy.hosts_dir, comments)

    def _advance(self, roles: Roles, info: CommitInfo, change: Change) -> Roles:
        """The roles at ``info`` from those at its parent and what it changed."""
        if any(host_name(p, roles.hosts_dir) is None for p in change.paths):
            return self._read_roles(info.sha)  # the policy or the admins may have changed
        owners = dict(roles.owners)
        comments = dict(roles.comments)
        dropped: set[bytes] = set()
        for path in change.paths:
            name = host_name(path, roles.hosts_dir)
            assert name is not None
            before = owners.pop(name, frozenset())
            data = self.repo.file_at(info.sha, path, MAX_SIGNERS_BYTES)
            if data is None:
                dropped.update(before)
                continue
            parsed = parse_owners(path, data)
            owners[name] = parsed.keys
            dropped.update(before - parsed.keys)
            # an owner who rewrites its own line is named by what it wrote last
            comments.update((o.key, o.comment) for o in parsed.owners if o.comment)
        # a key rotated out of every file has no name at the next commit, just
        # as when the roles there are read afresh (the next pass)
        for key in dropped - set().union(*owners.values()) if dropped else ():
            comments.pop(key, None)
        return Roles(roles.admins, owners, roles.join, roles.hosts_dir, comments)

    def _admins(self, sha: str) -> tuple[AllowedSigner, ...]:
        if not self.follow_repo:
            return self.local
        data = self.repo.file_at(sha, REPO_SIGNERS, MAX_SIGNERS_BYTES)
        if data is None:
            return self.local
        try:
            return tuple(parse_allowed_signers(data, f"{REPO_SIGNERS} of commit {sha[:12]}"))
        except AllowedSignersError as exc:
            raise RefusedError(
                f"commit {sha[:12]}: its {REPO_SIGNERS} does not parse: {exc.message}; nothing was installed",
                reason="invalid-content",
            ) from None

    # --- where trust starts ---------------------------------------------------------------

    def from_trust_root(self, tip: CommitInfo) -> list[tuple[CommitInfo, Signed | None]]:
        """A first sync: find the trust root R on the tip's first-parent
        chain (newest first), then authorize every commit after it; returns
        the commits from R to the tip, newest first, with their signers."""
        chain: list[CommitInfo] = []
        info: CommitInfo | None = tip
        while info is not None:
            chain.append(info)
            if self._is_trust_root(info):
                break
            info = self.repo.commit(info.parents[0]) if info.parents else None
        else:
            raise SignatureError(
                f"commit {tip.sha[:12]} ({tip.summary!r}): no commit on its history is signed by a key of this "
                "node's allowed_signers and accepted at its parent: nothing to trust; nothing was installed"
            )
        root = chain[-1]
        trusted = self.check(root)
        later = [c for c in self.repo.ancestors(tip.sha, root.sha) if c.sha != root.sha]
        history = [(c, self.check(c)) for c in topological(later)]
        return [*reversed(history), (root, trusted)]

    def _is_trust_root(self, info: CommitInfo) -> bool:
        try:
            key = signing_key(info)
        except SignatureError:
            return False
        if admin_principal(self.local, key, info.committer_time) is None:
            return False
        if not info.parents:
            return True
        try:
            self.check(info)
        except (SignatureError, RefusedError):
            return False
        return True


def topological(commits: Sequence[CommitInfo]) -> list[CommitInfo]:
    """``commits`` parents first (a linear range is just reversed)."""
    inside = {c.sha: c for c in commits}
    done: set[str] = set()
    ordered: list[CommitInfo] = []
    for start in reversed(commits):
        stack = [(start, False)]
        while stack:
            commit, expanded = stack.pop()
            if commit.sha in done:
                continue
            if expanded:
                done.add(commit.sha)
                ordered.append(commit)
                continue
            stack.append((commit, True))
            stack.extend((inside[p], False) for p in commit.parents if p in inside and p not in done)
    return ordered
