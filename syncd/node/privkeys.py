"""The node's own private keys, to check the repository's copy of its own
host file (docs/architecture.md, "Safety rules"): a repo version whose public key does not match the
key tincd will use would cut the node off, so it is refused.

tinc 1.0 keeps ``rsa_key.priv`` (PEM, PKCS#1); tinc 1.1 keeps
``ed25519_key.priv`` in its own format: an ``ED25519 PRIVATE KEY`` PEM block
whose body is tinc's base64 of 96 bytes, the 64-byte private key followed by
the 32-byte public key (``ecdsa_t`` in tinc's src/ed25519/ecdsa.c).
"""

from __future__ import annotations

from pathlib import Path

from syncd.errors import FatalIOError
from syncd.tinc import keys

# A corrupt private key is a FatalIOError (exit 2, reason io-error), not a
# ConfigError: retrying cannot fix it, and it is tincd's file on the node's
# disk (syncd reads it, never writes it), not a key of syncd's config, so the
# admin has to look at that file and not at /etc/syncd.


def private_key_publics(tinc_dir: Path) -> list[tuple[str, keys.PublicKey]]:
    """The public halves of the private keys readable in ``tinc_dir``,
    as ``(file name, key)``.  Absent files, and files syncd may not read,
    are skipped: the check applies "when that key is readable".  A key that
    is there but cannot be parsed raises ``FatalIOError`` naming the file:
    skipping it would let a commit cut the node off unchecked."""
    found = []
    for name, parse in (("rsa_key.priv", _rsa_public), ("ed25519_key.priv", _ed25519_public)):
        path = tinc_dir / name
        data = _read(path)
        if data is None:
            continue
        try:
            found.append((name, parse(data)))
        except keys.KeyFormatError as exc:
            raise FatalIOError(
                f"{path}: this node's private key is corrupt: {exc}",
                hint=f"fix or replace {path} (tincd's key; syncd never writes it)",
            ) from None
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, PermissionError):
        return None
    except OSError as exc:
        raise FatalIOError(
            f"{path}: cannot read this node's private key: {exc.strerror}",
            hint=f"fix or replace {path} (tincd's key; syncd never writes it)",
        ) from None


def _rsa_public(data: bytes) -> keys.PublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise keys.KeyFormatError(f"not a readable PEM RSA private key ({exc})") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise keys.KeyFormatError(f"a {type(private).__name__}, not an RSA key")
    numbers = private.public_key().public_numbers()
    return keys.rsa_key(numbers.n, numbers.e)


def _ed25519_public(data: bytes) -> keys.PublicKey:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise keys.KeyFormatError(f"not ASCII text (byte {exc.start + 1})") from None
    lines = [line.strip() for line in text.splitlines()]
    try:
        begin = lines.index("-----BEGIN ED25519 PRIVATE KEY-----")
        end = lines.index("-----END ED25519 PRIVATE KEY-----", begin)
    except ValueError:
        raise keys.KeyFormatError("no ED25519 PRIVATE KEY block") from None
    raw = keys.tinc_b64decode("".join(lines[begin + 1 : end]))
    if len(raw) != 96:
        raise keys.KeyFormatError(f"{len(raw)} bytes, tinc's Ed25519 private key has 96")
    return keys.PublicKey("ed25519", 256, raw[64:])
