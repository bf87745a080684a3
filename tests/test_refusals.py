"""A content refusal reads like ``syncd check``: a one-line summary, then one
finding a line, on a node (sync, status) and at the server (the pre-receive
hook, in a server's words)."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

from syncd.cli.main import main
from syncd.sync.content import MAX_LISTED
from tests.conftest import ROOT
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, Node

# A /62 over other nodes' /64s: each overlap is reported on both files
EVIL = "Subnet = 2002:102:304:4::/62\n"


def check_lines(work: Path) -> list[str]:
    out = io.StringIO()
    main(["check", str(work)], out, io.StringIO())
    return out.getvalue().splitlines()


def test_a_node_prints_the_summary_then_one_finding_a_line(hub: Hub, node: Node) -> None:
    assert node.sync()[0] == 0
    sha = hub.change("steal", lambda w: (w / "hosts" / "evil").write_text(f"{EVIL}\n{rsa_pem(seed=6)}"))
    findings = [line for line in check_lines(hub.work) if ": error[" in line]
    assert len(findings) > 1
    code, _, err = node.sync()
    assert code == 1
    assert err.splitlines() == [
        f"syncd sync: commit {sha[:12]} has invalid content [subnet-overlap]: {len(findings)} errors; "
        "nothing was installed",
        *findings,
    ]
    out = io.StringIO()
    assert main(["status", "-c", str(node.config)], out, io.StringIO()) == 1
    text = out.getvalue()
    assert f"[invalid-content] commit {sha[:12]} has invalid content [subnet-overlap]: {len(findings)} errors;" in text
    assert all(f"\n            {line}\n" in text for line in findings)
    assert "hosts/" not in text.splitlines()[0]  # the monitoring line holds the summary only
    assert "\nlast pass:  refused [invalid-content] at " in text


def test_a_long_list_is_cut_after_max_listed_findings(hub: Hub, node: Node) -> None:
    def many(work: Path) -> None:
        for i in range(MAX_LISTED + 5):
            (work / "hosts" / f"bad{i}").write_text("Subnet = 10.0.0.1/8\n")  # outside the prefix, host bits, no key

    sha = hub.change("junk", many)
    code, _, err = node.sync()
    lines = err.splitlines()
    assert code == 1 and lines[0].startswith(f"syncd sync: commit {sha[:12]} has invalid content [")
    total = int(lines[0].split("]: ")[1].split(" errors")[0])
    assert total > MAX_LISTED and len(lines) == 1 + MAX_LISTED + 1
    assert lines[-1] == f"... and {total - MAX_LISTED} more (syncd check on a clone at {sha[:12]} lists them all)"


def test_the_pre_receive_hook_speaks_as_a_server(hub: Hub, tmp_path: Path) -> None:
    hook = hub.server / "hooks" / "pre-receive"
    signers = tmp_path / "keys" / "allowed_signers"
    verify = f"{shlex.quote(sys.executable)} -m syncd verify --pre-receive"
    hook.write_text(
        f"#!/bin/sh\nexport PYTHONPATH={shlex.quote(str(ROOT))}\n"
        f"exec {verify} --allowed-signers {shlex.quote(str(signers))}\n"
    )
    hook.chmod(0o755)
    sha = hub.change("steal", lambda w: (w / "hosts" / "evil").write_text(f"{EVIL}\n{rsa_pem(seed=6)}"), push=False)
    findings = [line for line in check_lines(hub.work) if ": error[" in line]
    result = subprocess.run(
        ["git", "-C", str(hub.work), "push", "origin", "HEAD:main"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"},
    )
    assert result.returncode != 0
    remote = [
        line.removeprefix("remote: ").rstrip() for line in result.stderr.splitlines() if line.startswith("remote:")
    ]
    assert remote == [
        f"syncd verify: refs/heads/main: refused (invalid-content): commit {sha[:12]} has invalid content "
        f"[subnet-overlap]: {len(findings)} errors",
        *findings,
    ]
    assert "installed" not in result.stderr


def test_every_refusal_loses_the_node_words_at_the_server() -> None:
    from syncd.cli.verify import server_refusal
    from syncd.errors import SignatureError

    exc = SignatureError(
        "commit abc ('x'): no commit on its history is signed by a key of this node's allowed_signers and accepted "
        "at its parent (the tip is signed by SHA256:k: no line lists that key): nothing to trust; nothing was installed"
    )
    assert server_refusal("refs/heads/main", exc) == (
        "syncd verify: refs/heads/main: refused (signature): commit abc ('x'): no commit on its history is signed by "
        "a key of the nodes' allowed_signers and accepted at its parent (the tip is signed by SHA256:k: no line lists "
        "that key): nothing to trust\n"
    )
