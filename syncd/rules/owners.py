"""The owner lines of a host file: who may edit it besides the admins (pure).

An owner line is a comment to tincd (``read_config_file()`` in tinc's
``src/conf.c`` skips every line that starts with ``#``), so it travels in
the host file without changing what tincd reads::

    # syncd-owner: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... alice@laptop

The grammar is strict on purpose.  An owner who mistypes the line would
otherwise lock themselves out without a word, so anything that looks like an
owner line but is not exactly one is an ``owner-invalid`` error:

* The line starts, in its first column, with exactly ``# syncd-owner:``: one
  ``#``, one space, ``syncd-owner`` in lower case, a colon.  Lines are split
  as tincd's ``readline()`` splits them: at ``\\n``, then one trailing ``\\r``
  is dropped; trailing blanks are ignored, as tincd ignores them.
* A near miss is a comment (``#`` after optional blanks) whose text, after
  any further ``#`` and blanks, starts with ``syncd`` then ``owner`` in any
  case, joined by any run of ``-``, ``_`` and blanks (or nothing):
  ``#syncd-owner:``, ``#  syncd-owner:``, ``# Syncd-Owner:``, ``# syncd-owner
  KEY``, ``# syncd_owners:``, ``# syncdowner:``, an indented ``# syncd-owner:``.
  Prose that merely mentions owners (``# owner: alice``) is an ordinary comment.
* After the colon, one or more blanks, then ``KEYTYPE BASE64 [COMMENT]``
  read as OpenSSH's ``sshkey_read()`` reads a public key (the same reader as
  the allowed_signers file: canonical base64, the type inside the blob equal
  to the one named, ``rsa-sha2-256``/``-512`` naming an ``ssh-rsa`` key), of a
  kind syncd verifies signatures from: ssh-ed25519, ecdsa-sha2-nistp256/384/521
  or ssh-rsa of 2048 bits or more.  The key must decode (an Ed25519 key of 32
  bytes, a point on its curve, an RSA modulus) with nothing after it.
* One key a line: a comment that starts with a key type, or holds a public
  key blob anywhere, is refused (its holder would believe they own the file).
* The comment is for people (refusals name the signer by it), so it is
  UTF-8 without control characters.
* A line over 2048 bytes is never an owner: tincd cuts it there and reads the
  rest as a line of its own.
* The same key on two owner lines of one file is a warning (one line is
  enough); it still owns the file.

An owner is identified by its key blob in SSH wire format, the same bytes as
``AllowedSigner.public_key`` and ``Signature.public_key`` in
``syncd.signing.allowed_signers``, so a verified signer is compared with ``==``.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass

from syncd.errors import AllowedSignersError
from syncd.findings import Finding, error, warning

# syncd.signing (the SSH key reader) is imported where an owner line is read:
# most host files have none, and `syncd check` of them need not load it.

PREFIX = b"# syncd-owner:"
CODE = "owner-invalid"
MAX_LINE_BYTES = 2048  # tincd's readline(): fgets() into a 2049-byte buffer
MIN_RSA_BITS = 2048  # syncd.signing.sshsig refuses to verify a signature from a smaller RSA key
FORMAT = "# syncd-owner: KEYTYPE BASE64 [COMMENT]"

# "#" (after optional blanks), more "#" and blanks, then "syncd" and "owner"
# in any case, joined by any run of "-", "_" and blanks.
_NEAR_MISS = re.compile(rb"[ \t]*#[# \t]*syncd[-_ \t]*owner", re.IGNORECASE)

_ED25519_HEAD = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"  # string "ssh-ed25519", uint32 32
_NOT_PRINTABLE_ASCII = re.compile(r"[^\t\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class Owner:
    key: bytes  # SSH wire-format public key blob
    key_type: str
    comment: str
    line: int

    def fingerprint(self) -> str:
        from syncd.signing.sshsig import fingerprint

        return fingerprint(self.key)


@dataclass(frozen=True, slots=True)
class Owners:
    owners: tuple[Owner, ...]  # one per distinct key, in file order
    findings: tuple[Finding, ...]

    @property
    def keys(self) -> frozenset[bytes]:
        return frozenset(owner.key for owner in self.owners)


def might_have_owner_lines(data: bytes) -> bool:
    """False when no line of ``data`` can be an owner line or a near miss:
    a cheap test that spares ``syncd run`` splitting every unchanged file."""
    return data.lower().find(b"owner") >= 0  # not "in": on bytes it raises and clears a TypeError first


def owner_keys(path: str, data: bytes) -> tuple[frozenset[bytes], dict[bytes, str]]:
    """What the authority rule needs of the host file ``data``: its owner
    keys, and the comment of each that has one (key → comment)."""
    parsed = parse_owners(path, data)
    return parsed.keys, {owner.key: owner.comment for owner in parsed.owners if owner.comment}


def parse_owners(path: str, data: bytes) -> Owners:
    """Every owner line of the host file ``data`` (named ``path`` in findings)."""
    if not might_have_owner_lines(data):
        return Owners((), ())
    owners: list[Owner] = []
    findings: list[Finding] = []
    first_line: dict[bytes, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.removesuffix(b"\r").rstrip(b" \t")
        if not line.startswith(PREFIX) and not _NEAR_MISS.match(line):
            continue
        try:
            owner = _owner_line(line, number)
        except ValueError as exc:
            findings.append(error(path, number, CODE, f"{exc}; as written, this line makes no one an owner"))
            continue
        if owner.key in first_line:
            findings.append(
                warning(path, number, CODE, f"the same key as the owner line {first_line[owner.key]}; one is enough")
            )
            continue
        first_line[owner.key] = number
        owners.append(owner)
    return Owners(tuple(owners), tuple(findings))


def _owner_line(line: bytes, number: int) -> Owner:
    near = _NEAR_MISS.match(line)
    if not line.startswith(PREFIX) and near is not None:
        shown = line[: near.end() + 1].decode("utf-8", "replace")
        raise ValueError(
            f"{shown!r} looks like an owner line but is not one: write {FORMAT!r} from the first column "
            "(one '#', one space, 'syncd-owner:' in lower case)"
        )
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"the owner line is over {MAX_LINE_BYTES} bytes: tincd reads the rest as a line of its own")
    text = _text(line[len(PREFIX) :])
    if not text:
        raise ValueError(f"no key after 'syncd-owner:' ({FORMAT!r})")
    if text[:1] not in (" ", "\t"):
        raise ValueError(f"a blank is needed after 'syncd-owner:' ({FORMAT!r})")
    rest = text.lstrip(" \t")
    key_type, blob = _read_key(rest, number)
    _decode(key_type, blob)
    words = re.split(r"[ \t]+", rest, maxsplit=2)
    comment = words[2] if len(words) == 3 else ""
    if _holds_a_key(comment):
        # the second key would be read as a comment, and its holder think they own the file
        raise ValueError("one key per owner line (its comment holds another key): give each owner a line of its own")
    return Owner(blob, key_type, comment, number)


def _holds_a_key(comment: str) -> bool:
    """The comment starts with a key type, or a word of it is a public key
    blob: base64 of a length-prefixed key type name (even cut short)."""
    from syncd.signing.allowed_signers import OPENSSH_KEY_NAMES

    words = comment.split()
    if words[:1] and words[0] in OPENSSH_KEY_NAMES:
        return True
    for word in words:
        if len(word) < 16 or not word.startswith("AAAA"):  # a blob starts with a 4-byte length < 2**24
            continue
        try:
            blob = base64.b64decode(word[: len(word) // 4 * 4], validate=True)
        except ValueError:
            continue
        name = blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode("ascii", "replace")
        if len(name) >= 7 and any(known.startswith(name) for known in OPENSSH_KEY_NAMES):
            return True
    return False


def _text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"byte 0x{raw[exc.start]:02x} is not UTF-8") from None
    for found in _NOT_PRINTABLE_ASCII.finditer(text):
        char = found[0]
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise ValueError(f"control character U+{ord(char):04X}: owner lines are plain text")
    return text


def _read_key(text: str, number: int) -> tuple[str, bytes]:
    """``KEYTYPE BASE64`` read by the allowed_signers key reader
    (``allowed_signers.read_key``, OpenSSH's ``sshkey_read()``), so the two
    files accept exactly the same keys."""
    from syncd.signing.allowed_signers import OPENSSH_KEY_NAMES, read_key

    try:
        key = read_key(text, f"line {number}")
    except AllowedSignersError as exc:
        raise ValueError(exc.message.removeprefix(f"line {number}: ")) from None
    if key is None:
        first = text.split(None, 1)[0] if text.split() else ""
        if first in OPENSSH_KEY_NAMES:
            raise ValueError(f"{first} with no key after it ({FORMAT!r})")
        raise ValueError(f"expected an SSH public key ({FORMAT!r}), not {first!r}")
    return key


def _decode(key_type: str, blob: bytes) -> None:
    """The key must load: the allowed_signers reader checks only its type."""
    if key_type == "ssh-ed25519":  # every 32 bytes load; the common case needs no import
        if len(blob) != len(_ED25519_HEAD) + 32 or not blob.startswith(_ED25519_HEAD):
            raise ValueError("the ssh-ed25519 key does not decode (not one 32-byte key)")
        return
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    try:
        public = load_ssh_public_key(f"{key_type} {base64.b64encode(blob).decode()}".encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the {key_type} key does not decode ({exc})") from None
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"RSA key of {public.key_size} bits: syncd verifies RSA signatures of {MIN_RSA_BITS} bits or more"
        )
