"""Key pairs in the formats tincd reads (what ``tincd -K`` / ``tinc
generate-keys`` write), for ``syncd add-node``.

* tinc 1.0: ``rsa_key.priv``, a PKCS#1 ``RSA PRIVATE KEY`` PEM block, and the
  public key as a PKCS#1 ``RSA PUBLIC KEY`` block in the host file.
* tinc 1.1: ``ed25519_key.priv``, an ``ED25519 PRIVATE KEY`` block holding,
  in tinc's base64 (64 characters a line), the 96 bytes of tinc's ``ecdsa_t``:
  the 64-byte expanded private key (SHA-512 of the seed, clamped, as in the
  ed25519 code tinc ships) followed by the 32-byte public key; and
  ``Ed25519PublicKey = `` the public key in tinc's base64 in the host file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from syncd.tinc.keys import tinc_b64encode


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
    body = tinc_b64encode(ed25519_expanded(raw_seed) + public)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN ED25519 PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END ED25519 PRIVATE KEY-----\n"
    return KeyPair("ed25519_key.priv", pem.encode(), f"Ed25519PublicKey = {tinc_b64encode(public)}\n")
