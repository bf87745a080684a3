"""The parser's shortcuts for the usual host file agree with its full reading.

The usual file (comments and plain ``Name = value`` lines) is read by
``conf.plain_entries`` and its usual ``Address`` accepted by one match; every
other input takes the line-by-line reader (``conf.read_lines``) and the full
``Address`` check.  Where a shortcut answers, the full path must give the same
answer, byte for byte.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.findings import Finding
from syncd.tinc.conf import MAX_LINE_BYTES, ConfText, Entry, plain_entries, read_config, read_lines
from syncd.tinc.hostfile import _USUAL_ADDRESS_RE, HOST_VARIABLES, address_problem, parse_host_file
from tests.keyfactory import ed25519_text

USUAL = (
    "# node 7\n"
    "Address = node7.vpn.example.org 655\n"
    "Subnet = fd00:0:7::/64\n"
    "Subnet = 10.0.0.7\n"
    f"Ed25519PublicKey = {ed25519_text()}\n"
).encode()


def _full(data: bytes) -> tuple[list[Entry], list[Finding], ConfText]:
    entries: list[Entry] = []
    findings: list[Finding] = []
    conf = read_lines("hosts/n", data, findings, entries.append)
    return entries, findings, conf


def test_the_usual_file_takes_the_shortcut() -> None:
    plain = plain_entries(USUAL)
    assert plain is not None
    assert [(e.line, e.variable) for e in plain] == [
        (2, "Address"),
        (3, "Subnet"),
        (4, "Subnet"),
        (5, "Ed25519PublicKey"),
    ]
    entries, findings, _ = _full(USUAL)
    assert plain == entries and findings == []
    host = parse_host_file("hosts/n", USUAL, tinc="1.1")
    assert host.findings == [] and len(host.subnets) == 2 and len(host.keys) == 1 and host.line_count == 5


def test_what_the_shortcut_leaves_to_the_line_reader() -> None:
    for data in (
        b"Subnet = 10.0.0.1\r\n",  # CR
        b"Subnet = 10.0.0.1\0\n",  # NUL
        "Subnet = 10.0.0.1 # caf\u00e9\n".encode(),  # not ASCII
        b"Subnet=10.0.0.1\n",  # not " = "
        b"Subnet =  10.0.0.1\n",  # the value starts with a blank
        b"  Subnet = 10.0.0.1\n",  # indented
        b"Subnet = \n",  # no value: tincd stops here
        b"   \n",  # only blanks
        b"-----BEGIN RSA PUBLIC KEY-----\n",  # PEM
        b"Subnet: = 10.0.0.1\n",  # not alphanumeric
        b"# " + b"x" * MAX_LINE_BYTES + b"\n",  # cut by tincd's fgets()
    ):
        assert plain_entries(data) is None, data


_plain_line = st.one_of(
    st.sampled_from(["", "#", "# c", "Subnet = 10.0.0.0/24", "Port = 655", "x = y = z", "A = b \t", "Name = x\t y"]),
    st.builds(
        "{} = {}{}".format,
        st.text(alphabet="Ab1:_-", min_size=0, max_size=6),
        st.text(alphabet="ab1 \t=#-", min_size=0, max_size=8),
        st.sampled_from(["", " ", "\t", " \t"]),
    ),
    st.text(alphabet="Ab1 \t=#-\r\0\u00e9", max_size=12),
    st.just("#" + "x" * (MAX_LINE_BYTES - 1)),
    st.just("#" + "x" * MAX_LINE_BYTES),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_plain_line, max_size=12), st.sampled_from(["\n", ""]))
def test_the_shortcut_reads_what_the_line_reader_reads(lines: list[str], end: str) -> None:
    data = ("\n".join(lines) + end).encode("utf-8")
    plain = plain_entries(data)
    entries, findings, conf = _full(data)
    if plain is not None:
        assert plain == entries
        assert findings == []
        assert (conf.pem_blocks, conf.stopped_at) == ([], None)
    via_config: list[Entry] = []
    config_findings: list[Finding] = []
    assert read_config("hosts/n", data, config_findings, via_config.append) == conf
    assert (via_config, config_findings) == (entries, findings)


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="ab0159.-_: \tZ%[", max_size=30),
        st.builds(
            "{}{}{}".format,
            st.sampled_from(
                [
                    "a",
                    "node1.example.org",
                    "x-1.y_z.",
                    "1.2.3",
                    "1a.2",
                    "-a",
                    "a-",
                    "a..b",
                    "a" * 64,
                    "a." * 126 + "b",
                    "a." * 126 + "bc",
                    "a." * 127,
                ]
            ),
            st.sampled_from(["", " ", "  ", " \t"]),
            st.sampled_from(["", "655", "0", "0655", "65535", "65536", "99999", "http", "1 2"]),
        ),
    )
)
def test_the_usual_address_match_accepts_only_what_the_full_check_accepts(value: str) -> None:
    check = HOST_VARIABLES["address"].check
    assert check is not None
    assert check(value, "1.1") == address_problem(value), value


def test_the_usual_address_match_takes_the_usual_addresses() -> None:
    for value in ("node7.vpn.example.org 655", "gw-1.example.org", "a_b.example.", "host 65535"):
        assert _USUAL_ADDRESS_RE.match(value) is not None, value
    for value in ("10.0.0.1 655", "fd00::1", "1.2.3", "host 0655", "host  655", "host 65536x", "-host"):
        match = _USUAL_ADDRESS_RE.match(value)
        assert match is None or int(match[1]) > 65535, value
