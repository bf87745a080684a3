"""``syncd verify``: the nodes' acceptance rule at the server.  A real bare
repository with ``syncd verify --pre-receive`` as its hook: a push every node
would refuse is rejected with the node's reason, a good one lands; and the
same rule on a local repository (for CI)."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.cli.main import main
from tests.conftest import ROOT
from tests.gitutil import allowed_signers, commit, git, make_key
from tests.keyfactory import rsa_pem
from tests.syncenv import Hub, admin_and_signers


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    hook = hub.server / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"export PYTHONPATH={shlex.quote(str(ROOT))}\n"
        f"exec {shlex.quote(sys.executable)} -m syncd verify --pre-receive "
        f"--allowed-signers {shlex.quote(str(signers))}\n"
    )
    hook.chmod(0o755)
    return hub


def add(name: str, subnet: str, seed: int) -> Callable[[Path], object]:
    return lambda w: (w / "hosts" / name).write_text(f"Subnet = {subnet}\n\n{rsa_pem(seed=seed)}")


def push(hub: Hub) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(hub.work), "push", "origin", "HEAD:main"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
    )


def server_tip(hub: Hub) -> str:
    return git(hub.server, "rev-parse", "main")


def test_a_good_push_lands(hub: Hub) -> None:
    before = server_tip(hub)
    hub.change(
        "add alpha",
        add("alpha", "2002:102:304:10::/64", 5),
        push=False,
    )
    result = push(hub)
    assert result.returncode == 0, result.stderr
    assert "1 new commit accepted" in result.stderr and "admin@example.org (admin)" in result.stderr
    assert server_tip(hub) == hub.tip != before


def test_an_unsigned_push_is_rejected_with_the_reason(hub: Hub) -> None:
    before = server_tip(hub)
    hub.change(
        "unsigned",
        lambda w: (w / "hosts" / "alpha").write_text("Subnet = 2002:102:304:10::/64\n"),
        key=None,
        push=False,
    )
    result = push(hub)
    assert result.returncode != 0
    assert "pre-receive hook declined" in result.stderr
    assert "refused (signature)" in result.stderr and "not signed" in result.stderr
    assert server_tip(hub) == before


def test_a_stranger_and_invalid_content_are_rejected(hub: Hub, tmp_path: Path) -> None:
    before = server_tip(hub)
    stranger = make_key(tmp_path / "stranger", "stranger")
    hub.change(
        "steal",
        add("evil", "2002:102:304:4::/64", 6),
        key=stranger,
        push=False,
    )
    result = push(hub)
    assert result.returncode != 0 and "refused (signature)" in result.stderr and "no role" in result.stderr
    git(hub.work, "reset", "-q", "--hard", before)
    hub.change(
        "overlap",
        add("evil", "2002:102:304:4::/64", 6),
        push=False,
    )
    result = push(hub)
    assert result.returncode != 0 and "refused (invalid-content)" in result.stderr and "subnet-overlap" in result.stderr
    assert server_tip(hub) == before


def test_a_rewound_history_is_rejected(hub: Hub) -> None:
    hub.change("second", add("alpha", "2002:102:304:10::/64", 5))
    tip = server_tip(hub)
    git(hub.work, "reset", "-q", "--hard", "HEAD~1")
    hub.change(
        "rewritten",
        add("bravo", "2002:102:304:11::/64", 7),
        push=False,
    )
    result = subprocess.run(
        ["git", "-C", str(hub.work), "push", "--force", "origin", "HEAD:main"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "non-fast-forward" in result.stderr
    assert server_tip(hub) == tip


def verify(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["verify", *args], out, err)
    return code, out.getvalue(), err.getvalue()


def test_verify_a_local_repository_in_ci(hub: Hub, tmp_path: Path) -> None:
    signers = tmp_path / "keys" / "allowed_signers"
    first = hub.tip
    hub.change("add alpha", add("alpha", "2002:102:304:10::/64", 5))
    code, out, err = verify("--repo", str(hub.work), "--allowed-signers", str(signers), first, "main")
    assert code == 0 and "1 new commit accepted" in out, err
    code, out, err = verify("--repo", str(hub.work), "--allowed-signers", str(signers), "main")
    assert code == 0 and "1 new commit accepted" in out, err  # the tip is the newest commit a local key trusts
    other = allowed_signers(tmp_path / "other_signers", (make_key(tmp_path / "k", "other"), ""))
    code, _, err = verify("--repo", str(hub.work), "--allowed-signers", str(other), "main")
    assert code == 1 and "nothing to trust" in err
    (hub.work / "hosts" / "broken").write_text("Subnet = 10.0.0.1/8\n")
    commit(hub.work, "broken", hub.admin)
    code, _, err = verify("--repo", str(hub.work), "--allowed-signers", str(signers), first, "HEAD")
    assert code == 1 and "invalid-content" in err
    code, _, err = verify("--repo", str(tmp_path), "--allowed-signers", str(signers), "main")
    assert code == 2 and "not a git repository" in err
