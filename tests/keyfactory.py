"""Real keys for tests, made with ``cryptography`` (cached per process)."""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from syncd.tinc.keys import tinc_b64encode


@functools.cache
def rsa_private(bits: int = 2048, seed: int = 0) -> rsa.RSAPrivateKey:
    del seed  # distinct cache entries give distinct keys
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def rsa_pem(bits: int = 2048, seed: int = 0, spki: bool = False) -> str:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo if spki else serialization.PublicFormat.PKCS1
    return rsa_private(bits, seed).public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()


@functools.cache
def ed25519_text(seed: int = 0) -> str:
    del seed
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return tinc_b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
