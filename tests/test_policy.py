"""syncd.yaml parsing: values, defaults, and policy-invalid with key and line."""

from __future__ import annotations

import pytest

from syncd.rules.policy import DEFAULT_POLICY, parse_policy
from syncd.tinc.subnet import parse_subnet
from tests.conftest import EXAMPLE_REPO


def test_example_policy() -> None:
    policy, findings = parse_policy((EXAMPLE_REPO / "syncd.yaml").read_bytes())
    assert findings == []
    assert policy.tinc == "1.0"
    assert policy.prefixes == (parse_subnet("2002:102:304::/48"),)
    assert policy.is_route("gateway", parse_subnet("::/0"))
    assert not policy.is_route("my_pc", parse_subnet("::/0"))
    assert policy.allocate is not None and policy.allocate.size == 64
    assert {name for name, _, _ in policy.node_mentions} == {"gateway"}


def test_empty_policy_is_the_default() -> None:
    assert parse_policy(b"") == (DEFAULT_POLICY, [])
    assert parse_policy(b"# nothing\n") == (DEFAULT_POLICY, [])


def test_shared_entries() -> None:
    policy, findings = parse_policy(
        b"shared:\n  - {subnet: 10.190.0.0/21, nodes: [gw01, gw02]}\n  - subnet: 10.191.0.0/21\n    nodes: '*'\n"
    )
    assert findings == []
    s = parse_subnet("10.190.0.0/21")
    assert policy.shared_entry("gw01", s) is not None
    assert policy.shared_entry("gw03", s) is None
    assert policy.shared_entry("anyone", parse_subnet("10.191.0.0/21")) is not None


def test_mac_looking_subnet_is_taken_as_written() -> None:
    # YAML 1.1 would read 10:20:30:40:50:55 as a base-60 integer.
    policy, findings = parse_policy(b"shared:\n  - {subnet: 10:20:30:40:50:55, nodes: '*'}\n")
    assert findings == []
    assert str(policy.shared[0].subnet) == "10:20:30:40:50:55"


BAD = [
    (b"tinc: 1.2\n", 1, "tinc: '1.2' must be one of"),
    (b"hosts_dir: ../etc\n", 1, "hosts_dir:"),
    (b"hosts_dir: /etc/tinc\n", 1, "hosts_dir:"),
    (b"prefixes: 2002:102:304::/48\n", 1, "prefixes: must be a list"),
    (b"prefixes:\n  - 2002:102:304::1/48\n", 2, "prefixes[0]: '2002:102:304::1/48' has host bits"),
    (b"routes:\n  gateway: ['::/0']\n  bad-name: ['::/0']\n", 3, "routes: 'bad-name' is not a valid tinc node name"),
    (b"shared:\n  - {subnet: 10.0.0.0/8}\n", 2, "shared[0]: must have exactly"),
    (b"shared:\n  - {subnet: 10.0.0.0/8, nodes: []}\n", 2, "shared[0].nodes"),
    (b"min_rsa_bits: 512\n", 1, "min_rsa_bits: '512' must be an integer from 1024"),
    (b"max_file_bytes: lots\n", 1, "max_file_bytes:"),
    (b"colour: blue\n", 1, "colour: unknown key"),
    (b"tinc: '1.0'\ntinc: '1.1'\n", 2, "tinc: given twice"),
    (b"- a\n- b\n", 1, "must be a mapping"),
    (b"prefixes: [\n", 2, "not valid YAML"),
    (b"allocate: {prefix: 2002:102:304::/48, size: 32}\n", 1, "allocate.size: '32' must be an integer from 48"),
    (b"\xff\xfe", 1, "not UTF-8"),
    (b"tinc: '1.1'\njoin: everyone\n", 2, "join: 'everyone' must be one of admins, members, open"),
    (b"join: Members\n", 1, "join: 'Members' must be one of"),
    (b"join: [members]\n", 1, "join: must be a single value"),
]


@pytest.mark.parametrize(("data", "line", "message"), BAD)
def test_policy_invalid_names_key_and_line(data: bytes, line: int, message: str) -> None:
    _policy, findings = parse_policy(data)
    assert [f.code for f in findings] == ["policy-invalid"], findings
    assert findings[0].path == "syncd.yaml"
    assert findings[0].line == line
    assert message in findings[0].message


def test_every_problem_is_reported_and_good_keys_still_apply() -> None:
    policy, findings = parse_policy(b"tinc: '1.1'\nmin_rsa_bits: 1\nmax_file_bytes: 0\nprefixes: [10.0.0.0/8]\n")
    assert [f.line for f in findings] == [2, 3]
    assert policy.tinc == "1.1"
    assert policy.prefixes == (parse_subnet("10.0.0.0/8"),)
    assert policy.min_rsa_bits == DEFAULT_POLICY.min_rsa_bits


def test_join_modes() -> None:
    assert DEFAULT_POLICY.join == "admins"
    for mode in ("admins", "members", "open"):
        policy, findings = parse_policy(f"join: {mode}\n".encode())
        assert findings == []
        assert policy.join == mode
    policy, findings = parse_policy(b"join: anyone\n")
    assert len(findings) == 1
    assert policy.join == "admins"  # a broken join falls back to the strictest mode
