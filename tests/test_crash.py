"""Kill `syncd sync` at every file-system step of an apply and check that
the next run ends in exactly the desired state (a host file tinc 1.1
appended a learned key to kept as it is).

The sync runs in a child process whose os.open / os.write / os.fchmod /
os.fsync / os.replace / os.rename / os.unlink / os.mkdir / os.chmod die (os._exit, no cleanup, like
a power cut for the process) on the N-th call, for N = 1, 2, ... until a run
gets through.  After each crash a normal sync must converge.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from syncd.node.files import TEMP_PREFIX
from syncd.node.state import STATE_FILE
from syncd.rules.plan import blob_id
from syncd.tinc.learnedkey import block
from tests.figures import record
from tests.keyfactory import ed25519_text, rsa_pem
from tests.syncenv import Hub, Node, admin_and_signers, make_node

CRASH_RUNNER = """
import os, runpy, sys
limit = int(sys.argv[1])
calls = 0
def dying(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls >= limit:
            os._exit(77)
        return real(*args, **kwargs)
    return call
for name in ("open", "write", "fchmod", "fsync", "replace", "rename", "unlink", "mkdir", "chmod"):
    setattr(os, name, dying(getattr(os, name)))
sys.argv = ["syncd", *sys.argv[2:]]
runpy.run_module("syncd", run_name="__main__", alter_sys=True)
"""


def desired_files(hub: Hub) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((hub.work / "hosts").iterdir())}


def check_converged(node: Node, hub: Hub, kept: dict[str, bytes] | None = None) -> None:
    """The node has exactly the repository's files (but for ``kept``: files
    with the key tincd appended, kept as they are), and a state that says so."""
    files = node.files()
    assert files == {**desired_files(hub), **(kept or {})}
    assert not [n for n in files if n.startswith(TEMP_PREFIX)]
    for name in files:
        assert (node.hosts / name).stat().st_mode & 0o7777 == 0o644
    state = json.loads((node.state / STATE_FILE).read_text())
    assert state["last_applied"] == hub.tip
    assert {n: m[0] for n, m in state["manifest"].items()} == {n: blob_id(d) for n, d in files.items()}


def kill_at_every_step(node: Node, tmp_path: Path, recovered: Callable[[int], None], umask: int = -1) -> int:
    """From a copy of the node as it is now, for N = 1, 2, ...: a `syncd sync`
    (under ``umask``, when given) killed at its N-th file-system call, then
    ``recovered(N)``, which runs a normal sync and checks it converged; until a
    sync gets through.  Returns how many crashes there were."""
    pristine = tmp_path / "pristine"
    shutil.copytree(node.root, pristine, symlinks=True)
    runner = tmp_path / "crash_runner.py"
    runner.write_text(CRASH_RUNNER)
    for limit in range(1, 200):
        shutil.rmtree(node.root)
        shutil.copytree(pristine, node.root, symlinks=True)
        result = subprocess.run(
            [sys.executable, str(runner), str(limit), "sync", "-c", str(node.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            umask=umask,
            check=False,
        )
        if result.returncode == 0:
            return limit - 1  # every run before this one crashed
        assert result.returncode == 77, result.stderr
        recovered(limit)
    raise AssertionError("the sync never got through")


def test_a_crash_at_any_step_converges(tmp_path: Path) -> None:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    assert node.sync()[0] == 0

    def change(work: Path) -> None:
        for i, name in enumerate(("alpha", "bravo", "charlie")):
            (work / "hosts" / name).write_text(f"Subnet = 2002:102:304:{10 + i}::/64\n\n{rsa_pem(seed=30 + i)}")
        (work / "hosts" / "my_laptop").unlink()
        with (work / "hosts" / "gateway").open("a") as fh:
            fh.write("# updated\n")

    hub.change("three new nodes, one gone, one updated", change)
    # tinc 1.1 learned my_pc's Ed25519 key meanwhile and appended it: kept through every crash
    key = ed25519_text(30)
    with (node.hosts / "my_pc").open("ab") as fh:
        fh.write(block(key))
    kept = {"my_pc": (node.hosts / "my_pc").read_bytes()}
    assert node.sync("--dry-run")[0] == 0  # fetch the objects first: the crashes hit the apply

    def recovered(limit: int) -> None:
        code, _, err = node.sync()
        assert code == 0, f"crash at call {limit}: recovery failed: {err}"
        check_converged(node, hub, kept)
        assert json.loads((node.state / STATE_FILE).read_text())["manifest"]["my_pc"][5] == key
        _, out, _ = node.sync()
        assert out.startswith("already current"), f"crash at call {limit}: not idempotent: {out}"

    crashes = kill_at_every_step(node, tmp_path, recovered)
    check_converged(node, hub, kept)
    assert crashes >= 25, f"only {crashes} crash points were exercised"
    record("crash test: kill points during one sync, all converged", str(crashes))
