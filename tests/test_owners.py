"""Owner lines of host files: what counts, what is owner-invalid, and that an
owner is the same key blob a verified signature carries."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.rules.owners import parse_owners
from syncd.signing.allowed_signers import parse_allowed_signers
from syncd.signing.sshsig import parse_signature
from tests.gitutil import SshKey, make_key

KINDS = [("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048)]
KEY_TYPES = {
    "ed25519": "ssh-ed25519",
    "ecdsa256": "ecdsa-sha2-nistp256",
    "ecdsa384": "ecdsa-sha2-nistp384",
    "ecdsa521": "ecdsa-sha2-nistp521",
    "rsa2048": "ssh-rsa",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    directory = tmp_path_factory.mktemp("owner-keys")
    made = {f"{kind}{bits or ''}": make_key(directory, f"{kind}{bits or ''}", kind, bits) for kind, bits in KINDS}
    made["rsa1024"] = make_key(directory, "rsa1024", "rsa", 1024)
    return made


def pub(key: SshKey) -> str:
    return key.public.read_text().strip()  # keytype base64 comment


def blob(key: SshKey) -> bytes:
    return base64.b64decode(key.public_line().split()[1])


def host(*lines: str) -> bytes:
    return ("Address = 192.0.2.1\nSubnet = 10.0.0.1/32\n" + "".join(line + "\n" for line in lines)).encode()


def found(data: bytes) -> list[tuple[int, str, str]]:
    return [(f.line, f.severity.value, f.message) for f in parse_owners("hosts/a", data).findings]


@pytest.mark.parametrize("kind", list(KEY_TYPES))
def test_every_key_kind_is_an_owner(keys: dict[str, SshKey], kind: str) -> None:
    key = keys[kind]
    parsed = parse_owners("hosts/a", host(f"# syncd-owner: {pub(key)}"))
    assert parsed.findings == ()
    [owner] = parsed.owners
    assert (owner.key, owner.key_type, owner.comment, owner.line) == (blob(key), KEY_TYPES[kind], key.principal, 3)
    # the same bytes as the allowed_signers reader gives, so a signer compares with ==
    [signer] = parse_allowed_signers(f"{key.principal} {key.public_line()}\n")
    assert owner.key == signer.public_key
    assert owner.fingerprint() == _keygen_fingerprint(key)


def _keygen_fingerprint(key: SshKey) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(key.public)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def test_owner_key_equals_the_key_of_a_real_signature(keys: dict[str, SshKey], tmp_path: Path) -> None:
    message = tmp_path / "message"
    message.write_bytes(b"tree 0\n")
    for kind in KEY_TYPES:
        args = ["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(keys[kind].private), str(message)]
        subprocess.run(args, check=True, capture_output=True)
        signature = parse_signature(message.with_name("message.sig").read_bytes())
        message.with_name("message.sig").unlink()
        assert parse_owners("hosts/a", host(f"# syncd-owner: {pub(keys[kind])}")).keys == {signature.public_key}


def test_accepted_spellings(keys: dict[str, SshKey]) -> None:
    ed, rsa = keys["ed25519"], keys["rsa2048"]
    typ, b64 = ed.public_line().split()
    variants = [
        f"# syncd-owner: {typ} {b64}",  # no comment
        f"# syncd-owner:\t{typ}\t{b64}\tme",  # tabs
        f"# syncd-owner:   {typ}  {b64}   me  ",  # runs of blanks, trailing blanks
        f"# syncd-owner: {typ} {b64} me\r",  # CRLF line end
    ]
    for line in variants:
        parsed = parse_owners("hosts/a", host(line))
        assert parsed.findings == (), line
        assert parsed.keys == {blob(ed)}, line
    assert parse_owners("hosts/a", host("# syncd-owner:   ssh-ed25519  " + b64 + "   me  ")).owners[0].comment == "me"
    # OpenSSH reads rsa-sha2-512 as a name for an ssh-rsa key
    parsed = parse_owners("hosts/a", host(f"# syncd-owner: rsa-sha2-512 {rsa.public_line().split()[1]}"))
    assert parsed.findings == () and parsed.owners[0].key_type == "ssh-rsa"


def test_owner_lines_anywhere_and_several(keys: dict[str, SshKey]) -> None:
    data = (
        f"# syncd-owner: {pub(keys['ed25519'])}\nSubnet = 10.0.0.1/32\n# a comment\n"
        f"-----BEGIN RSA PUBLIC KEY-----\nMIIB\n-----END RSA PUBLIC KEY-----\n# syncd-owner: {pub(keys['ecdsa256'])}\n"
    ).encode()
    parsed = parse_owners("hosts/a", data)
    assert parsed.findings == ()
    assert [o.line for o in parsed.owners] == [1, 7]


def near_misses(line: str) -> list[str]:
    typ, b64 = line.split()[:2]
    return [
        f"#syncd-owner: {typ} {b64}",
        f"#  syncd-owner: {typ} {b64}",
        f"## syncd-owner: {typ} {b64}",
        f"# Syncd-Owner: {typ} {b64}",
        f"# SYNCD-OWNER: {typ} {b64}",
        f"# syncd-owner {typ} {b64}",
        f"# syncd owner: {typ} {b64}",
        f"# syncdowner: {typ} {b64}",
        f"# syncd_owners: {typ} {b64}",
        f" # syncd-owner: {typ} {b64}",
        f"\t# syncd-owner: {typ} {b64}",
    ]


def test_near_misses_are_findings_not_comments(keys: dict[str, SshKey]) -> None:
    for line in near_misses(keys["ed25519"].public_line()):
        parsed = parse_owners("hosts/a", host(line))
        assert parsed.owners == (), line
        [(number, severity, message)] = found(host(line))
        assert (number, severity) == (3, "error"), line
        assert "looks like an owner line" in message and "# syncd-owner: KEYTYPE BASE64" in message, line


def test_ordinary_comments_are_not_owner_lines() -> None:
    for line in ["# owner: alice", "# The owners of this node: see the wiki", "# syncd manages this file", "#"]:
        assert parse_owners("hosts/a", host(line)) == parse_owners("hosts/a", host()), line


def _flip_spare_bits(b64: str) -> str:
    """The same bytes in non-canonical base64 (spare bits set; the input needs padding)."""
    assert b64.endswith("=")
    body = b64.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return body[:-1] + alphabet[alphabet.index(body[-1]) | 1] + "=" * (len(b64) - len(body))


def _wire(*parts: bytes) -> str:
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).decode()


def invalid_lines(keys: dict[str, SshKey]) -> list[tuple[str, str]]:
    ed_typ, ed_b64 = keys["ed25519"].public_line().split()
    ec_typ, ec_b64 = keys["ecdsa256"].public_line().split()
    raw = base64.b64decode(ec_b64)
    bad_point = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    return [
        ("# syncd-owner:", "no key after"),
        (f"# syncd-owner:{ed_typ} {ed_b64}", "a blank is needed"),
        ("# syncd-owner: alice", "expected an SSH public key"),
        (f"# syncd-owner: {ed_typ}", "with no key after it"),
        (f"# syncd-owner: {ec_typ} {_flip_spare_bits(ec_b64)}", "not valid base64"),
        (f"# syncd-owner: {ed_typ} {ed_b64[:-3]}", "not valid base64"),
        (f"# syncd-owner: {ed_typ} {ed_b64[:-4]}", "does not decode"),  # a truncated key
        (f"# syncd-owner: ssh-rsa {ed_b64}", "key type ssh-rsa but the key is ssh-ed25519"),
        (f"# syncd-owner: {ed_typ} {_wire(b'ssh-ed25519', bytes(31))}", "does not decode"),
        (f"# syncd-owner: {ed_typ} {_wire(b'ssh-ed25519', bytes(32), b'x')}", "does not decode"),
        (f"# syncd-owner: {ec_typ} {bad_point}", "does not decode"),
        (f"# syncd-owner: {pub(keys['rsa1024'])}", "RSA key of 1024 bits"),
        (f"# syncd-owner: sk-ssh-ed25519@openssh.com {ed_b64}", "security-key"),
        (f"# syncd-owner: ssh-dss {_wire(b'ssh-dss', b'p', b'q', b'g', b'y')}", "'ssh-dss' is not supported"),
        (f"# syncd-owner: ssh-ed25519-cert-v01@openssh.com {ed_b64}", "certificates are not supported"),
        (f"# syncd-owner: {ed_typ} {ed_b64} {ec_typ} {ec_b64}", "one key per owner line"),
        (f"# syncd-owner: {ed_typ} {ed_b64} own1 {ec_typ} {ec_b64} own2", "one key per owner line"),
        (f"# syncd-owner: {ed_typ} {ed_b64} own1 {ec_b64}", "one key per owner line"),
        (f"# syncd-owner: {ed_typ} {ed_b64} own1 {ec_b64[:24]}", "one key per owner line"),  # even cut short
        (f"# syncd-owner: {ed_typ} {ed_b64} alice\x1b[2J", "control character U+001B"),
        (f"# syncd-owner: {ed_typ} {ed_b64} alice\u2028bob", "control character U+2028"),
        (f"# syncd-owner: {ed_typ} {ed_b64} {'x' * 2100}", "over 2048 bytes"),
    ]


def test_invalid_owner_lines_name_the_line(keys: dict[str, SshKey]) -> None:
    for line, expected in invalid_lines(keys):
        parsed = parse_owners("hosts/a", host(line))
        assert parsed.owners == (), line
        [(number, severity, message)] = found(host(line))
        assert (number, severity) == (3, "error"), line
        assert expected in message, (line, message)
        assert message.endswith("makes no one an owner"), message
    latin1 = host().replace(b"\n", b"\n# syncd-owner: " + keys["ed25519"].public_line().encode() + b" J\xf6rg\n", 1)
    assert found(latin1) == [(2, "error", "byte 0xf6 is not UTF-8; as written, this line makes no one an owner")]


def test_a_key_twice_is_a_warning_and_still_an_owner(keys: dict[str, SshKey]) -> None:
    line = f"# syncd-owner: {pub(keys['ed25519'])}"
    parsed = parse_owners("hosts/a", host(line, line))
    assert [o.line for o in parsed.owners] == [3]
    assert found(host(line, line)) == [(4, "warning", "the same key as the owner line 3; one is enough")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"# syncd-owner: ", b"#syncd-owner:", b"# syncd-owner: ssh-ed25519 "]))
def test_arbitrary_bytes_never_raise(tail: bytes, prefix: bytes) -> None:
    parsed = parse_owners("hosts/a", prefix + tail)
    assert all(f.code == "owner-invalid" for f in parsed.findings)
    assert len(parsed.owners) + len(parsed.findings) <= (prefix + tail).count(b"\n") + 1
