"""SSHSIG: OpenSSH's signature format, and its verification with
``cryptography`` (pure).  See OpenSSH's PROTOCOL.sshsig:

* A signature is ``-----BEGIN SSH SIGNATURE-----`` armour around
  ``"SSHSIG" || uint32 version=1 || string publickey || string namespace ||
  string reserved || string hash_algorithm || string signature``.
* What was signed is ``"SSHSIG" || string namespace || string reserved ||
  string hash_algorithm || string H(message)``; git signs the commit object
  without its ``gpgsig`` header, in the namespace ``git``.
* Algorithms: ssh-ed25519; ecdsa-sha2-nistp256/384/521 (SHA-256/384/512);
  RSA only as rsa-sha2-256 or rsa-sha2-512 (never SHA-1 ``ssh-rsa``).
  Security keys (``sk-*``) and certificates are refused as unsupported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from syncd.errors import SignatureError

MAGIC = b"SSHSIG"
ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"

PLAIN_KEY_TYPES = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
}
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


# --- SSH wire format ------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SignatureError(f"{self.what} is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self._take(4))[0]
        return value

    def string(self) -> bytes:
        return self._take(self.uint32())

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise SignatureError(f"{self.what}: negative integer")
        return int.from_bytes(raw, "big")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError(f"{self.what} has {len(self.data) - self.pos} unexpected trailing bytes")


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def fingerprint(key: bytes) -> str:
    """``ssh-keygen -l``'s SHA256 fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode().rstrip("=")


def key_type_of(blob: bytes) -> str:
    return _Reader(blob, "public key").string().decode("ascii", "replace")


# --- signatures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed SSHSIG: who signed (the key blob) and how."""

    public_key: bytes  # SSH wire-format public key blob
    namespace: str
    hash_algorithm: str
    signature: bytes  # string sig-type || string sig-bytes
    reserved: bytes

    @property
    def key_type(self) -> str:
        return key_type_of(self.public_key)

    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def parse_signature(armored: bytes) -> Signature:
    text = armored.strip()
    if not text.startswith(ARMOR_BEGIN) or not text.endswith(ARMOR_END):
        raise SignatureError("not an SSH signature (no -----BEGIN SSH SIGNATURE----- armour)")
    body = b"".join(text[len(ARMOR_BEGIN) : -len(ARMOR_END)].split())
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the SSH signature is not valid base64") from None
    reader = _Reader(raw, "SSH signature")
    if reader._take(6) != MAGIC:
        raise SignatureError("the SSH signature does not start with SSHSIG")
    version = reader.uint32()
    if version != 1:
        raise SignatureError(f"SSH signature version {version} is not supported")
    sig = Signature(
        public_key=reader.string(),
        namespace=reader.string().decode("utf-8", "replace"),
        reserved=reader.string(),
        hash_algorithm=reader.string().decode("ascii", "replace"),
        signature=reader.string(),
    )
    reader.done()
    return sig


def verify(sig: Signature, message: bytes, namespace: str) -> None:
    """Check ``sig`` over ``message`` in ``namespace``; raise ``SignatureError``."""
    if sig.namespace != namespace:
        raise SignatureError(f"signature is for namespace {sig.namespace!r}, not {namespace!r}")
    hasher = _HASHES.get(sig.hash_algorithm)
    if hasher is None:
        raise SignatureError(f"hash algorithm {sig.hash_algorithm!r} is not supported (sha256 or sha512)")
    signed = (
        MAGIC
        + _string(namespace.encode())
        + _string(sig.reserved)
        + _string(sig.hash_algorithm.encode())
        + _string(hasher(message).digest())
    )
    _verify_raw(sig.public_key, sig.signature, signed)


def unsupported(key_type: str) -> SignatureError:
    if key_type.startswith("sk-"):
        return SignatureError(f"{key_type}: security-key (FIDO) signatures are not supported")
    if "-cert-" in key_type:
        return SignatureError(f"{key_type}: certificates are not supported; pin the key itself")
    return SignatureError(f"key type {key_type!r} is not supported")


def _verify_raw(key_blob: bytes, sig_blob: bytes, signed: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    key = _Reader(key_blob, "public key")
    key_type = key.string().decode("ascii", "replace")
    sig = _Reader(sig_blob, "signature blob")
    sig_type = sig.string().decode("ascii", "replace")
    sig_bytes = sig.string()
    sig.done()
    try:
        if key_type == "ssh-ed25519":
            public = key.string()
            key.done()
            if sig_type != "ssh-ed25519" or len(public) != 32:
                raise SignatureError(f"{sig_type} signature from an ssh-ed25519 key")
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(sig_bytes, signed)
        elif key_type.startswith("ecdsa-sha2-nistp") and key_type in PLAIN_KEY_TYPES:
            curve_name = key.string().decode("ascii", "replace")
            point = key.string()
            key.done()
            curves: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
                "nistp256": (ec.SECP256R1(), hashes.SHA256()),
                "nistp384": (ec.SECP384R1(), hashes.SHA384()),
                "nistp521": (ec.SECP521R1(), hashes.SHA512()),
            }
            if f"ecdsa-sha2-{curve_name}" != key_type or sig_type != key_type:
                raise SignatureError(f"{sig_type} signature from a {key_type} key on {curve_name}")
            curve, digest = curves[curve_name]
            try:
                public_ec = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            except ValueError:
                raise SignatureError(f"{key_type}: the public key is not a point on {curve_name}") from None
            rs = _Reader(sig_bytes, "ECDSA signature")
            r, s = rs.mpint(), rs.mpint()
            rs.done()
            public_ec.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
        elif key_type == "ssh-rsa":
            e, n = key.mpint(), key.mpint()
            key.done()
            rsa_hashes: dict[str, hashes.HashAlgorithm] = {
                "rsa-sha2-256": hashes.SHA256(),
                "rsa-sha2-512": hashes.SHA512(),
            }
            if sig_type not in rsa_hashes:
                raise SignatureError(
                    f"{sig_type} signature: RSA signatures must use rsa-sha2-256 or rsa-sha2-512 (SHA-1 is refused)"
                )
            if n.bit_length() < 2048:
                raise SignatureError(f"RSA key of {n.bit_length()} bits is too weak to sign (2048 at least)")
            public_rsa = rsa.RSAPublicNumbers(e, n).public_key()
            public_rsa.verify(sig_bytes, signed, padding.PKCS1v15(), rsa_hashes[sig_type])
        else:
            raise unsupported(key_type)
    except InvalidSignature:
        raise SignatureError("bad signature: the signed data or the signature was altered") from None
