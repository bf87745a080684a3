"""The node's own private keys, to check the repository's copy of its own
host file (DESIGN.md §6): a repo version whose public key does not match the
key tincd will use would cut the node off, so it is refused.

tinc 1.0 keeps ``rsa_key.priv`` (PEM, PKCS#1); tinc 1.1 keeps
``ed25519_key.priv`` in its own format: an ``ED25519 PRIVATE KEY`` PEM block
whose body is tinc's base64 of 96 bytes, the 64-byte private key followed by
the 32-byte public key (``ecdsa_t`` in tinc's src/ed25519/ecdsa.c).
"""

from __future__ import annotations

from pathlib import Path

from syncd import keys


def private_key_publics(tinc_dir: Path) -> list[tuple[str, keys.PublicKey]]:
    """The public halves of the private keys readable in ``tinc_dir``,
    as ``(file name, key)``.  Unreadable or absent files are skipped: the
    check applies "when that key is readable"."""
    found = []
    rsa_path = tinc_dir / "rsa_key.priv"
    try:
        data = rsa_path.read_bytes()
    except OSError:
        data = None
    if data is not None:
        found.append(("rsa_key.priv", _rsa_public(data, rsa_path)))
    ed_path = tinc_dir / "ed25519_key.priv"
    try:
        text = ed_path.read_text("ascii")
    except (OSError, UnicodeDecodeError):
        text = None
    if text is not None:
        found.append(("ed25519_key.priv", _ed25519_public(text, ed_path)))
    return found


def _rsa_public(data: bytes, path: Path) -> keys.PublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise keys.KeyFormatError(f"{path}: not a readable RSA private key ({exc})") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise keys.KeyFormatError(f"{path}: not an RSA key")
    numbers = private.public_key().public_numbers()
    return keys.rsa_key(numbers.n, numbers.e)


def _ed25519_public(text: str, path: Path) -> keys.PublicKey:
    lines = [line.strip() for line in text.splitlines()]
    try:
        begin = lines.index("-----BEGIN ED25519 PRIVATE KEY-----")
        end = lines.index("-----END ED25519 PRIVATE KEY-----", begin)
    except ValueError:
        raise keys.KeyFormatError(f"{path}: no ED25519 PRIVATE KEY block") from None
    raw = keys.tinc_b64decode("".join(lines[begin + 1 : end]))
    if len(raw) != 96:
        raise keys.KeyFormatError(f"{path}: {len(raw)} bytes, tinc's Ed25519 private key has 96")
    return keys.PublicKey("ed25519", 256, raw[64:])
