"""SSH commit signatures: git's allowed_signers format and SSHSIG (pure).

This is the trust anchor of syncd, so it does not shell out to ssh-keygen and
does not use dulwich's verify helpers (which accept unsigned commits when
given no key ids).  It follows OpenSSH's PROTOCOL.sshsig and the
ALLOWED SIGNERS section of ssh-keygen(1), which is the file
``git config gpg.ssh.allowedSignersFile`` reads:

* A signature is ``-----BEGIN SSH SIGNATURE-----`` armour around
  ``"SSHSIG" || uint32 version=1 || string publickey || string namespace ||
  string reserved || string hash_algorithm || string signature``.
* What was signed is ``"SSHSIG" || string namespace || string reserved ||
  string hash_algorithm || string H(message)``; git signs the commit object
  without its ``gpgsig`` header, in the namespace ``git``.
* Algorithms: ssh-ed25519; ecdsa-sha2-nistp256/384/521 (SHA-256/384/512);
  RSA only as rsa-sha2-256 or rsa-sha2-512 (never SHA-1 ``ssh-rsa``).
  Security keys (``sk-*``) and certificates are refused as unsupported.
* An allowed_signers line is ``principals [options] keytype key [comment]``
  with options ``namespaces="..."``, ``valid-after="..."``,
  ``valid-before="..."`` and ``cert-authority`` (refused: syncd pins keys,
  not CAs).  As in ``git verify-commit``, a key's validity window is checked
  at the commit's committer time.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import fnmatch
import hashlib
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from syncd.errors import AllowedSignersError, SignatureError

MAGIC = b"SSHSIG"
ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"

_PLAIN_KEY_TYPES = {
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
        digest = base64.b64encode(hashlib.sha256(self.public_key).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"


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


def _unsupported(key_type: str) -> SignatureError:
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
        elif key_type.startswith("ecdsa-sha2-nistp") and key_type in _PLAIN_KEY_TYPES:
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
            raise _unsupported(key_type)
    except InvalidSignature:
        raise SignatureError("bad signature: the signed data or the signature was altered") from None


# --- allowed_signers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowedSigner:
    principals: tuple[str, ...]
    public_key: bytes  # wire-format blob
    key_type: str
    namespaces: tuple[str, ...] | None  # None: any namespace
    valid_after: int | None  # Unix seconds
    valid_before: int | None
    line: int

    def allows_namespace(self, namespace: str) -> bool:
        if self.namespaces is None:
            return True
        return _match_pattern_list(namespace, self.namespaces)

    def valid_at(self, when: int) -> bool:
        return (self.valid_after is None or when >= self.valid_after) and (
            self.valid_before is None or when <= self.valid_before
        )


def _match_pattern_list(value: str, patterns: Sequence[str]) -> bool:
    """OpenSSH's match_pattern_list(): globs with '*' and '?', '!' negates."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(value, pattern[1:] if negated else pattern):
            if negated:
                return False
            matched = True
    return matched


_TIME_RE = re.compile(r"(\d{8})(\d{4}(\d{2})?)?(Z)?\Z")


def parse_time(text: str, path: str, line: int) -> int:
    """``YYYYMMDD[HHMM[SS]][Z]``: UTC with Z, local time without (as ssh-keygen)."""
    match = _TIME_RE.match(text)
    if not match:
        raise AllowedSignersError(f"{path}:{line}: time {text!r} is not YYYYMMDD[HHMM[SS]][Z]")
    digits = match[1] + (match[2] or "0000")
    if len(digits) == 12:
        digits += "00"
    try:
        parsed = time.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        raise AllowedSignersError(f"{path}:{line}: time {text!r} is not a valid date") from None
    return calendar.timegm(parsed) if match[4] else int(time.mktime(parsed))


