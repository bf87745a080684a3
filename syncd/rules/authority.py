"""Who may change what: the authority rule of a signed commit (pure).

Each commit C is authorized by the roles at its parent P, as in
sequoia-git ("each commit is authorized by its parent's policy"), with
per-object maintainers for host files, as in dn42's registry.  With K the key
that made C's (already verified) signature:

1. K is an admin at P: C may change anything, merges and empty commits too.
   A merge needs K to be an admin at *every* parent (``parent``: which one
   ``roles`` are of), so that a key removed from the admins on one side
   authorizes nothing by naming an older side first.
2. C has one parent, changes at least one path, and every path it changes is
   ``HOSTS/NAME`` whose file at P lists K on an owner line: an owner edits or
   deletes its own host file, and may rewrite its own owner lines.
3. C has one parent and adds ``HOSTS/NAME`` (absent at P) with at least one
   owner line, and P's ``join`` allows K to add it: ``members``, K owns some
   node at P; ``open``, that or K is on the new file's own owner lines;
   ``admins``, never.

Rules 2 and 3 combine path by path (a rename by an owner removes under 2 and
adds under 3).  Anything else under the repository (``syncd.yaml``,
``allowed_signers``, a README, ``HOSTS/a/b``, ``HOSTS/NAME-up``) is
admin-only.  A refusal is ``Reason.SIGNATURE`` when K has no role at P at
all (not an admin, owns no node, is not an owner of a file C adds),
``Reason.UNAUTHORIZED`` when a known key acts outside its role, and names the first path outside
its authority.

The caller verifies the signature, reads P's tree into ``Roles`` and diffs C
against P into ``Change``; this module does no I/O and no cryptography.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from syncd.errors import Reason
from syncd.findings import Finding, error, warning
from syncd.signing.allowed_signers import AllowedSigner
from syncd.signing.sshsig import fingerprint
from syncd.tinc.names import is_node_name

ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Roles:
    """The roles at a parent commit P."""

    admins: tuple[AllowedSigner, ...]  # admins(P): P's allowed_signers or the node's own, as the caller chose
    owners: Mapping[str, frozenset[bytes]]  # every host file NAME at P -> its owner key blobs (maybe none)
    join: str = "admins"  # P's policy
    hosts_dir: str = "hosts"  # P's policy
    comments: Mapping[bytes, str] = field(default_factory=dict)  # owner key -> its owner-line comment
    # key -> the names it owns: one look-up per commit, however many nodes
    _owned: Mapping[bytes, tuple[str, ...]] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_owned", None)  # built on the first question: many Roles are never asked

    def owned_by(self, key: bytes) -> tuple[str, ...]:
        if self._owned is None:
            owned: dict[bytes, list[str]] = {}
            for name in sorted(self.owners):
                for owner in self.owners[name]:
                    owned.setdefault(owner, []).append(name)
            object.__setattr__(self, "_owned", {k: tuple(names) for k, names in owned.items()})
        assert self._owned is not None
        return self._owned.get(key, ())

    def evolved(
        self, owners: Mapping[str, frozenset[bytes]], comments: Mapping[bytes, str], names: Iterable[str]
    ) -> Roles:
        """These roles after a commit that changed only the host files
        ``names`` (to ``owners`` and ``comments``): the index of who owns
        what, once built, is carried along rather than built again."""
        after = Roles(self.admins, owners, self.join, self.hosts_dir, comments)
        if self._owned is None:
            return after
        owned = dict(self._owned)
        for name in names:
            was, now = self.owners.get(name, frozenset()), owners.get(name, frozenset())
            for key in was - now:
                rest = tuple(n for n in owned[key] if n != name)
                if rest:
                    owned[key] = rest
                else:
                    del owned[key]
            for key in now - was:
                owned[key] = tuple(sorted((*owned.get(key, ()), name)))
        object.__setattr__(after, "_owned", owned)
        return after


@dataclass(frozen=True, slots=True)
class Change:
    """What a commit C does, relative to its first parent.  ``added_owners``
    maps NAME to its owner keys in C for each ``HOSTS/NAME`` that C adds
    (absent at P); a file added without owner lines maps to an empty set."""

    parents: int
    paths: tuple[str, ...]  # repository-relative paths C adds, modifies or deletes
    added_owners: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    # owner key -> its owner-line comment in a file C adds: how a newcomer, who
    # has no line at P yet, is named when it signs its own addition
    added_comments: Mapping[bytes, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    role: str  # accepted: "admin", "owner:A[,B]", "join:N[,M]", "owner:A join:N"; refused: the role K had at P
    signer: str  # principal or owner comment, and fingerprint
    reason: Reason | None = None  # refused: Reason.SIGNATURE or Reason.UNAUTHORIZED
    path: str | None = None  # refused: the first path outside K's authority (None: a merge, an empty commit)
    message: str = ""  # refused: the whole story, for the caller to prefix with the commit


def host_name(path: str, hosts_dir: str) -> str | None:
    """NAME when ``path`` is ``HOSTS/NAME`` with a valid node name, else None."""
    prefix = hosts_dir.rstrip("/") + "/"
    name = path.removeprefix(prefix)
    return name if path.startswith(prefix) and is_node_name(name) else None


def admin_principal(admins: Sequence[AllowedSigner], key: bytes, when: int, namespace: str = "git") -> str | None:
    """The principal ``verify_signed_object`` (``git verify-commit``) reports
    for a signature by ``key`` at ``when``, or None when it would refuse it:
    the first line with the key valid at ``when`` names the principals, and
    one of them must be accepted by a line with the key, ``namespace`` and
    ``when``.  Built from the same ``AllowedSigner`` predicates."""
    candidates = [s for s in admins if s.public_key == key]
    found = next((s for s in candidates if s.valid_at(when)), None)
    if found is None:
        return None
    for principal in found.principals:
        if any(
            s.allows_principal(principal) and s.allows_namespace(namespace) and s.valid_at(when) for s in candidates
        ):
            return principal
    return None


def valid_admins(admins: Sequence[AllowedSigner], now: float) -> list[AllowedSigner]:
    """The admin lines that may sign a commit dated ``now``: namespace
    ``git``, inside their validity window."""
    return [s for s in admins if s.allows_namespace("git") and s.valid_at(int(now))]


def admins_valid_until(admins: Sequence[AllowedSigner], now: float) -> int | None:
    """When the last admin key that may sign commits now stops being valid
    (its ``valid-before``); None when one has no end, or none is valid now
    (``valid_admins`` tells which)."""
    valid = valid_admins(admins, now)
    ends = [s.valid_before for s in valid]
    return None if not ends or None in ends else max(e for e in ends if e is not None)


def lockout_detail(admins: Sequence[AllowedSigner], now: float) -> str:
    """Why no line of ``admins`` may sign a commit dated ``now``."""
    if not admins:
        return "it lists no admin"
    why = []
    for line in admins[:3]:
        if not line.allows_namespace("git"):
            problem = f'may not sign commits (namespaces="{line.namespaces}")'
        elif line.valid_before is not None and now > line.valid_before:
            problem = f"expired at {utc_stamp(line.valid_before)} (valid-before)"
        else:
            problem = f"is not valid before {utc_stamp(line.valid_after or 0)} (valid-after)"
        why.append(f"line {line.line} ({line.principals[0]}) {problem}")
    more = f" (and {len(admins) - 3} more lines)" if len(admins) > 3 else ""
    return "its allowed_signers " + "; ".join(why) + more


EXPIRY_NOTICE = 30 * 86400  # seconds: the last valid admin key expiring within this is worth a warning


def admin_findings(data: bytes, now: float, path: str = "allowed_signers") -> list[Finding]:
    """What ``syncd check`` says of a repository's root allowed_signers: a
    file nodes would refuse (it does not parse, no line may sign commits,
    or no key is valid now: a lock-out) is an error; the last valid key
    expiring within 30 days, a warning."""
    from syncd.errors import AllowedSignersError
    from syncd.signing.allowed_signers import parse_allowed_signers

    try:
        admins = parse_allowed_signers(data, path)
    except AllowedSignersError as exc:
        where, _, message = exc.message.partition(": ")
        line = where.rsplit(":", 1)[-1]
        return [error(path, int(line) if line.isdigit() else 1, "admins-invalid", message)]
    first = admins[0].line if admins else 1
    if not any(s.allows_namespace("git") for s in admins):
        return [error(path, first, "admins-invalid", "no line may sign commits: nodes refuse a commit with this file")]
    if not valid_admins(admins, now):
        why = lockout_detail(admins, now)
        return [error(path, first, "admins-invalid", f"no admin key is valid now: {why}; nodes refuse it (lock-out)")]
    until = admins_valid_until(admins, now)
    if until is not None and until - now < EXPIRY_NOTICE:
        message = f"the last valid admin key expires at {utc_stamp(until)}: after that no admin can sign a commit"
        return [warning(path, first, "admins-expiring", message)]
    return []


def utc_stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def authorize(roles: Roles, change: Change, key: bytes, when: int, parent: int = 1) -> Decision:
    """May the holder of ``key`` make ``change`` in a commit dated ``when``
    (committer time), given the roles at its parent number ``parent``
    (1: the first; ``change`` is always against the first)?  A merge is
    authorized when this holds at each of its parents."""
    principal = admin_principal(roles.admins, key, when)
    signer = _signer(roles, key, principal, change)
    if principal is not None:
        return Decision(True, ADMIN, signer)
    owned = roles.owned_by(key)
    had = f"owner:{','.join(owned)}" if owned else ""
    known = bool(owned) or any(key in keys for keys in change.added_owners.values())
    refuse = _Refusal(roles, key, when, signer, had, known)
    if change.parents > 1 and parent > 1:
        return refuse(None, f"a merge: only an admin of every parent may make it, and this is its parent {parent}")
    if change.parents != 1:
        return refuse(None, f"{'a merge' if change.parents else 'a root commit'}: only an admin may make it")
    if not change.paths:
        return refuse(None, "an empty commit: only an admin may make it")
    edits: list[str] = []
    joins: list[str] = []
    for path in sorted(change.paths):
        name = host_name(path, roles.hosts_dir)
        if name is None:
            return refuse(path, f"is not a host file ({roles.hosts_dir}/NAME): only an admin may change it")
        if name in owned:
            edits.append(name)
        elif name in roles.owners:
            return refuse(path, _not_yours(roles, name))
        else:
            why = _join_problem(roles, key, bool(owned), change.added_owners.get(name, frozenset()))
            if why:
                return refuse(path, why)
            joins.append(name)
    role = " ".join(([f"owner:{','.join(edits)}"] if edits else []) + ([f"join:{','.join(joins)}"] if joins else []))
    return Decision(True, role, signer)


def _not_yours(roles: Roles, name: str) -> str:
    if not roles.owners[name]:
        return "has no owner lines: only an admin may change it"
    return f"is owned by {_names(roles, roles.owners[name])}"


def _join_problem(roles: Roles, key: bytes, owns_a_node: bool, new_owners: frozenset[bytes]) -> str:
    """Why rule 3 does not let ``key`` add this file ("" when it does)."""
    if not new_owners:
        return "is a new host file without an owner line: only an admin may add it"
    if roles.join == "members" and not owns_a_node:
        return "is a new node: the policy's join is members, so only a key that owns a node may add one"
    if roles.join == "open" and not owns_a_node and key not in new_owners:
        return "is a new node: the policy's join is open, but the signer neither owns a node nor is on its owner lines"
    if roles.join not in ("members", "open"):
        return f"is a new node: the policy's join is {roles.join}, so only an admin may add one"
    return ""


def _names(roles: Roles, keys: frozenset[bytes]) -> str:
    shown = sorted(f"{roles.comments.get(k) or 'a key'} ({fingerprint(k)})" for k in keys)
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def _signer(roles: Roles, key: bytes, principal: str | None, change: Change) -> str:
    listed = next((s for s in roles.admins if s.public_key == key), None)
    name = (
        principal
        or (listed.principals[0] if listed else None)
        or roles.comments.get(key)
        or change.added_comments.get(key)
        or "unknown key"
    )
    return f"{name} ({fingerprint(key)})"


@dataclass(frozen=True, slots=True)
class _Refusal:
    roles: Roles
    key: bytes
    when: int
    signer: str
    had: str
    known: bool

    def __call__(self, path: str | None, why: str) -> Decision:
        if self.had:
            who = f"owner of {self.had.removeprefix('owner:').replace(',', ', ')}"
        elif self.known:
            who = "no role but owner of a host file this commit adds"
        else:
            who = "no role at the parent commit (not an admin, owns no node)" + self._admin_note()
        message = f"signed by {self.signer}, {who}: {f'{path} ' if path else ''}{why}"
        reason = Reason.UNAUTHORIZED if self.known else Reason.SIGNATURE
        return Decision(False, self.had, self.signer, reason, path, message)

    def _admin_note(self) -> str:
        """An admin key that does not count at this commit: say why."""
        lines = [s for s in self.roles.admins if s.public_key == self.key]
        if not lines:
            return ""
        stamp = utc_stamp(self.when)
        if not any(s.valid_at(self.when) for s in lines):
            return f"; its allowed_signers line {lines[0].line} is not valid at {stamp}"
        return f"; its allowed_signers line {lines[0].line} does not allow it to sign commits (namespace git)"
