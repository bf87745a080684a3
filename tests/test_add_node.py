"""`syncd add-node`: allocation, refusals that leave nothing behind, keys that
tincd really reads, and tinc 1.1's formats."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from syncd.cli.main import main
from syncd.node.privkeys import ed25519_expanded, ed25519_keypair, private_key_publics
from syncd.rules.allocate import AllocationError, next_free
from syncd.tinc.hostfile import parse_host_file
from syncd.tinc.keys import tinc_b64decode, tinc_b64encode
from syncd.tinc.subnet import Subnet, parse_subnet
from tests.gitutil import env, git, make_key
from tests.keyfactory import rsa_pem
from tests.servers import free_port, require
from tests.syncenv import Hub, admin_and_signers, make_node


def subnets(*texts: str) -> list[Subnet]:
    return [parse_subnet(t) for t in texts]


# --- allocation ---------------------------------------------------------------------


def test_first_free_skipping_taken_ones() -> None:
    prefix = parse_subnet("2002:102:304::/48")
    taken = subnets("2002:102:304::/64", "2002:102:304:1::/64", "2002:102:304:3::/64")
    assert str(next_free(prefix, 64, taken)) == "2002:102:304:2::/64"
    assert str(next_free(prefix, 64, [*taken, parse_subnet("2002:102:304:2::/63")])) == "2002:102:304:4::/64"
    assert str(next_free(prefix, 64, [])) == "2002:102:304::/64"


def test_alignment_and_nested_taken_space() -> None:
    prefix = parse_subnet("10.0.0.0/24")
    taken = subnets("10.0.0.0/26", "10.0.0.5", "10.0.0.70")
    assert str(next_free(prefix, 26, taken)) == "10.0.0.128/26"
    assert str(next_free(prefix, 32, taken)) == "10.0.0.64"


def test_ipv4_never_hands_out_a_network_or_broadcast_address() -> None:
    prefix = parse_subnet("10.20.0.0/16")
    assert str(next_free(prefix, 32, [])) == "10.20.0.1"
    assert str(next_free(prefix, 31, [])) == "10.20.0.2/31"  # a /31 is two host addresses
    assert str(next_free(prefix, 24, [])) == "10.20.0.0/24"  # its hosts are .1 to .254
    assert str(next_free(prefix, 32, subnets("10.20.0.0/17", "10.20.128.0/18", "10.20.192.0/19"))) == "10.20.224.0"
    small = parse_subnet("10.0.0.0/30")
    assert str(next_free(small, 32, subnets("10.0.0.1"))) == "10.0.0.2"
    with pytest.raises(AllocationError, match=r"no free /32 left"):
        next_free(small, 32, subnets("10.0.0.1", "10.0.0.2"))  # 10.0.0.3 is the broadcast address
    assert str(next_free(parse_subnet("10.0.0.0/31"), 32, [])) == "10.0.0.0"  # RFC 3021: no broadcast
    # IPv6 has no broadcast; the prefix's first address is its subnet-router anycast address
    assert str(next_free(parse_subnet("2002:102:304::/48"), 128, [])) == "2002:102:304::1"
    assert str(next_free(parse_subnet("2002:102:304::/48"), 64, [])) == "2002:102:304::/64"


def test_exhaustion() -> None:
    prefix = parse_subnet("10.0.0.0/30")
    with pytest.raises(AllocationError, match=r"no free /32 left in 10\.0\.0\.0/30"):
        next_free(prefix, 32, subnets("10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
    with pytest.raises(AllocationError, match="does not fit"):
        next_free(prefix, 29, [])


# --- the command ------------------------------------------------------------------------


# An empty home: the user's own ~/.ssh/id_ed25519.pub is add-node's default
# owner key, and must not leak into these tests (conftest: home, repo).
pytestmark = pytest.mark.usefixtures("home")


def add(repo: Path, tinc: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    where = ["--repo", str(repo), "--tinc-dir", str(tinc), "--net", "inet6", "--rsa-bits", "2048"]
    code = main(["add-node", *args, *where], out, err)
    return code, out.getvalue(), err.getvalue()


def everything(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs if d.exists() for p in d.rglob("*")}


def test_a_node_in_the_seed_network(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc" / "inet6"
    code, out, err = add(repo, tinc, "newbie")
    assert code == 0, err
    assert "subnet 2002:102:304:1::/64, address 2002:102:304:1::1/48, ConnectTo gateway" in out
    assert (tinc / "tinc.conf").read_text() == (
        "Name = newbie\nAddressFamily = ipv4\nStrictSubnets = yes\nConnectTo = gateway\n"
    )
    up = (tinc / "tinc-up").read_text()
    assert 'ip -6 link set "$INTERFACE" up mtu 1400' in up
    assert 'ip -6 addr add 2002:102:304:1::1/48 dev "$INTERFACE"' in up
    assert 'ip -6 route add default dev "$INTERFACE"' in up  # the gateway announces ::/0
    assert (tinc / "tinc-up").stat().st_mode & 0o777 == 0o755
    assert (tinc / "tinc-down").stat().st_mode & 0o777 == 0o755
    assert (tinc / "rsa_key.priv").stat().st_mode & 0o777 == 0o600
    assert (tinc / "hosts" / "newbie").read_bytes() == (repo / "hosts" / "newbie").read_bytes()
    assert main(["check", str(repo)], io.StringIO(), io.StringIO()) == 0
    # the next one gets the next free /64
    code, out, _ = add(repo, tmp_path / "tinc2", "second")
    assert code == 0 and "subnet 2002:102:304:2::/64" in out


def test_the_key_pair_is_consistent(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    assert add(repo, tinc, "newbie")[0] == 0
    host = parse_host_file("hosts/newbie", (tinc / "hosts" / "newbie").read_bytes(), min_rsa_bits=2048)
    assert host.findings == []
    [(filename, private_public)] = private_key_publics(tinc)
    assert filename == "rsa_key.priv"
    assert [k.identity for k, _ in host.keys] == [private_public.identity]


REFUSALS = [
    (["bad-name"], "not a valid tinc node name"),
    (["My_PC"], "already exists"),
    (["newbie", "--subnet", "2002:102:304:4::/62"], "subnet-overlap"),
    (["newbie", "--subnet", "10.0.0.0/24"], "subnet-outside-prefix"),
    (["newbie", "--subnet", "2002:102:304:7::1/64"], "host bits"),
    (["newbie", "--subnet", "2002:102:304:7::/64 # x"], "not"),
]


@pytest.mark.parametrize(("args", "message"), REFUSALS)
def test_refusals_write_nothing(repo: Path, tmp_path: Path, args: list[str], message: str) -> None:
    tinc = tmp_path / "tinc"
    before = everything(repo)
    code, _, err = add(repo, tinc, *args)
    assert code == 1, err
    assert message in err
    assert everything(repo) == before
    assert not tinc.exists()


def test_existing_keys_need_force(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    tinc.mkdir()
    (tinc / "rsa_key.priv").write_text("old key\n")
    code, _, err = add(repo, tinc, "newbie")
    assert code == 1 and f"{tinc} is already set up: it has rsa_key.priv; add-node replaces nothing" in err
    assert "--force replaces it (the node's keys are lost)" in err
    assert (tinc / "rsa_key.priv").read_text() == "old key\n"
    assert not (repo / "hosts" / "newbie").exists()
    assert add(repo, tinc, "newbie", "--force")[0] == 0
    assert (tinc / "rsa_key.priv").read_text() != "old key\n"


def test_usage_errors(repo: Path, tmp_path: Path) -> None:
    assert add(repo, tmp_path / "t", "newbie", "--connect-to", "ghost")[0] == 2
    assert add(repo, tmp_path / "t", "newbie", "--address", "[::1]")[0] == 2
    assert main(["add-node", "x", "--repo", str(repo)], io.StringIO(), io.StringIO()) == 2  # no --net/--tinc-dir
    assert not (repo / "hosts" / "newbie").exists()


def test_dry_run(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    before = everything(repo)
    code, out, _ = add(repo, tinc, "newbie", "--dry-run")
    assert code == 0
    assert f"--- {tinc / 'tinc.conf'} (mode 0644)" in out
    assert "PRIVATE KEY" not in out
    assert everything(repo) == before and not tinc.exists()


def test_dry_run_generates_no_key_and_shows_what_the_real_run_writes(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syncd.cli.addnode
    from syncd.node.privkeys import KeyPair

    def no_key(*args: object) -> KeyPair:
        raise AssertionError("a dry run generated a key")

    tinc = tmp_path / "tinc"
    with monkeypatch.context() as patch:
        patch.setattr(syncd.cli.addnode, "rsa_keypair", no_key)
        patch.setattr(syncd.cli.addnode, "ed25519_keypair", no_key)
        code, out, err = add(repo, tinc, "newbie", "--dry-run")
    assert code == 0, err
    assert "BEGIN" not in out
    assert f"--- {tinc / 'rsa_key.priv'} (mode 0600)\n<generated at install: RSA 2048 private key>\n" in out
    shown = out.split(f"--- {repo / 'hosts' / 'newbie'} (mode 0644)\n")[1]
    assert add(repo, tinc, "newbie")[0] == 0
    written = (repo / "hosts" / "newbie").read_text()
    assert shown == written[: written.index("-----BEGIN")] + "<generated at install: RSA 2048 public key>\n"


def test_dry_run_placeholders_in_a_tinc_11_network(repo: Path, tmp_path: Path) -> None:
    policy = (repo / "syncd.yaml").read_text().replace('tinc: "1.0"', 'tinc: "1.1"')
    (repo / "syncd.yaml").write_text(policy + "legacy_rsa: true\n")
    code, out, _ = add(repo, tmp_path / "tinc", "newbie", "--dry-run")
    assert code == 0
    assert "Subnet = 2002:102:304:1::/64\n\n<generated at install: Ed25519 public key>\n\n" in out
    assert f"--- {tmp_path / 'tinc' / 'ed25519_key.priv'} (mode 0600)" in out and "RSA 2048 private key" in out


def test_rsa_bits_under_the_policy_minimum_is_a_usage_error(repo: Path, tmp_path: Path) -> None:
    (repo / "syncd.yaml").write_text(
        (repo / "syncd.yaml").read_text().replace("min_rsa_bits: 2048", "min_rsa_bits: 3072")
    )
    code, _, err = add(repo, tmp_path / "tinc", "newbie", "--dry-run")  # add() passes --rsa-bits 2048
    assert code == 2 and "--rsa-bits 2048 is under the policy's min_rsa_bits (3072)" in err


def test_next_steps_name_absolute_paths(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    out, err = io.StringIO(), io.StringIO()
    args = ["add-node", "newbie", "--repo", ".", "--tinc-dir", "../tinc/inet6", "--rsa-bits", "2048"]
    code = main([*args, "--net", "inet6"], out, err)
    assert code == 0, err.getvalue()
    tinc = tmp_path / "tinc" / "inet6"
    text = out.getvalue()
    assert f"wrote {tinc / 'tinc.conf'}\n" in text
    assert f"  1. In {repo}: git add hosts/newbie\n" in text
    assert f"       tinc: {{dir: {tinc}}}\n" in text
    signed = 'git -c gpg.format=ssh -c user.signingkey="$HOME/.ssh/id_ed25519" commit -S -m "Add newbie" && git push'
    assert "       net: inet6\n" in text and signed in text


# --- owners and joining ------------------------------------------------------------------


def set_join(repo: Path, mode: str) -> None:
    (repo / "syncd.yaml").write_text((repo / "syncd.yaml").read_text() + f"join: {mode}\n")


def owner_line(public: Path) -> str:
    kind, blob, comment = public.read_text().split()
    return f"# syncd-owner: {kind} {blob} {comment}"


def test_owner_keys_are_written_validated_and_pass_check(repo: Path, tmp_path: Path) -> None:
    alice, bob = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "bob", "ecdsa")
    tinc = tmp_path / "tinc"
    code, out, err = add(repo, tinc, "newbie", "--owner-key", str(alice.public), "--owner-key", str(bob.public))
    assert code == 0, err
    written = (repo / "hosts" / "newbie").read_text()
    assert written.startswith(f"Subnet = 2002:102:304:1::/64\n{owner_line(alice.public)}\n{owner_line(bob.public)}\n\n")
    assert (tinc / "hosts" / "newbie").read_text() == written
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(alice.public)], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    assert f"owner {fingerprint} ({alice.public}): {owner_line(alice.public)}\n" in out
    assert "note:" not in err
    check = io.StringIO()
    assert main(["check", str(repo)], check, io.StringIO()) == 0, check.getvalue()


def test_default_owner_key_is_the_users_ed25519_key(repo: Path, tmp_path: Path, home: Path) -> None:
    code, out, err = add(repo, tmp_path / "t0", "nobody", "--dry-run")
    assert code == 0 and "syncd-owner" not in out
    assert "note: no --owner-key, and no ~/.ssh/id_ed25519.pub: the host file names no owner" in err
    me = make_key(home / ".ssh", "id_ed25519")
    code, out, err = add(repo, tmp_path / "t1", "mine", "--dry-run")
    assert code == 0, err
    assert out.count(owner_line(me.public)) == 3  # the summary, and both copies of the host file
    assert "note:" not in err
    code, out, err = add(repo, tmp_path / "t2", "nobodys", "--no-owner-key", "--dry-run")
    assert code == 0 and "syncd-owner" not in out and "note: --no-owner-key: " in err
    assert add(repo, tmp_path / "t3", "x", "--no-owner-key", "--owner-key", str(me.public))[0] == 2


BAD_KEY_FILES = [
    ("missing.pub", None, "missing.pub: No such file or directory"),
    ("empty.pub", b"\n# nothing\n", "empty.pub: no SSH public key in it"),
    ("garbage.pub", b"hello world\n", "garbage.pub:1: expected an SSH public key"),
    ("bad64.pub", b"ssh-ed25519 AAAA!!!! x\n", "bad64.pub:1: the ssh-ed25519 key is not valid base64"),
    ("control.pub", None, "control.pub:2: control character U+0007"),
    ("two.pub", None, "two.pub:1: one key per owner line (its comment holds another key)"),  # K1 own1 K2 own2
    ("blob.pub", None, "blob.pub:1: one key per owner line (its comment holds another key)"),  # K1 own1 BASE64
    ("id_ed25519", None, "id_ed25519: a private key; give its public half"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_KEY_FILES, ids=[b[0] for b in BAD_KEY_FILES])
def test_a_bad_owner_key_file_is_a_usage_error_naming_it(
    repo: Path, tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    keys = tmp_path / "keys"
    real = make_key(keys, "id_ed25519")
    path = keys / name
    other = make_key(keys, "other").public_line()
    if name == "control.pub":
        path.write_bytes(b"# a comment line\n" + real.public.read_bytes().rstrip() + b" bell\x07\n")
    elif name == "two.pub":  # one line, two keys: the second would hide in the first one's comment
        path.write_text(f"{real.public_line()} own1 {other} own2\n")
    elif name == "blob.pub":
        path.write_text(f"{real.public_line()} own1 {other.split()[1]}\n")
    elif data is not None:
        path.write_bytes(data)
    before = everything(repo)
    code, _, err = add(repo, tmp_path / "tinc", "newbie", "--owner-key", str(path))
    assert code == 2, err
    assert f"--owner-key {path}" in err and message in err
    assert everything(repo) == before and not (tmp_path / "tinc").exists()


def test_a_small_rsa_owner_key_is_refused(repo: Path, tmp_path: Path) -> None:
    weak = make_key(tmp_path / "keys", "weak", "rsa", bits=1024)
    code, _, err = add(repo, tmp_path / "tinc", "newbie", "--owner-key", str(weak.public))
    assert code == 2 and f"--owner-key {weak.public}:1: RSA key of 1024 bits" in err


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("admins", "ask an admin to sign it (join: admins)"),
        ("members", "ask an owner of an existing node (join: members) or an admin"),
        ("open", "sign the commit with the owner key yourself (join: open)"),
    ],
)
def test_join_steps_follow_the_policy(repo: Path, tmp_path: Path, mode: str, expected: str) -> None:
    set_join(repo, mode)
    alice = make_key(tmp_path / "keys", "alice")
    code, out, err = add(repo, tmp_path / "tinc", "newbie", "--owner-key", str(alice.public))
    assert code == 0, err
    assert expected in out
    signing = f"user.signingkey={alice.private}" in out
    assert signing == (mode == "open")
    # no owner line: whatever the mode, only an admin can add the node
    code, out, err = add(repo, tmp_path / "tinc2", "other", "--no-owner-key")
    assert code == 0 and "commit it signed by an admin" in out
    assert ("give --owner-key FILE.pub" in out) == (mode != "admins")


def test_open_join_with_the_printed_command_is_accepted_by_a_node(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    hub.change("open the network", lambda w: set_join(w, "open"))
    node = make_node(tmp_path / "node", str(hub.server), signers)
    assert node.sync()[0] == 0
    newcomer = make_key(tmp_path / "newcomer" / ".ssh", "id_ed25519")
    code, out, err = add(hub.work, tmp_path / "tinc", "newbie", "--owner-key", str(newcomer.public))
    assert code == 0, err
    printed = re.search(r"^ +(git -c gpg\.format=ssh -c user\.signingkey=\S+ commit -S .*) && git push$", out, re.M)
    assert printed is not None, out
    git(hub.work, "add", "hosts/newbie")
    subprocess.run(printed[1], shell=True, cwd=hub.work, env=env(), check=True, capture_output=True)
    git(hub.work, "push", "-q", "origin", "HEAD:main")
    code, _, err = node.sync()
    assert code == 0, err
    assert node.files()["newbie"] == (hub.work / "hosts" / "newbie").read_bytes()
    log = io.StringIO()
    assert main(["log", "-c", str(node.config), "-n", "1", "--format", "json"], log, io.StringIO()) == 0
    assert '"role": "join:newbie"' in log.getvalue()


# --- IPv4 ----------------------------------------------------------------------------------


def ipv4_repo(tmp_path: Path, policy: str) -> Path:
    repo = tmp_path / "repo4"
    (repo / "hosts").mkdir(parents=True)
    (repo / "syncd.yaml").write_text(policy)
    (repo / "hosts" / "gateway").write_text(f"Address = 192.0.2.1\nSubnet = 10.20.255.254\n\n{rsa_pem(seed=1)}")
    return repo


IPV4_ALLOCATIONS = [
    ("", ["10.20.0.1", "10.20.0.2"], ["10.20.0.1/16", "10.20.0.2/16"]),
    ("allocate: {prefix: 10.20.0.0/16, size: 32}\n", ["10.20.0.1", "10.20.0.2"], ["10.20.0.1/16", "10.20.0.2/16"]),
    # a node announcing a /24 LAN: its address is the LAN's first host, with the VPN's netmask
    (
        "allocate: {prefix: 10.20.0.0/16, size: 24}\n",
        ["10.20.0.0/24", "10.20.1.0/24"],
        ["10.20.0.1/16", "10.20.1.1/16"],
    ),
    (
        "allocate: {prefix: 10.20.0.0/16, size: 31}\n",
        ["10.20.0.2/31", "10.20.0.4/31"],
        ["10.20.0.2/16", "10.20.0.4/16"],
    ),
]


@pytest.mark.parametrize(("allocate", "subnets", "addresses"), IPV4_ALLOCATIONS)
def test_ipv4_nodes_get_host_addresses(tmp_path: Path, allocate: str, subnets: list[str], addresses: list[str]) -> None:
    repo = ipv4_repo(tmp_path, "prefixes: [10.20.0.0/16]\n" + allocate)
    for name, subnet, address in zip(("first", "second"), subnets, addresses, strict=True):
        tinc = tmp_path / name
        code, out, err = add(repo, tinc, name)
        assert code == 0, err
        assert f"subnet {subnet}, address {address}," in out
        assert (repo / "hosts" / name).read_text().startswith(f"Subnet = {subnet}\n\n")
        assert f'ip -4 addr add {address} dev "$INTERFACE"' in (tinc / "tinc-up").read_text()
        assert f'ip -4 addr del {address} dev "$INTERFACE"' in (tinc / "tinc-down").read_text()
    assert main(["check", str(repo)], io.StringIO(), io.StringIO()) == 0


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.20.0.0", "10.20.0.0 is the network address of 10.20.0.0/16, not a host's"),
        ("10.20.255.255", "10.20.255.255 is the broadcast address of 10.20.0.0/16, not a host's"),
    ],
)
def test_ipv4_subnet_that_is_no_host_address_is_refused(tmp_path: Path, subnet: str, message: str) -> None:
    repo = ipv4_repo(tmp_path, "prefixes: [10.20.0.0/16]\n")
    before = everything(repo)
    code, _, err = add(repo, tmp_path / "tinc", "first", "--subnet", subnet)
    assert code == 1 and message in err
    assert everything(repo) == before and not (tmp_path / "tinc").exists()
    # a /31 holding the network address still has a host address: the other one
    code, out, err = add(repo, tmp_path / "tinc", "first", "--subnet", "10.20.0.0/31")
    assert code == 0 and "address 10.20.0.1/16" in out


def test_ipv6_subnet_router_anycast_address_is_refused(repo: Path, tmp_path: Path) -> None:
    code, _, err = add(repo, tmp_path / "tinc", "newbie", "--subnet", "2002:102:304::")
    assert code == 1 and "2002:102:304:: is the subnet-router anycast address of 2002:102:304::/48" in err


def test_gateway_role(repo: Path, tmp_path: Path) -> None:
    tinc = tmp_path / "tinc"
    code, out, _ = add(repo, tinc, "gw2", "--address", "5.6.7.8 655")
    assert code == 0 and "ConnectTo (none: others connect to it)" in out
    assert "ConnectTo" not in (tinc / "tinc.conf").read_text()
    host = (tinc / "hosts" / "gw2").read_text()
    assert host.startswith("Address = 5.6.7.8 655\nPort = 655\nSubnet = 2002:102:304:1::/64\n")
    assert "route add default" not in (tinc / "tinc-up").read_text()


# --- tinc 1.1 ------------------------------------------------------------------------------


def test_tinc_11_keys(repo: Path, tmp_path: Path) -> None:
    policy = (repo / "syncd.yaml").read_text().replace('tinc: "1.0"', 'tinc: "1.1"')
    (repo / "syncd.yaml").write_text(policy)
    tinc = tmp_path / "tinc"
    assert add(repo, tinc, "newbie")[0] == 0
    assert not (tinc / "rsa_key.priv").exists()
    host = parse_host_file("hosts/newbie", (tinc / "hosts" / "newbie").read_bytes(), tinc="1.1")
    assert host.findings == []
    [(filename, from_private)] = private_key_publics(tinc)
    assert filename == "ed25519_key.priv" and [k.identity for k, _ in host.keys] == [from_private.identity]
    # with legacy_rsa, an RSA key too, for tinc 1.0 peers
    (repo / "syncd.yaml").write_text(policy + "legacy_rsa: true\n")
    assert add(repo, tmp_path / "tinc2", "legacy")[0] == 0
    assert sorted(name for name, _ in private_key_publics(tmp_path / "tinc2")) == ["ed25519_key.priv", "rsa_key.priv"]


def test_ed25519_private_key_format_against_rfc8032() -> None:
    # RFC 8032, 7.1 TEST 1: secret key (seed) and public key
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    pair = ed25519_keypair(seed)
    lines = pair.private_pem.decode().splitlines()
    assert lines[0] == "-----BEGIN ED25519 PRIVATE KEY-----" and lines[-1] == "-----END ED25519 PRIVATE KEY-----"
    assert [len(line) for line in lines[1:-1]] == [64, 64]  # 96 bytes = 128 characters of tinc's base64
    blob = tinc_b64decode("".join(lines[1:-1]))
    assert blob[64:] == public
    assert blob[:64] == ed25519_expanded(seed)
    assert blob[0] & 7 == 0 and blob[31] & 0xC0 == 0x40  # clamped scalar
    assert pair.public_text == f"Ed25519PublicKey = {tinc_b64encode(public)}\n"


# --- real tincd reads what add-node writes ---------------------------------------------------


def test_tincd_connects_with_generated_keys(repo: Path, tmp_path: Path) -> None:
    tincd = require("tincd")
    port = free_port()
    gw_dir, client_dir = tmp_path / "gw", tmp_path / "client"
    assert add(repo, gw_dir, "hub", "--address", f"127.0.0.1 {port}")[0] == 0
    assert add(repo, client_dir, "spoke", "--connect-to", "hub")[0] == 0
    for directory, extra in ((gw_dir, ""), (client_dir, f"Port = {free_port()}\n")):
        # no tun device here: a dummy device, and no interface for tinc-up to configure
        with (directory / "tinc.conf").open("a") as fh:
            fh.write(f"DeviceType = dummy\nBindToAddress = 127.0.0.1\n{extra}")
        (directory / "tinc-up").write_text("#!/bin/sh\n")
    shutil.copy(repo / "hosts" / "spoke", gw_dir / "hosts" / "spoke")
    shutil.copy(repo / "hosts" / "hub", client_dir / "hosts" / "hub")
    procs = []
    try:
        for directory in (gw_dir, client_dir):
            procs.append(
                subprocess.Popen(
                    [
                        tincd,
                        "-c",
                        str(directory),
                        "-D",
                        f"--logfile={directory / 'log'}",
                        f"--pidfile={directory / 'pid'}",
                        "-d1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 20
        log = client_dir / "log"
        while time.monotonic() < deadline:
            if log.exists() and "Connection with hub" in log.read_text() and "activated" in log.read_text():
                break
            time.sleep(0.1)
        assert "activated" in log.read_text(), log.read_text()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
