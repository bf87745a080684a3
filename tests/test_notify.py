"""Notifications: what one says, where agents listen, whom they tell, the
`syncd notify` command, and a real agent under a hostile notifier."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import socket
import time
from pathlib import Path

import pytest

from syncd.cli.main import main
from syncd.sync.gossip import Notice, agent_address, decode, directory, order, recipients
from tests.figures import record
from tests.gitutil import git, make_key
from tests.swarm import address, swarm

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_a_notice_round_trips_and_anything_else_is_not_one() -> None:
    notice = Notice("inet6", SHA, "node", "my_pc", "gateway")
    assert decode(notice.encode()) == notice
    assert decode(Notice("inet6", SHA, "node", "my_pc").encode()) == Notice("inet6", SHA, "node", "my_pc", "my_pc")
    assert decode(Notice("inet6", SHA, "hook").encode()) == Notice("inet6", SHA, "hook", "")
    bad = [
        b"",
        b"\xff" * 10,
        b"[]",
        b'{"syncd": 2, "net": "x", "commit": "' + SHA.encode() + b'", "via": "hook"}',
        b'{"syncd": 1, "net": "x", "commit": "HEAD", "via": "hook"}',
        b'{"syncd": 1, "net": "x", "commit": "' + SHA.upper().encode() + b'", "via": "hook"}',
        b'{"syncd": 1, "net": "x", "commit": "' + SHA.encode() + b'", "via": "node"}',  # no sender
        b'{"syncd": 1, "net": "x", "commit": "' + SHA.encode() + b'", "via": "node", "from": "../etc"}',
        b'{"syncd": 1, "net": "x", "commit": "' + SHA.encode() + b'", "via": "radio"}',
        b'{"syncd": 1, "net": "x", "commit": "' + SHA.encode() + b'", "via": "hook", "pad": "' + b"x" * 600 + b'"}',
        b"[" * 100000,
    ]
    assert [decode(data) for data in bad] == [None] * len(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Subnet = 2002:0102:0304:0004::/64\n", "2002:102:304:4::1"),
        ("Address = 1.2.3.4\nsubnet 10.1.2.3\nSubnet = 10.9.0.0/16\n", "10.1.2.3"),
        ("Subnet=10.1.0.0/16#5\n", "10.1.0.1"),
        ("Subnet = fd00::5/128\n", "fd00::5"),
        ("Subnet = 10.0.0.0/8\n# syncd-notify: 127.0.0.9\n", "127.0.0.9"),
        ("# syncd-notify: fd00::1\nSubnet = 10.0.0.0/8\n", "fd00::1"),
        ("# syncd-notify: nowhere\nSubnet = 10.0.0.0/8\n", None),
        ("Subnet = 00:11:22:33:44:55\n", None),
        ("Subnet = ::/0\nSubnet = 00:11:22:33:44:55\nSubnet = 2002:102:304::/64\n", "2002:102:304::1"),
        ("Address = 1.2.3.4\n", None),
        ("-----BEGIN RSA PUBLIC KEY-----\nSubnet = 10.0.0.1\n", None),
        # never the wildcard (every interface), multicast or broadcast: an owner's line cannot make
        # an agent listen beyond one address, nor others send beyond one host
        ("Subnet = 10.0.0.1\n# syncd-notify: 0.0.0.0\n", None),
        ("# syncd-notify: ::\nSubnet = 10.0.0.1\n", None),
        ("# syncd-notify: 224.0.0.1\n", None),
        ("# syncd-notify: ff02::1\n", None),
        ("# syncd-notify: 255.255.255.255\n", None),
        ("Subnet = 0.0.0.0/32\n", None),
        ("Subnet = ::/128\n", None),
        ("Subnet = 255.255.255.255/32\n", None),
        # an IPv6 subnet's address stays IPv6, however small
        ("Subnet = ::/96\n", "::1"),
        ("Subnet = ::a00:5/128\n", "::a00:5"),
    ],
)
def test_an_agents_address_comes_from_its_host_file(text: str, expected: str | None) -> None:
    assert agent_address(text.encode()) == expected


def test_directory_reads_every_installed_node_with_an_address(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("Subnet = 10.0.0.1\n")
    (tmp_path / "b").write_text("Address = x\n")
    (tmp_path / "c-up").write_text("Subnet = 10.0.0.3\n")
    assert directory(tmp_path) == {"a": "10.0.0.1"}


def spread(
    names: list[str], commit: str, fanout: int, told: list[str], dead: frozenset[str] = frozenset()
) -> tuple[dict[str, int], dict[str, int]]:
    """The fan-out as the agents run it: ``told`` learn of ``commit`` from
    outside; each live node that hears of it passes it on once, in the
    trees of the notification it first heard.  → (hops per node reached,
    messages sent per node)."""
    hops = dict.fromkeys(told, 0)
    sent: dict[str, int] = {}
    frontier = [(name, name) for name in told]  # (node, origin)
    while frontier:
        node, origin = frontier.pop(0)
        if node in dead or node in sent:
            continue
        peers = recipients(names, node, commit, fanout, origin)
        sent[node] = len(peers)
        for peer in peers:
            if peer not in hops:
                hops[peer] = hops[node] + 1
                frontier.append((peer, origin))
    return hops, sent


@pytest.mark.parametrize(("count", "fanout"), [(1, 5), (2, 5), (3, 5), (50, 5), (300, 5), (200, 4), (200, 3)])
def test_the_fanout_reaches_everyone_in_log_hops_with_at_most_f_messages_each(count: int, fanout: int) -> None:
    """Whichever node learns first (from outside), every node hears within
    ceil(log_k N) hops (k = ceil(f/2)), no node sends more than f."""
    names = [f"n{i}" for i in range(count)]
    rng = random.Random(count)
    for _ in range(5):
        commit = f"{rng.getrandbits(160):040x}"
        hops, sent = spread(names, commit, fanout, [rng.choice(names)])
        assert set(hops) == set(names)
        assert max(sent.values()) <= fanout
        k = (fanout + 1) // 2
        assert max(hops.values()) <= max(1, math.ceil(math.log(count, k))) if count > 1 else True
        assert sum(sent.values()) <= fanout * count
    assert order(names, SHA, "n0") == order(list(reversed(names)), SHA, "n0")  # the same on every node


def test_a_dead_node_leaves_almost_nobody_to_polling() -> None:
    """Two trees: a node is left out only when its parents in both are
    down or unreached; with one node of 50 down, at most one other."""
    names = [f"n{i}" for i in range(50)]
    rng = random.Random(7)
    missed = []
    for _ in range(40):
        commit = f"{rng.getrandbits(160):040x}"
        origin, dead = rng.sample(names, 2)
        hops, _ = spread(names, commit, 5, [origin], frozenset({dead}))
        missed.append(len(set(names) - set(hops) - {dead}))
    assert max(missed) <= 1, missed


def test_every_node_told_from_outside_costs_at_most_f_each() -> None:
    names = [f"n{i}" for i in range(100)]
    hops, sent = spread(names, SHA, 5, names)
    assert set(hops) == set(names) and max(sent.values()) <= 5


def run_cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    import sys

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(["notify", *argv], out, err), out.getvalue(), err.getvalue()
    finally:
        sys.stdin = saved


def test_syncd_notify_sends_the_pushed_commit_to_each_agent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        zero = "0" * 40
        lines = f"{zero} {'1' * 40} refs/heads/other\n{zero} {SHA} refs/heads/main\n"
        code, out, _ = run_cli("--net", "inet6", "--to", f"127.0.0.1:{port}", "--post-receive", stdin=lines)
        assert code == 0 and f"told 1 agent of {SHA[:12]}" in out
        assert decode(sock.recv(1024)) == Notice("inet6", SHA, "hook")
        to = ("--net", "inet6", "--to", f"127.0.0.1:{port}")
        code, out, _ = run_cli(*to, "--post-receive", stdin=f"{SHA} {zero} refs/heads/main\n")
        assert code == 0 and "nothing pushed to refs/heads/main" in out
        code, out, _ = run_cli("--net", "inet6", "--to", f"127.0.0.1:{port}", "--commit", SHA.upper())
        assert code == 0 and decode(sock.recv(1024)) == Notice("inet6", SHA, "hook")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--to", "127.0.0.1", "--commit", SHA), "which network? give --net NAME"),
        (("--net", "x", "--commit", SHA), "whom to tell? give --to ADDRESS"),
        (("--net", "x", "--to", "127.0.0.1", "--commit", "HEAD"), "--commit 'head' is not a full commit id"),
        (("--net", "x", "--to", "gateway", "--commit", SHA), "--to 'gateway': 'gateway' is not an IP address"),
        (("--net", "x", "--to", "[::1]:x", "--commit", SHA), "--to '[::1]:x': write [IPv6]:PORT"),
        (("--net", "x", "--to", "127.0.0.1:99999", "--commit", SHA), "port 99999 must be from 1 to 65535"),
    ],
)
def test_syncd_notify_refuses_bad_arguments_with_exit_2(argv: tuple[str, ...], message: str) -> None:
    code, _, err = run_cli(*argv)
    assert code == 2 and message in err, err


def test_a_hostile_notifier_costs_one_pass_per_gap_and_no_memory(tmp_path: Path) -> None:
    """10,000 forged notifications in 10 s to one agent: at most one pass per
    gap, its memory flat, nothing installed; then a notification naming a
    commit the rules refuse changes nothing and is passed on to nobody,
    while one naming a good commit is applied and passed on."""
    with swarm(tmp_path, 3, started=range(1)) as sw:
        hosts = sw.node_dir(0) / "tinc" / "hosts"
        before = {p.name: p.read_bytes() for p in hosts.iterdir()}
        state_before = (sw.node_dir(0) / "state" / "state.json").read_bytes()
        target = (address(0), sw.port)
        rss_before = sw.rss_kib(0)
        rng = random.Random(22)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start = time.monotonic()
        for batch in range(100):
            for n in range(100):
                commit = f"{rng.getrandbits(160):040x}"
                kind = n % 4
                if kind == 0:
                    data = Notice("swarm", commit, "node", f"node{rng.randrange(3)}").encode()
                elif kind == 1:
                    data = Notice("swarm", commit, "hook").encode()
                elif kind == 2:
                    data = Notice("othernet", commit, "hook").encode()
                else:
                    data = os.urandom(rng.randrange(1, 600))
                sender.sendto(data, target)
            time.sleep(max(0.0, start + (batch + 1) * 0.1 - time.monotonic()))
        flood = time.monotonic() - start
        time.sleep(sw.min_gap + 1.5)  # the last coalesced pass
        rss_after = sw.rss_kib(0)
        events = sw.events(0)
        heard = [e for e in events if e["event"] == "notify.heard"]
        passes = [e for e in events if e.get("trigger") == "notify"]
        assert sw.agents[0].poll() is None, "the agent died"
        assert 3 <= len(heard) <= flood / sw.min_gap + 2, (len(heard), flood)
        assert len(passes) == len(heard), (passes, heard)
        assert all(e["event"] == "sync.unchanged" for e in passes), passes
        assert sum(int(str(e["heard"])) for e in heard) >= 1000  # most forged ones were heard, and coalesced
        assert rss_after - rss_before < 4096, (rss_before, rss_after)  # KiB
        assert {p.name: p.read_bytes() for p in hosts.iterdir()} == before
        assert (sw.node_dir(0) / "state" / "state.json").read_bytes() == state_before
        assert not any(e["event"] == "notify.sent" for e in events)
        record("hostile notifier: 10,000 forged notifications", f"in {flood:.1f} s: {len(heard)} passes (gap "
               f"{sw.min_gap:g} s), agent RSS {rss_before} -> {rss_after} KiB, nothing installed")  # fmt: skip

        # the peers node1 and node2, as the test: whatever node0 passes on lands here
        peers = []
        for i in (1, 2):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind((address(i), sw.port))
            peer.settimeout(0.2)
            peers.append(peer)
        good = sw.applied(0)
        stranger = make_key(tmp_path / "stranger", "stranger")
        bad = sw.push("a stranger's commit", key=stranger, change=1)
        sender.sendto(Notice("swarm", bad, "hook").encode(), target)
        deadline = time.monotonic() + 10
        while not any(e["event"] == "sync.refused" for e in sw.events(0)) and time.monotonic() < deadline:
            time.sleep(0.1)
        refusal = [e for e in sw.events(0) if e["event"] == "sync.refused"]
        assert refusal and refusal[-1]["reason"] == "signature" and refusal[-1]["trigger"] == "notify", refusal
        assert {p.name: p.read_bytes() for p in hosts.iterdir()} == before and sw.applied(0) == good
        for peer in peers:
            with pytest.raises(TimeoutError):
                peer.recv(1024)

        git(sw.work, "reset", "-q", "--hard", str(good))  # the admins drop the stranger's commit
        fixed = sw.push("a good change", change=1)
        time.sleep(sw.min_gap)
        sender.sendto(Notice("swarm", fixed, "hook").encode(), target)
        deadline = time.monotonic() + 10
        while sw.applied(0) != fixed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sw.applied(0) == fixed
        told = []
        for peer in peers:
            with contextlib.suppress(TimeoutError):
                told.append(decode(peer.recv(1024)))
        assert told and all(n == Notice("swarm", fixed, "node", "node0", "node0") for n in told), told
        health = json.loads((sw.node_dir(0) / "state" / "health.json").read_text())
        assert health["last_trigger"] == "notify" and health["last_trigger_by"] == "hook"
        assert isinstance(health["last_notification_at"], float)
        out, err = io.StringIO(), io.StringIO()
        assert main(["status", "-c", str(sw.config(0))], out, err) == 0, err.getvalue()
        assert "(notification from hook)" in out.getvalue() and "notified:   last at " in out.getvalue(), out.getvalue()
        metrics = (sw.node_dir(0) / "metrics.prom").read_text()
        assert 'syncd_last_pass_trigger{net="swarm",trigger="notify"} 1' in metrics, metrics
        assert 'syncd_last_notification_timestamp_seconds{net="swarm"} ' in metrics, metrics
        sender.close()
        for peer in peers:
            peer.close()
