"""``syncd log``: the audit trail of what this node applied, from real
signed commits: commit, times, signer and key, role, files changed."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from syncd.cli.main import main
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, Node, admin_and_signers, make_node


def log(node: Node, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["log", "-c", str(node.config), *args], out, err) == 0, err.getvalue()
    return out.getvalue()


def fingerprint(public: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def test_the_log_names_each_applied_commit_newest_first(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    assert log(node) == "nothing applied yet\n"
    first = hub.tip
    assert node.sync()[0] == 0
    second = hub.change(
        "add alpha", lambda w: (w / "hosts" / "alpha").write_text(f"Subnet = 2002:102:304:10::/64\n\n{rsa_pem(seed=3)}")
    )
    third = hub.change("gateway moves", lambda w: (w / "hosts" / "gateway").open("a").write("# moved\n"))
    assert node.sync()[0] == 0
    assert node.sync()[0] == 0  # nothing new: nothing logged
    entries = [json.loads(line) for line in log(node, "--format", "json").splitlines()]
    assert [e["commit"] for e in entries] == [third, second, first]
    assert entries[0]["files"] == ["hosts/gateway"] and entries[1]["files"] == ["hosts/alpha"]
    assert "hosts/my_pc" in entries[2]["files"] and "syncd.yaml" in entries[2]["files"]
    key = fingerprint(admin.public)
    for e in entries:
        assert (e["signer"], e["key"], e["role"]) == ("admin@example.org", key, "admin")
        assert e["committed_at"].endswith("+00:00") and e["applied_at"] >= e["committed_at"][:10]
    assert [json.loads(line)["commit"] for line in log(node, "--format", "json", "-n", "1").splitlines()] == [third]
    text = log(node)
    assert text.startswith(f"{third[:12]} ") and "by admin@example.org, admin, SHA256:" in text
    assert "    gateway moves\n    hosts/gateway\n" in text
