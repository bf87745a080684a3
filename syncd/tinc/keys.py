"""Public keys as tinc reads them from a host file (pure).

* RSA (tinc 1.0 and 1.1's legacy protocol): a PEM block,
  ``-----BEGIN RSA PUBLIC KEY-----`` (PKCS#1, tried first) or
  ``-----BEGIN PUBLIC KEY-----`` (SPKI), as ``read_rsa_public_key()`` in
  tinc's ``src/net_setup.c`` reads them with OpenSSL; or the obsolete
  ``PublicKey`` variable, a hex modulus whose exponent tinc hard-wires to
  0xFFFF.  tincd refuses moduli over 8192 bits.
* Ed25519 (tinc 1.1): ``Ed25519PublicKey`` or an
  ``-----BEGIN ED25519 PUBLIC KEY-----`` block, both in tinc's own base64
  (``b64decode_tinc()`` in ``src/utils.c``): the alphabet accepts ``+``/``-``
  for 62 and ``/``/``_`` for 63, and bits are packed least significant first,
  so it is *not* standard base64 of the key bytes.

``cryptography`` is imported only when an RSA key is actually parsed: a
network of Ed25519-only nodes is checked without paying for the import.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

MAX_RSA_BITS = 8192
ED25519_TEXT_LENGTH = 43  # ecdsa_set_base64_public_key(): strlen(p) != 43

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECODE: dict[str, int] = {c: i for i, c in enumerate(_ALPHABET)} | {"-": 62, "_": 63}


class KeyFormatError(ValueError):
    """A key tincd would fail to load (``key-invalid``)."""


class PublicKey(NamedTuple):
    """A loaded key: its algorithm, size in bits and a comparable identity."""

    algorithm: str  # "rsa" or "ed25519"
    bits: int
    identity: bytes  # RSA: modulus and exponent; Ed25519: the 32 key bytes


# --- tinc's base64 ----------------------------------------------------------


def tinc_b64decode(text: str) -> bytes:
    """Decode tinc's base64 (``b64decode_tinc``); raise ``KeyFormatError``."""
    out = bytearray()
    triplet = 0
    for i, char in enumerate(text):
        value = _DECODE.get(char)
        if value is None:
            raise KeyFormatError(f"character {char!r} at position {i + 1} is not in tinc's base64 alphabet")
        triplet |= value << (6 * (i & 3))
        if i & 3 == 3:
            out += triplet.to_bytes(3, "little")
            triplet = 0
    rest = len(text) & 3
    if rest == 3:
        out += (triplet & 0xFFFF).to_bytes(2, "little")
    elif rest == 2:
        out += (triplet & 0xFF).to_bytes(1, "little")
    elif rest == 1:
        raise KeyFormatError("length is not a whole number of bytes")
    return bytes(out)


def tinc_b64encode(data: bytes) -> str:
    """Encode as ``b64encode_tinc()`` does (standard alphabet, LSB first)."""
    chars = []
    for start in range(0, len(data), 3):
        chunk = data[start : start + 3]
        triplet = int.from_bytes(chunk, "little")
        for k in range(len(chunk) + 1):
            chars.append(_ALPHABET[(triplet >> (6 * k)) & 63])
    return "".join(chars)


# --- Ed25519 ------------------------------------------------------------------

_P = 2**255 - 19
# tinc's packing makes the whole key one little-endian base-64 number: the
# character at index i carries bits 6*i .. 6*i+5.  So 43 characters hold 258
# bits, of which the key uses 256; the top two must be zero.


