"""The public keys tincd loads from a host file, in its order of precedence,
each checked (pure).

RSA: ``PublicKey`` (a bare hex modulus, obsolete), then a PEM block, PKCS#1
before SPKI.  Ed25519 (tinc 1.1 only): ``Ed25519PublicKey``, then a PEM
block.  See ``read_rsa_public_key()`` and ``read_ecdsa_public_key()`` in
tinc's ``src/net_setup.c``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from syncd.findings import Finding, error, warning
from syncd.tinc import keys
from syncd.tinc.conf import Entry, PemBlock

RSA_LABELS = ("RSA PUBLIC KEY", "PUBLIC KEY")  # PEM_read_RSAPublicKey, then PEM_read_RSA_PUBKEY
ED25519_LABEL = "ED25519 PUBLIC KEY"
_PRIVATE_LABEL_RE = re.compile(r"(?:[A-Z0-9 ]* )?PRIVATE KEY\Z")


class _Loaded:
    """The keys of one file as they are loaded, and the findings about them."""

    __slots__ = ("findings", "firsts", "keys", "path", "pem_blocks", "stopped_at")

    def __init__(self, path: str, firsts: Mapping[str, Entry], pem_blocks: Sequence[PemBlock], stopped_at: int | None):
        self.path, self.firsts, self.pem_blocks, self.stopped_at = path, firsts, pem_blocks, stopped_at
        self.keys: list[tuple[keys.PublicKey, int]] = []  # (key, line)
        self.findings: list[Finding] = []

    def first(self, variable: str) -> Entry | None:
        return self.firsts.get(variable.lower())


def load_keys(
    path: str,
    firsts: Mapping[str, Entry],
    pem_blocks: Sequence[PemBlock],
    stopped_at: int | None,
    *,
    tinc: str,
    min_rsa_bits: int,
) -> tuple[list[tuple[keys.PublicKey, int]], list[Finding]]:
    """Every key of the host file ``path`` (its first entry of each variable,
    its PEM blocks, the line where tincd stops reading), in tinc's order of
    precedence, checked: the keys with their lines, and the findings."""
    if tinc == "1.1" and not pem_blocks and "publickey" not in firsts:
        # the common tinc 1.1 file: one Ed25519PublicKey line and nothing
        # else, so nothing for the general path below to find
        ed = firsts.get("ed25519publickey")
        if ed is not None:
            try:
                return [(keys.ed25519_from_text(ed.value), ed.line)], []
            except keys.KeyFormatError:
                pass  # the general path below reports it
    host = _Loaded(path, firsts, pem_blocks, stopped_at)
    _load(host, tinc, min_rsa_bits)
    return host.keys, host.findings


def _load(host: _Loaded, tinc: str, min_rsa_bits: int) -> None:
    for block in host.pem_blocks:
        if _PRIVATE_LABEL_RE.match(block.label):
            host.findings.append(
                error(
                    host.path,
                    block.begin,
                    "key-invalid",
                    f"a {block.label} is published in this host file: remove it, and replace the key, "
                    "it is no longer secret",
                )
            )
    _rsa_keys(host, min_rsa_bits)
    _ed25519_keys(host)
    _missing_keys(host, tinc)


def _add(host: _Loaded, key: keys.PublicKey, line: int, min_rsa_bits: int) -> None:
    host.keys.append((key, line))
    if key.algorithm == "rsa" and key.bits < min_rsa_bits:
        host.findings.append(
            error(
                host.path,
                line,
                "key-weak",
                f"RSA key of {key.bits} bits is below the policy's min_rsa_bits ({min_rsa_bits})",
            )
        )


def _rsa_keys(host: _Loaded, min_rsa_bits: int) -> None:
    path = host.path
    hex_key = host.first("PublicKey")
    if hex_key is not None:
        host.findings.append(
            warning(
                path,
                hex_key.line,
                "variable-unknown",
                "PublicKey (a bare hex modulus) is obsolete; use a PEM block (tinc -n NET export)",
            )
        )
        try:
            _add(host, keys.rsa_from_hex(hex_key.value), hex_key.line, min_rsa_bits)
        except keys.KeyFormatError as exc:
            host.findings.append(error(path, hex_key.line, "key-invalid", f"PublicKey: {exc}"))
    rsa_loaded = hex_key is not None
    for label in RSA_LABELS:
        for block in host.pem_blocks:
            if block.label != label:
                continue
            if block.end is None:
                continue  # already reported as syntax
            try:
                key = keys.rsa_from_pem_body(label, list(block.body))
            except keys.KeyFormatError as exc:
                host.findings.append(error(path, block.begin, "key-invalid", f"{label}: {exc}"))
                continue
            if rsa_loaded:
                host.findings.append(
                    warning(path, block.begin, "key-invalid", f"a second RSA key ({label}); tincd uses only the first")
                )
                continue
            _add(host, key, block.begin, min_rsa_bits)
            rsa_loaded = True


def _ed25519_keys(host: _Loaded) -> None:
    ed_entry: Entry | None = host.first("Ed25519PublicKey")
    ed_loaded = False
    if ed_entry is not None:
        try:
            host.keys.append((keys.ed25519_from_text(ed_entry.value), ed_entry.line))
            ed_loaded = True
        except keys.KeyFormatError as exc:
            host.findings.append(error(host.path, ed_entry.line, "key-invalid", f"Ed25519PublicKey: {exc}"))
    for block in host.pem_blocks:
        if block.label != ED25519_LABEL or block.end is None:
            continue
        try:
            key = keys.ed25519_from_text("".join(line.strip() for line in block.body))
        except keys.KeyFormatError as exc:
            host.findings.append(error(host.path, block.begin, "key-invalid", f"{ED25519_LABEL}: {exc}"))
            continue
        if not ed_loaded:
            host.keys.append((key, block.begin))
            ed_loaded = True


def _missing_keys(host: _Loaded, tinc: str) -> None:
    path = host.path
    has_rsa = any(k.algorithm == "rsa" for k, _ in host.keys)
    has_ed = any(k.algorithm == "ed25519" for k, _ in host.keys)
    if tinc == "1.1" and has_rsa and not has_ed and not any(f.code == "key-invalid" for f in host.findings):
        # tinc 1.1 appends the Ed25519 key it learns from a peer to that peer's
        # host file; syncd keeps it there (learnedkey) and reports it, but
        # until the repository has the key a tinc 1.1 peer that did not learn
        # it yet cannot accept this node's connections.
        host.findings.append(
            warning(
                path,
                1,
                "key-missing",
                "no Ed25519PublicKey: tinc 1.1 peers learn the key and append it to their copy of this "
                "file (syncd keeps it and says so); add the node's Ed25519PublicKey to the repository",
            )
        )
    if (tinc == "1.0" and has_rsa) or (tinc == "1.1" and (has_rsa or has_ed)):
        return
    if any(f.code == "key-invalid" for f in host.findings):
        return  # a key is there but broken: key-invalid already says so
    wanted = "an RSA public key (PEM block)" if tinc == "1.0" else "an Ed25519PublicKey or an RSA public key"
    hint = ""
    if host.stopped_at is not None:
        hint = f"; tincd stops reading at line {host.stopped_at}, before any key"
    elif tinc == "1.0" and has_ed:
        hint = "; its Ed25519 key is for tinc 1.1 only"
    host.findings.append(error(path, 1, "key-missing", f"no public key: tincd {tinc} needs {wanted}{hint}"))
