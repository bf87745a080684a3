"""The owners ``syncd add-node`` names in a new host file: ``--owner-key
FILE.pub`` (or ``~/.ssh/id_ed25519.pub``), read into ``# syncd-owner:`` lines
by the same rules as an owner line in the repository (``rules.owners``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from syncd.errors import UsageError
from syncd.rules.owners import PREFIX as OWNER_PREFIX
from syncd.rules.owners import parse_owners

DEFAULT_OWNER_KEY = Path(".ssh") / "id_ed25519.pub"  # under the user's home


@dataclass(frozen=True)
class OwnerKey:
    source: Path  # the public key file it was read from
    line: str  # "# syncd-owner: ssh-ed25519 AAAA... alice@laptop"
    fingerprint: str


def from_options(files: Sequence[str], none: bool) -> tuple[tuple[OwnerKey, ...], str | None]:
    """The owners ``--owner-key FILE`` (or its default) and ``--no-owner-key``
    name, and a note when there is none."""
    if files and none:
        raise UsageError("--owner-key and --no-owner-key contradict each other")
    owners = read_owner_keys(() if none else tuple(Path(f) for f in files) or default_owner_keys())
    why = "--no-owner-key" if none else "no --owner-key, and no ~/.ssh/id_ed25519.pub"
    return owners, None if owners else f"{why}: the host file names no owner, so only an admin may change it"


def default_owner_keys() -> tuple[Path, ...]:
    """``~/.ssh/id_ed25519.pub`` when it exists: whoever sets the node up
    owns it unless told otherwise."""
    try:
        path = Path.home() / DEFAULT_OWNER_KEY
    except RuntimeError:  # no HOME and no passwd entry
        return ()
    return (path,) if path.is_file() else ()


def read_owner_keys(paths: Sequence[Path]) -> tuple[OwnerKey, ...]:
    """The owner lines for the SSH public key files ``paths`` (OpenSSH's
    ``.pub`` format: ``KEYTYPE BASE64 [COMMENT]`` a line), each read by the
    same rules as an owner line in the repository, so a key accepted here
    is one ``syncd check`` and every node accept."""
    keys: dict[str, OwnerKey] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--owner-key {path}: {exc.strerror}") from None
        if b"PRIVATE KEY-----" in data:
            raise UsageError(f"--owner-key {path}: a private key; give its public half ({path}.pub)")
        found = 0
        for number, raw in enumerate(data.splitlines(), 1):
            words = raw.split()
            if not words or words[0].startswith(b"#"):
                continue
            line = OWNER_PREFIX + b" " + b" ".join(words)
            parsed = parse_owners(str(path), line)
            bad = next((f for f in parsed.findings), None)
            if bad is not None or len(parsed.owners) != 1:
                why = bad.message.split("; as written")[0] if bad is not None else "not a public key"
                raise UsageError(f"--owner-key {path}:{number}: {why}")
            owner = parsed.owners[0]
            keys.setdefault(owner.fingerprint(), OwnerKey(path, line.decode(), owner.fingerprint()))
            found += 1
        if not found:
            raise UsageError(f"--owner-key {path}: no SSH public key in it (a line 'ssh-ed25519 AAAA... COMMENT')")
    return tuple(keys.values())
