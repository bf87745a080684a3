"""Who may change what, on a real history (docs/trust.md).

``authority.authorize`` is the rule; this module feeds it from the store:
the key that made a commit's signature (the signature verified, in git's own
encoding), the roles at the commit's parent (its ``allowed_signers``
when ``trust.follow_repo``, else the node's own; the owner lines of its host
files; its policy's ``join``) and what the commit changes.  Roles are read
once at the first commit and then carried forward commit by commit, reading
only the files each commit changes (and the parse index knows the owner
lines of every file the node validated before).  A merge's signer must be
an admin at every parent; one whose ``allowed_signers`` leaves no admin key
valid now is refused (``invalid-content``): no admin could sign again.

The node's own allowed_signers is the trust root.  On a first sync (or after
``--allow-rewind``) the newest commit on the tip's first-parent chain signed
by a key in it, and itself accepted at its parent (or a root commit), is
where trust starts; every commit after it must be accepted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from syncd.errors import AllowedSignersError, Reason, RefusedError, SignatureError
from syncd.rules.authority import (
    ADMIN,
    Change,
    Decision,
    Roles,
    admin_principal,
    authorize,
    host_name,
    lockout_detail,
    utc_stamp,
    valid_admins,
)
from syncd.rules.owners import owner_keys
from syncd.signing.allowed_signers import AllowedSigner, parse_allowed_signers, why_not_allowed
from syncd.signing.commits import CommitInfo, signing_key
from syncd.signing.sshsig import fingerprint
from syncd.sync.history import topological
from syncd.sync.ports import Signed

if TYPE_CHECKING:
    from syncd.sync.ports import Repository

REPO_SIGNERS = "allowed_signers"  # the repository's own, at its root
MAX_SIGNERS_BYTES = 1 << 20
OwnerLookup = Callable[[str], tuple[frozenset[bytes], dict[bytes, str]] | None]


class RepoAuthority:
    """Authorizes commits of one repository for one pass (the
    ``ports.Authority`` of a node and of ``syncd verify``).

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
        sizes_of: Callable[[], Mapping[str, int]] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.now = now  # the verifier's clock: an admin list with no key valid now is a lock-out
        self.local = tuple(local)
        self.follow_repo = follow_repo
        self.owners_of = owners_of or (lambda _blob: None)
        self.sizes_of = sizes_of  # blob -> size, of blobs whose owners ``owners_of`` knows
        self._roles: dict[str | None, Roles] = {}
        self._later: dict[str | None, tuple[str | None, CommitInfo, tuple[str, ...]]] = {}
        self._admins_memo: dict[str, tuple[AllowedSigner, ...]] = {}
        self._admins_parsed: dict[bytes, tuple[AllowedSigner, ...]] = {}  # by the file's content

    # --- one commit -----------------------------------------------------------------

    def check(self, info: CommitInfo, *, tip_only: bool = False) -> Signed:
        """Who signed ``info`` and in which role; ``SignatureError`` (no
        role at all) or ``RefusedError`` (``unauthorized``) naming the commit,
        the signer, the role and the first path outside it.

        An admin's commit needs only the admins at its parent (one small
        file); the owners of every host file are read only when a commit is
        signed by someone else."""
        key = signing_key(info)
        parent = info.parents[0] if info.parents else None
        paths = self.repo.changed_paths(info.sha)
        # with tip_only, nothing checked the commits under the tip: anyone who
        # can push may have written the allowed_signers they hold, so only the
        # node's own counts
        admins = self.local if tip_only else self.admins_at(parent)
        principal = admin_principal(admins, key, info.committer_time)
        self._later[info.sha] = (parent, info, paths)  # the roles at info, if a child asks
        if principal is not None:
            if not tip_only:
                self._admin_at_every_parent(info, key, principal, paths)
            if REPO_SIGNERS in paths:
                self._no_lockout(info)  # and a root allowed_signers that does not parse: invalid-content
            return Signed(principal, fingerprint(key), ADMIN)
        roles = self.roles_at(parent)
        if tip_only and roles.admins != self.local:
            roles = dataclasses.replace(roles, admins=self.local)
        decision = authorize(roles, self._change(info, roles, paths), key, info.committer_time)
        if decision.ok and tip_only:
            message = f"signed by {decision.signer}: with trust.verify: tip only an admin's commit is accepted"
            raise RefusedError(f"commit {info.sha[:12]} ({info.summary!r}): {message}", reason=Reason.UNAUTHORIZED)
        if not decision.ok:
            self._refuse(info, roles, key, decision)
        name = decision.signer.rsplit(" (", 1)[0]
        return Signed(name, fingerprint(key), decision.role)

    def _admin_at_every_parent(self, info: CommitInfo, key: bytes, principal: str, paths: tuple[str, ...]) -> None:
        """A merge by an admin of its first parent: its signer must be an
        admin at each other parent too (docs/trust.md, "Every parent")."""
        for number, other in enumerate(info.parents[1:], 2):
            if admin_principal(self.admins_at(other), key, info.committer_time) is None:
                roles = self.roles_at(other)
                change = Change(len(info.parents), paths)
                decision = authorize(roles, change, key, info.committer_time, number)
                named = f"{principal} ({fingerprint(key)})"  # as the first parent names it
                message = decision.message.replace(decision.signer, named, 1)
                self._refuse(info, roles, key, dataclasses.replace(decision, signer=named, message=message))

    def _refuse(self, info: CommitInfo, roles: Roles, key: bytes, decision: Decision) -> NoReturn:
        note = self._not_admin_here(roles, key, info.committer_time)
        text = f"commit {info.sha[:12]} ({info.summary!r}): {decision.message}{note}; nothing was installed"
        if decision.reason is Reason.SIGNATURE:
            raise SignatureError(text)
        raise RefusedError(text, reason=Reason.UNAUTHORIZED)

    def _no_lockout(self, info: CommitInfo) -> None:
        """After a commit that changes the repository's admins, some admin
        key must be valid now: else no admin could ever sign again."""
        admins = self.admins_at(info.sha)
        if admins is self.local:  # the repository's file is gone, or not followed: the node's own counts
            return
        now = self.now()
        if valid_admins(admins, now):
            return
        raise RefusedError(
            f"commit {info.sha[:12]} ({info.summary!r}): after it no admin key is valid now ({utc_stamp(now)}): "
            f"{lockout_detail(admins, now)}; no admin could sign another commit, so it would lock the network "
            "out; nothing was installed",
            reason=Reason.INVALID_CONTENT,
        )

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

    def admins_at(self, sha: str | None) -> tuple[AllowedSigner, ...]:
        if sha is None:
            return self.local
        known = self._admins_memo.get(sha)
        if known is None:
            step = self._later.get(sha)  # a commit checked here: its parent's admins, unless it changed the file
            parent = step[0] if step is not None and REPO_SIGNERS not in step[2] else None
            inherited = self._admins_memo.get(parent) if parent is not None else None
            known = self._admins_memo[sha] = inherited if inherited is not None else self._admins(sha)
        return known

    def _change(self, info: CommitInfo, roles: Roles, paths: tuple[str, ...]) -> Change:
        names = [n for p in paths if (n := host_name(p, roles.hosts_dir)) is not None and n not in roles.owners]
        added: dict[str, frozenset[bytes]] = {}
        comments: dict[bytes, str] = {}
        for name, data in self._host_files(info.sha, roles.hosts_dir, names).items():
            if data is not None:
                added[name], named = owner_keys(f"{roles.hosts_dir}/{name}", data)
                for key, comment in named.items():
                    comments.setdefault(key, comment)
        return Change(len(info.parents), paths, added, comments)

    def _host_files(self, sha: str, hosts_dir: str, names: Sequence[str]) -> dict[str, bytes | None]:
        """Some host files of commit ``sha`` (None: not there)."""
        return {name: self.repo.file_at(sha, f"{hosts_dir}/{name}", MAX_SIGNERS_BYTES) for name in names}

    # --- roles ------------------------------------------------------------------------

    def roles_at(self, sha: str | None) -> Roles:
        """The roles at commit ``sha`` (None: before the root commit, where
        only the node's own admins count): carried forward from the nearest
        commit whose roles are known, reading only what each commit changed."""
        chain: list[tuple[str | None, CommitInfo, tuple[str, ...]]] = []
        at = sha
        while at not in self._roles and at in self._later:
            step = self._later[at]
            chain.append(step)
            at = step[0]
        if at not in self._roles:
            self._roles[at] = Roles(self.local, {}) if at is None else self._read_roles(at)
        roles = self._roles[at]
        for _parent, info, paths in reversed(chain):
            roles = self._roles[info.sha] = self._advance(roles, info, paths)
        return roles

    def _read_roles(self, sha: str) -> Roles:
        from syncd.rules.policy import policy_of
        from syncd.rules.tree import EntryKind

        policy, _ = policy_of(self.repo.policy_bytes(sha))
        owners: dict[str, frozenset[bytes]] = {}
        comments: dict[bytes, str] = {}
        sizes = self.sizes_of() if self.sizes_of is not None else None  # else each read from its header
        entries = self.repo.host_entries(sha, policy.hosts_dir, policy.max_files, policy.max_file_bytes, sizes)
        for entry in entries:
            if entry.kind is not EntryKind.FILE or entry.blob is None or entry.size > policy.max_file_bytes:
                continue
            found = self.owners_of(entry.blob)
            if found is None:
                found = owner_keys(entry.name, self.repo.blob(entry.blob, policy.max_file_bytes))
            owners[entry.name], named = found
            for key, comment in named.items():
                comments.setdefault(key, comment)
        return Roles(self.admins_at(sha), owners, policy.join, policy.hosts_dir, comments)

    def _advance(self, roles: Roles, info: CommitInfo, paths: tuple[str, ...]) -> Roles:
        """The roles at ``info`` from those at its parent and what it changed."""
        if any(host_name(p, roles.hosts_dir) is None for p in paths):
            return self._read_roles(info.sha)  # the policy or the admins may have changed
        names = [n for p in paths if (n := host_name(p, roles.hosts_dir)) is not None]
        files = self._host_files(info.sha, roles.hosts_dir, names)
        if self._same_roles(roles, files):
            return roles  # the usual commit: host files edited, their owner lines as they were
        owners = dict(roles.owners)
        comments = dict(roles.comments)
        dropped: set[bytes] = set()
        for name, data in files.items():
            before = owners.pop(name, frozenset())
            if data is None:
                dropped.update(before)
                continue
            owners[name], named = owner_keys(f"{roles.hosts_dir}/{name}", data)
            dropped.update(before - owners[name])
            # an owner who rewrites its own line is named by what it wrote last
            comments.update(named)
        # a key rotated out of every file has no name at the next commit, just
        # as when the roles there are read afresh (the next pass)
        for key in dropped - set().union(*owners.values()) if dropped else ():
            comments.pop(key, None)
        return roles.evolved(owners, comments, names)

    def _same_roles(self, roles: Roles, files: dict[str, bytes | None]) -> bool:
        """Whether host files changed to ``files`` leave ``roles`` as they
        are: each file still there, with the owner keys and comments it had."""
        for name, data in files.items():
            if data is None or name not in roles.owners:
                return False
            keys, named = owner_keys(f"{roles.hosts_dir}/{name}", data)
            if keys != roles.owners[name] or any(roles.comments.get(k) != c for k, c in named.items()):
                return False
        return True

    def _admins(self, sha: str) -> tuple[AllowedSigner, ...]:
        if not self.follow_repo:
            return self.local
        data = self.repo.file_at(sha, REPO_SIGNERS, MAX_SIGNERS_BYTES)
        if data is None:
            return self.local
        known = self._admins_parsed.get(data)  # most commits leave the file as it was
        if known is not None:
            return known
        try:
            admins = tuple(parse_allowed_signers(data, f"{REPO_SIGNERS} of commit {sha[:12]}"))
            if not any(s.allows_namespace("git") for s in admins):
                raise AllowedSignersError("it lists no admin who may sign commits: no admin commit could follow it")
            self._admins_parsed[data] = admins
            return admins
        except AllowedSignersError as exc:
            raise RefusedError(
                f"commit {sha[:12]}: its {REPO_SIGNERS} does not parse: {exc.message}; nothing was installed",
                reason=Reason.INVALID_CONTENT,
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
            why, fix = self._untrusted(tip)
            raise SignatureError(
                f"commit {tip.sha[:12]} ({tip.summary!r}): no commit on its history is signed by a key of this "
                f"node's allowed_signers and accepted at its parent ({why}): nothing to trust; nothing was installed",
                hint=fix,
            )
        root = chain[-1]
        trusted = self.check(root)
        later = [c for c in self.repo.ancestors(tip.sha, root.sha) if c.sha != root.sha]
        history = [(c, self.check(c)) for c in topological(later)]
        return [*reversed(history), (root, trusted)]

    def _untrusted(self, tip: CommitInfo) -> tuple[str, str | None]:
        """Why the tip itself is no trust root, in the words of the node's
        allowed_signers, and what would fix it."""
        try:
            key = signing_key(tip)
        except SignatureError as exc:
            return f"the tip: {exc.message.partition('): ')[2].removesuffix('; nothing was installed')}", None
        if admin_principal(self.local, key, tip.committer_time) is not None:
            return "the tip's key is an admin's here, but the tip is refused at its parent", None
        why, fix = why_not_allowed(self.local, key, tip.committer_time)
        return f"the tip is signed by {fingerprint(key)}: {why}", fix

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