def ed25519_from_text(text: str) -> PublicKey:
    """An ``Ed25519PublicKey`` value or ED25519 PEM body → key; raise ``KeyFormatError``.

    Checks what tincd checks (length, alphabet) and that the text is the
    canonical encoding of a canonical key: no stray high bits in the last
    character and a y coordinate below 2^255 - 19.  A typo usually breaks
    one of these.  (Whether the key is a point on the curve is not checked:
    that costs a 255-bit modular exponentiation per key, more than the whole
    rest of ``syncd check`` per node.)
    """
    if len(text) != ED25519_TEXT_LENGTH:
        raise KeyFormatError(
            f"an Ed25519 public key is {ED25519_TEXT_LENGTH} characters of tinc's base64, not {len(text)}"
        )
    # Reversed, the text is that number written most significant digit first,
    # which is what standard base64 decodes (in C): one leading zero digit
    # ("A") pads the 43 digits to 44, a whole number of 4-digit groups.
    try:
        standard = text[::-1].replace("-", "+").replace("_", "/")  # tinc also reads the URL-safe digits
        big_endian = binascii.a2b_base64("A" + standard, strict_mode=True)
    except (binascii.Error, ValueError):
        tinc_b64decode(text)  # raises, naming the position of the bad character
        raise
    if big_endian[0]:  # 33 bytes: the first holds bits 256 and up
        raise KeyFormatError(f"the last character {text[-1]!r} carries bits beyond the 32 key bytes (typo?)")
    key = big_endian[:0:-1]  # the 32 key bytes, little-endian as the key is stored
    # y >= 2^255 - 19 needs y's top byte to be 0x7f; only then is the full compare needed
    if key[31] & 0x7F == 0x7F and int.from_bytes(key, "little") & ((1 << 255) - 1) >= _P:
        raise KeyFormatError("not a canonical Ed25519 key (y is not below 2^255 - 19)")
    return _new_key(PublicKey, ("ed25519", 256, key))


_new_key = tuple.__new__  # one key per node: skips the namedtuple's Python-level __new__


# --- RSA -----------------------------------------------------------------------


def rsa_from_pem_body(label: str, body: list[str]) -> PublicKey:
    """An RSA PEM block (``RSA PUBLIC KEY`` or ``PUBLIC KEY``) → key.

    ``body`` holds the lines between BEGIN and END.  Like OpenSSL's PEM reader,
    trailing blanks on a line are ignored; anything else that is not base64
    is an error.
    """
    text = "".join(line.rstrip(" \t\r") for line in body)
    if any(c.isspace() for c in text):
        raise KeyFormatError("the key's base64 contains blanks inside a line")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"the key is not valid base64 ({exc})") from None
    return rsa_from_der(label, der)


def rsa_from_der(label: str, der: bytes) -> PublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    try:
        if label == "RSA PUBLIC KEY":
            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
            key = load_pem_public_key(pem)
        else:
            key = load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"OpenSSL cannot load this {label} block: {_first_line(exc)}") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm too
        raise KeyFormatError(f"OpenSSL cannot load this {label} block: {_first_line(exc)}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError(f"the {label} block holds a {type(key).__name__}, not an RSA key; tinc 1.0 needs RSA")
    numbers = key.public_numbers()
    return rsa_key(numbers.n, numbers.e)


def rsa_from_hex(text: str) -> PublicKey:
    """The obsolete ``PublicKey = HEX`` modulus (exponent 0xFFFF, as tinc sets it)."""
    if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise KeyFormatError("PublicKey must be the RSA modulus in hexadecimal")
    return rsa_key(int(text, 16), 0xFFFF)


def rsa_key(n: int, e: int) -> PublicKey:
    bits = n.bit_length()
    if bits > MAX_RSA_BITS:
        raise KeyFormatError(f"RSA modulus of {bits} bits: tincd refuses keys over {MAX_RSA_BITS} bits")
    if bits < 512 or n % 2 == 0:
        raise KeyFormatError(
            f"an RSA modulus of {bits} bits{' that is even' if n % 2 == 0 else ''} is not a usable key"
        )
    size = (bits + 7) // 8
    identity = n.to_bytes(size, "big") + b"/" + e.to_bytes((e.bit_length() + 7) // 8 or 1, "big")
    return PublicKey("rsa", bits, identity)


def describe_key(key: PublicKey) -> str:
    """A key as an operator compares it: an Ed25519 key as its host-file
    line reads; an RSA key by size and a digest of its modulus."""
    if key.algorithm == "ed25519":
        return f"Ed25519PublicKey = {tinc_b64encode(key.identity)}"
    import hashlib

    return f"an RSA key of {key.bits} bits (SHA256 of modulus/exponent {hashlib.sha256(key.identity).hexdigest()[:16]})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
