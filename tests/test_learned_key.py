"""The Ed25519 key tincd 1.1 appends to a peer's host file, on a real node:
`syncd sync` keeps the file and says which line to add, `status` and the
metrics report it, `syncd run` neither rewrites nor reloads, and once the
repository carries the key the file converges with one reload.  (A crash at
any step keeps it: tests/test_crash.py.  The real tincd 1.1 appending:
tests/e2e/test_tinc11_mixed.py.)"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from syncd.cli.main import main
from syncd.node.state import STATE_FILE
from syncd.tinc.learnedkey import block
from tests.keyfactory import ed25519_text
from tests.syncenv import Hub, Node, admin_and_signers, append, make_node
from tests.test_crash import desired_files
from tests.test_runloop import Agent, wait_until

KEY = ed25519_text(40)


def tincd_appends(node: Node, name: str, key: str = KEY) -> None:
    """As tinc's append_config_file() does: fopen(hosts/NAME, "a"), one fprintf."""
    with (node.hosts / name).open("ab") as fh:
        fh.write(block(key))


def setup(tmp_path: Path) -> tuple[Hub, Node, Path]:
    """A synced node whose reloads are counted (a line in ``reloads`` each)."""
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    reloads = tmp_path / "reloads"
    reloads.touch()
    node = make_node(
        tmp_path / "node",
        str(hub.server),
        signers,
        metrics_file=str(tmp_path / "metrics.prom"),
        tinc__reload="command",
        tinc__command=["sh", "-c", f"echo reload >> {reloads}"],
    )
    assert node.sync()[0] == 0
    return hub, node, reloads


def status(node: Node) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "-c", str(node.config), "--format", "json"], out, err) == 0, out.getvalue()
    data: dict[str, object] = json.loads(out.getvalue())
    return data


def text_status(node: Node) -> str:
    out = io.StringIO()
    main(["status", "-c", str(node.config)], out, io.StringIO())
    return out.getvalue()


def count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_sync_keeps_the_key_says_what_to_add_and_converges_once_the_repository_has_it(tmp_path: Path) -> None:
    hub, node, reloads = setup(tmp_path)
    metrics = tmp_path / "metrics.prom"
    assert count(reloads) == 1
    tincd_appends(node, "gateway")
    before = node.snapshot()
    code, out, err = node.sync()
    assert (code, out.split(" at ")[0]) == (0, "already current"), err
    assert f"add this line to gateway's host file in the repository: Ed25519PublicKey = {KEY}" in err
    assert node.snapshot() == before, "the file tincd appended to was rewritten"
    assert count(reloads) == 1
    report = status(node)
    assert (report["drift"], report["learned_keys"]) == ([], {"gateway": f"Ed25519PublicKey = {KEY}"})
    assert report["healthy"] is True
    assert "learned:    gateway: tincd appended its Ed25519 key" in text_status(node)
    assert 'syncd_learned_keys{net="inet6"} 1' in metrics.read_text()
    assert "Ed25519PublicKey" not in node.sync()[2], "said once, not at every pass"

    # tincd appends a second time: kept, and status says so before any pass
    tincd_appends(node, "gateway")
    assert status(node)["drift"] == [] and status(node)["learned_keys"] == {"gateway": f"Ed25519PublicKey = {KEY}"}
    appended_twice = node.snapshot()
    assert node.sync()[0] == 0 and node.snapshot() == appended_twice and count(reloads) == 1

    # the repository takes the line: installed once, with one reload; nothing learned any more
    hub.change("gateway's Ed25519 key", append("gateway", f"Ed25519PublicKey = {KEY}\n"))
    code, out, err = node.sync()
    assert code == 0 and "0 added, 1 updated, 0 removed" in out, (out, err)
    assert node.files() == desired_files(hub) and count(reloads) == 2
    assert status(node)["learned_keys"] == {} and 'syncd_learned_keys{net="inet6"} 0' in metrics.read_text()
    assert node.sync()[1].startswith("already current") and count(reloads) == 2


def test_anything_else_tincd_or_a_person_changes_is_drift(tmp_path: Path) -> None:
    hub, node, reloads = setup(tmp_path)
    original = (node.hosts / "gateway").read_bytes()
    tincd_appends(node, "gateway", ed25519_text(41))
    tincd_appends(node, "gateway", KEY)  # two different keys: not what tincd does
    assert status(node)["drift"] == ["gateway"]
    code, out, _ = node.sync()
    assert code == 0 and "1 updated" in out and (node.hosts / "gateway").read_bytes() == original
    assert count(reloads) == 2
    (node.hosts / "gateway").write_bytes(original + b"Subnet = 10.0.0.0/8\n" + block(KEY))  # a person, then tincd
    assert node.sync()[0] == 0 and (node.hosts / "gateway").read_bytes() == original and count(reloads) == 3

    # a key beside the one the repository names was not written by tincd
    hub.change("my_laptop's Ed25519 key", append("my_laptop", f"Ed25519PublicKey = {ed25519_text(42)}\n"))
    assert node.sync()[0] == 0
    tincd_appends(node, "my_laptop")
    assert status(node)["drift"] == ["my_laptop"]
    assert "1 updated" in node.sync()[1] and node.files() == desired_files(hub)


def test_the_repository_taking_the_appended_file_as_it_is_rewrites_nothing(tmp_path: Path) -> None:
    hub, node, reloads = setup(tmp_path)
    tincd_appends(node, "gateway")
    assert node.sync()[0] == 0
    appended = (node.hosts / "gateway").read_text()
    before = node.snapshot()
    hub.change("gateway as tincd completed it", lambda work: (work / "hosts" / "gateway").write_text(appended))
    code, out, _ = node.sync()
    assert code == 0 and "0 added, 0 updated, 0 removed" in out
    assert node.snapshot() == before and count(reloads) == 1
    state = json.loads((node.state / STATE_FILE).read_text())
    assert state["manifest"]["gateway"] == state["manifest"]["gateway"][:5]  # nothing learned any more
    assert status(node)["learned_keys"] == {}


def test_syncd_run_neither_rewrites_nor_reloads(tmp_path: Path) -> None:
    _, node, reloads = setup(tmp_path)
    running = Agent(node, tmp_path, interval=300)
    try:
        assert wait_until(lambda: any("READY=1" in m for m in running.received()), 20) is not None
        tincd_appends(node, "gateway")
        appended = node.snapshot()
        learned = wait_until(lambda: running.has_event("tinc.key_learned"), 5)
        assert learned is not None, running.log_path.read_text()
        for _ in range(3):  # tincd appends again, as it would after a rewrite
            time.sleep(0.5)
            tincd_appends(node, "gateway")
        time.sleep(1.5)
        events = [e["event"] for e in running.events()]
        assert events.count("tinc.key_learned") == 1, events
        assert "drift.repaired" not in events and "reload.done" not in events, events
        data, _, _, inode = node.snapshot()["gateway"]
        assert inode == appended["gateway"][3] and data == appended["gateway"][0] + 3 * block(KEY), "rewritten"
        assert count(reloads) == 1
        line = next(e for e in running.events() if e["event"] == "tinc.key_learned")
        assert (line["node"], line["line"]) == ("gateway", f"Ed25519PublicKey = {KEY}")
        (node.hosts / "gateway").write_text("Subnet = ::/0\n")  # anything else is drift, repaired at once
        assert wait_until(lambda: running.has_event("drift.repaired"), 3) is not None
    finally:
        assert running.stop() == 0