def _split_unquoted(text: str, separators: str, keep_empty: bool) -> list[str]:
    """Split at ``separators`` outside double quotes (the quotes are kept)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char in separators and not quoted:
            if current or keep_empty:
                parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ValueError("unterminated quote")
    if current or keep_empty:
        parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def parse_allowed_signers(text: str, path: str = "allowed_signers") -> list[AllowedSigner]:
    """Parse the file; any malformed line is an ``AllowedSignersError``
    naming the file and line (a trust anchor is not read leniently)."""
    signers = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fields = _split_unquoted(line, " \t", keep_empty=False)
        except ValueError:
            raise AllowedSignersError(f"{path}:{number}: unterminated quote") from None
        if len(fields) < 3:
            raise AllowedSignersError(f"{path}:{number}: expected 'principals [options] keytype key'")
        principals = tuple(p for p in _unquote(fields[0]).split(",") if p)
        rest = fields[1:]
        options: list[str] = []
        if not _looks_like_key_type(rest[0]):
            options = _split_unquoted(rest[0], ",", keep_empty=True)
            rest = rest[1:]
        if len(rest) < 2:
            raise AllowedSignersError(f"{path}:{number}: expected a key type and a base64 key")
        key_type, key_text = rest[0], rest[1]
        if key_type.startswith("sk-") or "-cert-" in key_type or key_type not in _PLAIN_KEY_TYPES:
            raise AllowedSignersError(f"{path}:{number}: {_unsupported(key_type).message}")
        try:
            blob = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            raise AllowedSignersError(f"{path}:{number}: the key is not valid base64") from None
        try:
            embedded = key_type_of(blob)
        except SignatureError:
            raise AllowedSignersError(f"{path}:{number}: the key blob is truncated") from None
        if embedded != key_type:
            raise AllowedSignersError(f"{path}:{number}: key type {key_type} but the key is {embedded}")
        namespaces: tuple[str, ...] | None = None
        valid_after = valid_before = None
        for option in options:
            name, _, value = option.partition("=")
            name = name.lower()
            if name == "cert-authority":
                raise AllowedSignersError(
                    f"{path}:{number}: cert-authority is not supported: list each admin's own key"
                )
            if name == "namespaces" and value:
                namespaces = tuple(n for n in _unquote(value).split(",") if n)
            elif name == "valid-after" and value:
                valid_after = parse_time(_unquote(value), path, number)
            elif name == "valid-before" and value:
                valid_before = parse_time(_unquote(value), path, number)
            else:
                raise AllowedSignersError(f"{path}:{number}: unknown option {option!r}")
        if not principals:
            raise AllowedSignersError(f"{path}:{number}: no principal")
        signers.append(AllowedSigner(principals, blob, key_type, namespaces, valid_after, valid_before, number))
    return signers


def _looks_like_key_type(field: str) -> bool:
    return field in _PLAIN_KEY_TYPES or field.startswith(("sk-", "ssh-", "ecdsa-")) or "-cert-" in field


@dataclass(frozen=True, slots=True)
class Verified:
    principal: str  # the first principal of the matching allowed_signers line


def verify_signed_object(
    payload: bytes, armored: bytes | None, signers: Sequence[AllowedSigner], when: int, namespace: str = "git"
) -> Verified:
    """Check a signed git object: signed at all, by a key in ``signers`` that
    is valid at ``when`` for ``namespace``, and the signature holds."""
    if armored is None:
        raise SignatureError("not signed")
    sig = parse_signature(armored)
    candidates = [s for s in signers if s.public_key == sig.public_key]
    if not candidates:
        raise SignatureError(f"signed by {sig.key_type} key {sig.fingerprint()}, which is not an allowed signer")
    usable = [s for s in candidates if s.allows_namespace(namespace)]
    if not usable:
        raise SignatureError(f"key {sig.fingerprint()} is not allowed to sign in namespace {namespace!r}")
    in_time = [s for s in usable if s.valid_at(when)]
    if not in_time:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        raise SignatureError(f"key {sig.fingerprint()} ({usable[0].principals[0]}) is not valid at {stamp}")
    verify(sig, payload, namespace)
    return Verified(in_time[0].principals[0])
