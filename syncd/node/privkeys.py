"""The node's own private keys: read, to check the repository's copy of its
own host file (docs/architecture.md, "Safety rules": a repository version
whose public key is not the key tincd will use would cut the node off), and
made, in the formats tincd reads (what ``tincd -K`` / ``tinc generate-keys``
write), for ``syncd add-node``.

tinc 1.0 keeps ``rsa_key.priv`` (PEM, PKCS#1); tinc 1.1 keeps
``ed25519_key.priv`` in its own format: an ``ED25519 PRIVATE KEY`` PEM block
whose body is tinc's base64 of 96 bytes, the 64-byte private key followed by
the 32-byte public key (``ecdsa_t`` in tinc's src/ed25519/ecdsa.c): the
expanded private key is the SHA-512 of the seed, clamped, as in the ed25519
code tinc ships.  In the host file: a PKCS#1 ``RSA PUBLIC KEY`` block, or
``Ed25519PublicKey =`` the public key in tinc's base64.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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


# --- key pairs for a new node ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_file: str  # name in the tinc directory
    private_pem: bytes
    public_text: str  # what goes into the host file


def rsa_keypair(bits: int = 4096) -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return KeyPair("rsa_key.priv", private, public.decode())


def ed25519_expanded(seed: bytes) -> bytes:
    """The 64-byte private key tinc's ed25519 code derives from a seed."""
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248
    digest[31] &= 63
    digest[31] |= 64
    return bytes(digest)


def ed25519_keypair(seed: bytes | None = None) -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed) if seed is not None else ed25519.Ed25519PrivateKey.generate()
    )
    raw_seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = keys.tinc_b64encode(ed25519_expanded(raw_seed) + public)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN ED25519 PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END ED25519 PRIVATE KEY-----\n"
    return KeyPair("ed25519_key.priv", pem.encode(), f"Ed25519PublicKey = {keys.tinc_b64encode(public)}\n")
