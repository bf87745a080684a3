"""The host-file parser against the line grammar and variables of docs/host-files.md."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.findings import Severity
from syncd.tinc.conf import MAX_LINE_BYTES, Entry, read_config
from syncd.tinc.hostfile import HostFile, parse_host_file
from tests.keyfactory import ed25519_text, rsa_pem

KEY = rsa_pem()


def parse(text: str | bytes, tinc: str = "1.0", min_rsa_bits: int = 2048, key: bool = True) -> HostFile:
    data = text.encode() if isinstance(text, str) else text
    if key:
        data = data + b"\n" + KEY.encode()
    return parse_host_file("hosts/n", data, tinc=tinc, min_rsa_bits=min_rsa_bits)


def codes(host: HostFile) -> list[tuple[int, str, str]]:
    return [(f.line, f.severity.value, f.code) for f in host.findings]


# --- line grammar ----------------------------------------------------------------

SEPARATORS = ["Subnet = 10.0.0.0/24", "Subnet=10.0.0.0/24", "Subnet 10.0.0.0/24", "Subnet\t10.0.0.0/24",
              "subnet = 10.0.0.0/24", "SUBNET\t=\t10.0.0.0/24", "Subnet = 10.0.0.0/24   \t",
              "Subnet = 10.0.0.0/24\r"]  # fmt: skip


@pytest.mark.parametrize("line", SEPARATORS)
def test_every_separator_tincd_accepts(line: str) -> None:
    host = parse(line + "\n")
    assert codes(host) == []
    assert [str(s) for s, _ in host.subnets] == ["10.0.0.0/24"]


def test_comments_and_blank_lines_are_skipped_but_not_trailing_comments() -> None:
    host = parse("# a comment\n\n#Subnet = 1.2.3.4\nSubnet = 10.0.0.0/24 # office\n")
    assert codes(host) == [(4, "error", "subnet-invalid")]
    assert host.subnets == []


SYNTAX = [
    ("  Subnet = 10.0.0.0/24\n", 1, "indented line"),
    ("\tPort = 655\n", 1, "indented line"),
    ("Subnet: 10.0.0.0/24\n", 1, "write 'Subnet = 10.0.0.0/24'"),
    ("Subnet\n", 1, "no value for 'Subnet'"),
    ("Port =\n", 1, "no value for 'Port'"),
    ("Port =   \n", 1, "no value for 'Port'"),
    ("   \n", 1, "a line of only blanks"),
    ("-----END RSA PUBLIC KEY-----\n", 1, "without a BEGIN"),
]


@pytest.mark.parametrize(("text", "line", "message"), SYNTAX)
def test_lines_tincd_ignores_or_stops_at_are_syntax_findings(text: str, line: int, message: str) -> None:
    host = parse(text)
    syntax = [f for f in host.findings if f.code == "syntax"]
    assert len(syntax) == 1, host.findings
    assert syntax[0].line == line
    assert message in syntax[0].message


def test_no_value_stops_reading_the_rest_of_the_file() -> None:
    host = parse("Subnet = 10.0.0.0/24\nPort\nSubnet = 10.1.0.0/24\nBogus = 1\n")
    assert host.stopped_at == 2
    assert [str(s) for s, _ in host.subnets] == ["10.0.0.0/24"]
    stop = next(f for f in host.findings if f.code == "syntax")
    assert "lines 3-" in stop.message and "refuses" in stop.message
    assert not any(f.code == "variable-unknown" for f in host.findings)  # line 4 is never read


def test_double_equals_gives_a_value_starting_with_equals() -> None:
    host = parse("Subnet == 10.0.0.0/24\n")
    assert codes(host) == [(1, "error", "subnet-invalid")]
    assert "'= 10.0.0.0/24'" in host.findings[0].message


def test_long_line_is_split_like_fgets() -> None:
    long_value = "a" * (MAX_LINE_BYTES + 10)
    host = parse(f"Cipher = {long_value}\n")
    assert (1, "error", "syntax") in codes(host)
    assert "2048 bytes" in next(f.message for f in host.findings if f.code == "syntax")


def test_line_of_exactly_2048_bytes_is_fine() -> None:
    line = "Subnet = 10.0.0.0/24" + " " * (MAX_LINE_BYTES - 20)
    assert len(line) == MAX_LINE_BYTES
    assert codes(parse(line + "\n")) == []


def test_crlf_line_endings_are_read_like_tincd() -> None:
    host = parse("Subnet = 10.0.0.0/24\r\nPort = 655\r\n")
    assert codes(host) == []
    assert host.first("Port") is not None and host.first("Port").value == "655"  # type: ignore[union-attr]


def test_only_one_carriage_return_is_stripped() -> None:
    host = parse("Port = 655\r\r\n")
    assert (1, "error", "value-invalid") in codes(host)


def test_pem_blocks_are_skipped_and_unterminated_blocks_hide_the_rest() -> None:
    host = parse_host_file("hosts/n", f"Subnet = 10.0.0.0/24\n{KEY}Port = 655\n".encode())
    assert codes(host) == []
    assert host.first("Port") is not None
    broken = parse_host_file("hosts/n", b"-----BEGIN RSA PUBLIC KEY-----\nMIIB\nSubnet = 10.0.0.0/24\n")
    assert (1, "error", "syntax") in codes(broken)
    assert broken.subnets == []  # hidden inside the never-ending block
    assert "never closed" in broken.findings[0].message


def test_indented_begin_is_not_a_pem_block() -> None:
    body = KEY.replace("-----BEGIN", "    -----BEGIN")
    host = parse_host_file("hosts/n", body.encode())
    found = codes(host)
    assert (1, "error", "syntax") in found  # indented line
    assert (2, "error", "syntax") in found  # base64 line: no value, tincd stops
    assert any(code == "key-missing" for _, _, code in found)


def test_nul_and_non_utf8_are_encoding_findings() -> None:
    host = parse(b"Subnet = 10.0.0.0/24\nPort = 65\x005\n")
    assert (2, "error", "encoding") in codes(host)
    assert "NUL" in next(f.message for f in host.findings if f.code == "encoding")
    host = parse(b"# caf\xe9\nSubnet = 10.0.0.0/24\n")
    assert (1, "error", "encoding") in codes(host)


# --- variables ---------------------------------------------------------------------

VALUES_OK = [
    "Address = 1.2.3.4", "Address = 1.2.3.4 655", "Address = 2001:db8::1 655", "Address = vpn.example.org",
    "Address = vpn.example.org tinc", "Address = 1.2.3.4  655", "Address = gw01n01.gw.freifunk-stuttgart.de",
    "Port = 655", "Port = 65535",
    "Port = tinc", "IndirectData = yes", "TCPOnly = NO", "ClampMSS = Yes", "PMTUDiscovery = no", "PMTU = 1280",
    "MACLength = 4", "Cipher = aes-256-cbc", "Cipher = none", "Digest = sha256", "Compression = 0",
    "Compression = 11",
]  # fmt: skip


@pytest.mark.parametrize("line", VALUES_OK)
def test_valid_values(line: str) -> None:
    assert codes(parse(line + "\n")) == []


VALUES_BAD = [
    "Address = [2001:db8::1]", "Address = fe80::1%eth0", "Address = 256.1.1.1", "Address = 1.2.3.4 0",
    "Address = 1.2.3.4 655 extra", "Address = 1.2.3.4 70000", "Address = -bad-.example.org", "Port = 0",
    "Port = 65536", "Port = 6 55", "IndirectData = true", "TCPOnly = 1", "PMTU = big", "PMTU = 0",
    "Compression = 12", "Compression = -1", "Cipher = aes 256",
]  # fmt: skip


@pytest.mark.parametrize("line", VALUES_BAD)
def test_invalid_values(line: str) -> None:
    assert codes(parse(line + "\n")) == [(1, "error", "value-invalid")]


def test_compression_12_is_valid_for_tinc_11() -> None:
    assert codes(parse(f"Compression = 12\nEd25519PublicKey = {ed25519_text()}\n", tinc="1.1")) == []


def test_tinc_11_file_without_ed25519_key_warns() -> None:
    host = parse("Subnet = 10.0.0.0/24\n", tinc="1.1")
    assert codes(host) == [(1, "warning", "key-missing")]
    assert "tinc 1.1 peers learn the key and append it" in host.findings[0].message


@pytest.mark.parametrize(
    ("line", "code", "severity"),
    [
        ("Name = my_pc", "variable-server-only", "error"),
        ("ConnectTo = gateway", "variable-server-only", "error"),
        ("Mode = switch", "variable-server-only", "error"),
        ("StrictSubnets = yes", "variable-server-only", "error"),
        ("PrivateKeyFile = /etc/tinc/rsa_key.priv", "variable-server-only", "error"),
        ("PublicKeyFile = /etc/tinc/rsa_key.pub", "variable-local-path", "error"),
        ("Ed25519PublicKeyFile = /etc/tinc/ed25519_key.pub", "variable-local-path", "error"),
        ("Colour = blue", "variable-unknown", "warning"),
        ("Weight = 5", "variable-unknown", "warning"),  # tinc 1.1 only
    ],
)
def test_misplaced_and_unknown_variables(line: str, code: str, severity: str) -> None:
    assert codes(parse(line + "\n")) == [(1, severity, code)]


def test_private_key_variable_message_says_it_is_compromised() -> None:
    host = parse("PrivateKey = 0123\n")
    assert "now public" in host.findings[0].message


def test_single_valued_variable_first_wins() -> None:
    host = parse("Port = 655\nPort = 656\nSubnet = 10.0.0.0/24\nSubnet = 10.1.0.0/24\n")
    assert codes(host) == [(2, "warning", "variable-duplicate")]
    assert host.first("Port") is not None and host.first("Port").value == "655"  # type: ignore[union-attr]
    assert len(host.subnets) == 2


def test_variable_name_repeated_in_value() -> None:
    host = parse("Port = Port = 655\n")
    assert codes(host) == [(1, "error", "value-invalid")]
    assert "write 'Port = 655'" in host.findings[0].message


def test_short_mac_groups_warn() -> None:
    assert codes(parse("Subnet = 1:2:3:4:5:6\n")) == [(1, "warning", "subnet-invalid")]


# --- keys ------------------------------------------------------------------------------


def test_pkcs1_and_spki_rsa_keys_load() -> None:
    for pem in (rsa_pem(), rsa_pem(spki=True)):
        host = parse_host_file("hosts/n", f"Subnet = 10.0.0.0/24\n{pem}".encode())
        assert codes(host) == []
        assert [(k.algorithm, k.bits) for k, _ in host.keys] == [("rsa", 2048)]


def test_key_lines_ending_in_blanks_are_fine() -> None:
    # OpenSSL's PEM reader ignores trailing blanks; tincd loads such a key.
    pem = "\n".join(line + "  \t" if not line.startswith("-----") else line for line in rsa_pem().splitlines())
    host = parse_host_file("hosts/n", pem.encode() + b"\n")
    assert codes(host) == []


def test_damaged_rsa_key_is_invalid() -> None:
    lines = rsa_pem().splitlines()
    lines[3] = lines[3][:10] + "!!" + lines[3][12:]
    host = parse_host_file("hosts/n", ("\n".join(lines) + "\n").encode())
    assert (1, "error", "key-invalid") in codes(host)
    lines = rsa_pem().splitlines()
    del lines[2]  # still base64, no longer DER
    host = parse_host_file("hosts/n", ("\n".join(lines) + "\n").encode())
    assert (1, "error", "key-invalid") in codes(host)
    assert not any(c == "key-missing" for _, _, c in codes(host))


def test_weak_rsa_key() -> None:
    host = parse_host_file("hosts/n", rsa_pem(1024).encode())
    assert codes(host) == [(1, "error", "key-weak")]
    assert codes(parse_host_file("hosts/n", rsa_pem(1024).encode(), min_rsa_bits=1024)) == []


def test_missing_key() -> None:
    host = parse("Subnet = 10.0.0.0/24\n", key=False)
    assert codes(host) == [(1, "error", "key-missing")]


def test_private_key_block_is_flagged() -> None:
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
    host = parse(text)
    assert (1, "error", "key-invalid") in codes(host)
    assert "no longer secret" in host.findings[0].message


def test_obsolete_hex_public_key() -> None:
    modulus = format(int.from_bytes(b"\xc3" * 256, "big") | 1, "X")
    host = parse_host_file("hosts/n", f"PublicKey = {modulus}\n".encode())
    assert codes(host) == [(1, "warning", "variable-unknown")]
    assert host.keys[0][0].bits == 2048


def test_ed25519_key_for_tinc_11() -> None:
    host = parse_host_file("hosts/n", f"Ed25519PublicKey = {ed25519_text()}\n".encode(), tinc="1.1")
    assert codes(host) == []
    assert host.keys[0][0].algorithm == "ed25519"


def test_ed25519_only_node_lacks_a_key_in_tinc_10() -> None:
    host = parse_host_file("hosts/n", f"Ed25519PublicKey = {ed25519_text()}\n".encode(), tinc="1.0")
    assert sorted(codes(host)) == [(1, "error", "key-missing"), (1, "warning", "variable-unknown")]
    assert "tinc 1.1 only" in next(f.message for f in host.findings if f.code == "key-missing")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("abc", "43 characters"),
        ("A" * 42 + "!", "not in tinc's base64"),
        ("/" * 42 + "H", "not a canonical"),  # y = 2^255 - 1 >= 2^255 - 19
    ],
)
def test_ed25519_value_checks(value: str, problem: str) -> None:
    host = parse_host_file("hosts/n", f"Ed25519PublicKey = {value}\n".encode(), tinc="1.1")
    assert codes(host) == [(1, "error", "key-invalid")]
    assert problem in host.findings[0].message


def test_ed25519_pem_block() -> None:
    text = f"-----BEGIN ED25519 PUBLIC KEY-----\n{ed25519_text()}\n-----END ED25519 PUBLIC KEY-----\n"
    host = parse_host_file("hosts/n", text.encode(), tinc="1.1")
    assert codes(host) == []
    assert host.keys[0][0].algorithm == "ed25519"


# --- properties ------------------------------------------------------------------------

_line = st.one_of(
    st.sampled_from(["Subnet = 10.0.0.0/24", "-----BEGIN RSA PUBLIC KEY-----", "-----END", "  x", "Port", "# c", ""]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    host = parse_host_file("hosts/n", data, tinc="1.1")
    _assert_valid_lines(host, data)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, max_size=30), st.sampled_from(["\n", "\r\n"]))
def test_every_finding_has_a_valid_line_number(lines: list[str], newline: str) -> None:
    data = newline.join(lines).encode("utf-8", "surrogateescape")
    host = parse_host_file("hosts/n", data)
    _assert_valid_lines(host, data)


def _assert_valid_lines(host: HostFile, data: bytes) -> None:
    physical = max(1, len(data.split(b"\n")))
    for finding in host.findings:
        assert 1 <= finding.line <= physical, finding
        assert finding.severity in (Severity.ERROR, Severity.WARNING)
        assert finding.code and finding.message


def test_byte_order_mark_hides_the_first_line() -> None:
    host = parse(b"\xef\xbb\xbfSubnet = 10.0.0.0/24\n")
    assert (1, "error", "encoding") in codes(host)
    assert host.subnets == []  # tincd reads the variable "\ufeffSubnet" and ignores it


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="Ab1é \t=#x-", min_size=1, max_size=14))
def test_every_line_splits_as_tincd_splits_it(text: str) -> None:
    """read_config's shortcut for the plain ``Name = value`` line agrees
    with the general split (variable to the first blank or '=', then
    blanks, one optional '=', blanks) on every line."""
    entries: list[Entry] = []
    read_config("x", f"{text}\n".encode(), [], entries.append)
    stripped = text.rstrip(" \t")
    if not stripped or stripped[0] in "#-":
        return
    end = min((i for i, c in enumerate(stripped) if c in " \t="), default=len(stripped))
    variable, rest = stripped[:end], stripped[end:].lstrip(" \t")
    value = rest[1:].lstrip(" \t") if rest.startswith("=") else rest
    assert [(e.variable, e.value) for e in entries] == ([(variable, value)] if variable and value else [])
