"""A git commit object split into what was signed and the signature (pure).

git signs a commit's bytes, then inserts the signature as a ``gpgsig``
header at the end of the header block, each further line of the armour
prefixed by one space (commit.c: ``add_header_signature``); verifying, it
removes that header again (``parse_signed_commit``).  Everything but the
``gpgsig`` lines is covered by the signature — and so the signature lines
themselves are malleable: a copy of a signed commit with an extra blank
continuation line, a different base64 wrapping, the header moved, or an
added ``gpgsig-sha256`` header still verifies, under a different commit id.

A node records commit ids (the rollback guard); a server that once served
such a copy would fork the node away from the honest history.  So syncd
accepts a signed commit only in the exact encoding git writes: one
``gpgsig`` header, last, holding ``ssh-keygen``'s armour (base64 wrapped at
70 columns, sshsig.c ``sshsig_armor``); anything else is refused before
anything is recorded.  The payload returned is the raw bytes without the
header, byte for byte what git signed (not a re-serialisation).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import NamedTuple

ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"
ARMOR_WIDTH = 70
_SIGNATURE_HEADERS = (b"gpgsig", b"gpgsig-sha256")


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    payload: bytes  # the commit without its gpgsig header: what was signed
    signature: bytes | None
    committer_time: int
    parents: tuple[str, ...]
    summary: str
    noncanonical: str | None = None  # why the signature is not in git's own encoding


class SignedCommit(NamedTuple):
    payload: bytes  # what was signed
    signature: bytes | None  # the armoured signature, continuation spaces removed
    noncanonical: str | None  # why the signature's encoding is not git's, or None


def split_commit(raw: bytes) -> SignedCommit:
    """Split a raw commit object (without the ``commit N\\0`` prefix)."""
    end = raw.find(b"\n\n")
    header_end = len(raw) if end < 0 else end + 1
    lines = raw[:header_end].split(b"\n")[:-1] if header_end else []
    headers: list[tuple[bytes, list[bytes]]] = []  # name, its lines (first included)
    for line in lines:
        if line.startswith(b" ") and headers:
            headers[-1][1].append(line)
        else:
            headers.append((line.split(b" ", 1)[0], [line]))
    signed = [i for i, (name, _) in enumerate(headers) if name in _SIGNATURE_HEADERS]
    if not signed:
        return SignedCommit(raw, None, None)
    kept = b"".join(line + b"\n" for i, (_, block) in enumerate(headers) if i not in signed for line in block)
    payload = kept + raw[header_end:]
    first = signed[0]
    name, block = headers[first]
    signature = b"".join(line[len(name) + 1 :] + b"\n" if k == 0 else line[1:] + b"\n" for k, line in enumerate(block))
    return SignedCommit(payload, signature, _noncanonical(headers, signed, signature))


def _noncanonical(headers: list[tuple[bytes, list[bytes]]], signed: list[int], signature: bytes) -> str | None:
    names = [headers[i][0] for i in signed]
    if len(signed) > 1 or names[0] != b"gpgsig":
        return f"it carries the signature headers {b', '.join(names).decode('ascii', 'replace')}; git writes one gpgsig"
    if signed[0] != len(headers) - 1:
        return "its gpgsig header is not the last header, where git puts it"
    if signature != armor(signature):
        return "its signature armour is re-encoded (git keeps ssh-keygen's exact armour)"
    return None


def armor(signature: bytes) -> bytes:
    """The armour ``ssh-keygen -Y sign`` writes for this signature's blob
    (or an empty string when the blob does not decode)."""
    lines = signature.strip(b"\n").split(b"\n")
    if len(lines) < 2 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        return b""
    try:
        blob = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return b""
    text = base64.b64encode(blob)
    wrapped = [text[i : i + ARMOR_WIDTH] for i in range(0, len(text), ARMOR_WIDTH)]
    return b"\n".join([ARMOR_BEGIN, *wrapped, ARMOR_END]) + b"\n"


def signing_key(info: CommitInfo) -> bytes:
    """The key that made ``info``'s signature, once the signature verifies
    (namespace ``git``) in git's own encoding; ``SignatureError`` else."""
    from syncd.errors import SignatureError

    what = f"commit {info.sha[:12]} ({info.summary!r})"
    if info.noncanonical is not None:
        raise SignatureError(
            f"{what}: {info.noncanonical}: a copy of a signed commit re-encoded by the server or a mirror; "
            "nothing was installed"
        )
    if info.signature is None:
        raise SignatureError(f"{what}: not signed; nothing was installed")
    from syncd.signing.sshsig import parse_signature, verify

    try:
        sig = parse_signature(info.signature)
        verify(sig, info.payload, "git")
    except SignatureError as exc:
        raise SignatureError(f"{what}: {exc.message}; nothing was installed") from None
    return sig.public_key
