"""The Ed25519 key tincd 1.1 appends to a peer's host file (pure).

tinc 1.1 learns a peer's Ed25519 public key when the peer's host file has
none: during the legacy handshake (``upgrade_h()`` in tinc's
``src/protocol_auth.c``) or when the peer answers a key request
(``ANS_PUBKEY`` in ``src/protocol_key.c``).  Either way it calls
``append_config_file()`` (``src/conf.c``), which opens ``hosts/PEER`` in
append mode and writes exactly::

    "\\n# The following line was automatically added by tinc\\nEd25519PublicKey = %s\\n"

Putting the repository's version back would only make tincd learn the key
again at its next connection and append it again: a reload storm.  So an
installed file that is the repository's version plus that block counts as
the repository's version (docs/host-files.md, "What tincd writes"), when
all of this holds, byte for byte:

* the installed bytes are the repository's bytes followed by one or more
  such blocks and nothing else (tincd may append twice when a key request
  and a handshake cross; every block then names the same key);
* the key is a valid Ed25519 key in tinc's base64 (``keys.ed25519_from_text``);
* the repository's version names no Ed25519 key in any form tincd reads
  (``Ed25519PublicKey``, ``Ed25519PublicKeyFile``, an ``ED25519 PUBLIC KEY``
  block): tincd appends only when it has none, so an appended key beside
  one the repository names was not written by tincd, and is drift;
* reading the installed file as tincd does gives that key (nothing in the
  repository's version keeps tincd from reading the appended line).

Anything else (another key, another comment, a change anywhere else) is
drift, repaired as always.
"""

from __future__ import annotations

from syncd.findings import Finding
from syncd.tinc import keys
from syncd.tinc.conf import Entry, read_config

COMMENT = b"# The following line was automatically added by tinc"
_HEAD = b"\n" + COMMENT + b"\nEd25519PublicKey = "
_BLOCK_BYTES = len(_HEAD) + keys.ED25519_TEXT_LENGTH + 1
_ED25519_VARIABLES = frozenset({"ed25519publickey", "ed25519publickeyfile"})
_ED25519_LABEL = "ED25519 PUBLIC KEY"


def appended_key(repo: bytes, installed: bytes) -> str | None:
    """The key tincd appended to ``repo`` to make ``installed``, or None when
    ``installed`` is anything else (see the module doc for the rule)."""
    if len(installed) <= len(repo) or not installed.startswith(repo):
        return None
    found = _block_keys(installed[len(repo) :])
    if found is None:
        return None
    try:
        keys.ed25519_from_text(found)
    except keys.KeyFormatError:
        return None
    if _ed25519_sources(repo):
        return None
    sources = _ed25519_sources(installed)
    return found if sources[:1] == [("ed25519publickey", found)] else None


def split_appended(installed: bytes) -> tuple[bytes, str] | None:
    """``installed`` without the blocks tincd appended at its end, and their
    key; None when it does not end in such a block.  (The bytes before the
    blocks are then checked with ``appended_key`` against the version they
    must equal.)"""
    end = len(installed)
    found: str | None = None
    while end >= _BLOCK_BYTES:
        key = _block_keys(installed[end - _BLOCK_BYTES : end])
        if key is None or (found is not None and key != found):
            break
        found, end = key, end - _BLOCK_BYTES
    return None if found is None else (installed[:end], found)


def block(key: str) -> bytes:
    """What tincd appends for ``key``."""
    return _HEAD + key.encode() + b"\n"


def line(key: str) -> str:
    """The line to add to the repository's host file."""
    return f"Ed25519PublicKey = {key}"


def advice(name: str, key: str) -> str:
    """What ``sync``, ``run`` and ``status`` say of a learned key."""
    return (
        f"tincd learned {name}'s Ed25519 key and appended it to hosts/{name}: kept (not drift); "
        f"add this line to {name}'s host file in the repository: {line(key)}"
    )


def _block_keys(tail: bytes) -> str | None:
    """The one key of a run of whole blocks, or None."""
    if not tail or len(tail) % _BLOCK_BYTES:
        return None
    found = None
    for start in range(0, len(tail), _BLOCK_BYTES):
        block = tail[start : start + _BLOCK_BYTES]
        if not block.startswith(_HEAD) or not block.endswith(b"\n"):
            return None
        key = block[len(_HEAD) : -1]
        if not key.isascii() or (found is not None and key.decode() != found):
            return None
        found = key.decode()
    return found


def _ed25519_sources(data: bytes) -> list[tuple[str, str]]:
    """Where tincd would take an Ed25519 key from in this file, in file
    order: its variables (``read_ecdsa_public_key()``, tinc's
    ``src/keys.c``) and any ``ED25519 PUBLIC KEY`` block."""
    found: list[tuple[str, str]] = []

    def entry(item: Entry) -> None:
        name = item.variable.lower()
        if name in _ED25519_VARIABLES:
            found.append((name, item.value))

    findings: list[Finding] = []
    conf = read_config("", data, findings, entry)
    return found + [("pem", "") for block in conf.pem_blocks if block.label == _ED25519_LABEL]
