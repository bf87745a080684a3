"""What syncd finds in and makes of the hosts and state directories
(docs/architecture.md, "Safety rules"): only regular files are read, whatever else occupies a host's
name is replaced (a directory cannot be: exit 2), and the modes are fixed
whatever the umask.

``syncd`` runs in a child process with a timeout wherever a regression would
block forever (opening a FIFO waits for a writer), so that it fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.errors import FatalIOError, outcome
from syncd.node.config import load_config
from syncd.node.files import BATCH_FROM, make_dirs, write_many
from syncd.node.hostsdir import read_installed
from syncd.node.state import HEALTH_FILE, LOCK_FILE, STATE_FILE
from syncd.rules.plan import blob_id as digest
from syncd.sync.agent import sync_once
from tests.figures import record
from tests.syncenv import Hub, Node, make_node
from tests.test_crash import kill_at_every_step

ROOT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 60  # seconds; a sync of three files takes well under one


def syncd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def repo_files(hub: Hub) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((hub.work / "hosts").iterdir())}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# --- non-regular entries under a host's name -------------------------------------------------


def test_a_fifo_named_like_a_host_is_replaced_not_opened(hub: Hub, node: Node) -> None:
    node.hosts.mkdir(parents=True)
    os.mkfifo(node.hosts / "gateway")
    result = syncd("sync", "-c", str(node.config))
    assert result.returncode == 0, result.stderr
    assert node.files() == repo_files(hub)
    assert stat.S_ISREG((node.hosts / "gateway").lstat().st_mode)
    assert mode(node.hosts / "gateway") == 0o644

    # the same once the name is managed: a FIFO put there later is drift, repaired
    (node.hosts / "my_laptop").unlink()
    os.mkfifo(node.hosts / "my_laptop")
    status = syncd("status", "-c", str(node.config), "--format", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["drift"] == ["my_laptop"]
    assert "my_laptop" in doc["other_entries"]
    result = syncd("sync", "-c", str(node.config))
    assert result.returncode == 0, result.stderr
    assert node.files() == repo_files(hub)


def test_a_symlink_named_like_a_host_is_replaced_and_its_target_never_touched(
    hub: Hub, node: Node, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a host file\n")
    os.mkfifo(outside / "pipe")  # reading through the link would block
    before = (outside / "secret").stat()
    node.hosts.mkdir(parents=True)
    (node.hosts / "gateway").symlink_to(outside / "pipe")
    (node.hosts / "my_laptop").symlink_to(outside / "secret")
    (node.hosts / "my_pc").symlink_to(outside)  # a link to a directory is still a link
    result = syncd("sync", "-c", str(node.config))
    assert result.returncode == 0, result.stderr
    assert node.files() == repo_files(hub)
    for name in ("gateway", "my_laptop", "my_pc"):
        assert stat.S_ISREG((node.hosts / name).lstat().st_mode), name
    after = (outside / "secret").stat()
    assert (outside / "secret").read_bytes() == b"not a host file\n"
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert stat.S_ISFIFO((outside / "pipe").lstat().st_mode)
    assert sorted(p.name for p in outside.iterdir()) == ["pipe", "secret"]


def test_a_directory_named_like_a_host_stops_the_sync_before_any_write(hub: Hub, node: Node) -> None:
    (node.hosts / "my_pc").mkdir(parents=True)
    result = syncd("sync", "-c", str(node.config))
    assert result.returncode == 2, result.stderr
    assert f"{node.hosts / 'my_pc'}: a directory where the repository has the host file my_pc" in result.stderr
    with pytest.raises(FatalIOError) as raised:
        sync_once(load_config(node.config))
    assert outcome(raised.value).exit_code == 2
    assert f"hint: remove it (tincd cannot use it either): rm -r {node.hosts / 'my_pc'}" in outcome(raised.value).line()
    assert sorted(p.name for p in node.hosts.iterdir()) == ["my_pc"], "nothing may be written"
    assert not (node.state / STATE_FILE).exists()
    (node.hosts / "my_pc").rmdir()
    result = syncd("sync", "-c", str(node.config))
    assert result.returncode == 0, result.stderr
    assert node.files() == repo_files(hub)


def test_read_installed_reads_regular_files_only_and_at_most_the_limit(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    (hosts / "alpha").write_bytes(b"Port = 655\n")
    (hosts / "big").write_bytes(b"x" * 2048)
    os.mkfifo(hosts / "fifo")
    (hosts / "link").symlink_to(hosts / "alpha")
    (hosts / "subdir").mkdir()
    installed, stale = read_installed(hosts, {}, limit=1024)
    assert installed.keys() == {"alpha", "big"}
    assert installed["alpha"] == digest(b"Port = 655\n")
    assert installed["big"] != digest(b"x" * 2048)  # not read: equal to no repository file
    assert not stale


# --- modes, whatever the umask ---------------------------------------------------------------


def check_modes(node: Node, state: Path, created: list[Path]) -> None:
    for directory in created:
        assert mode(directory) == 0o755, directory
    for name in node.files():
        assert mode(node.hosts / name) == 0o644, name
    assert mode(state) == 0o700
    assert mode(state / "repo.git") == 0o700
    for name in (LOCK_FILE, STATE_FILE, HEALTH_FILE):
        assert mode(state / name) == 0o600, name


@pytest.mark.parametrize("mask", [0o000, 0o077, 0o027])
def test_modes_do_not_depend_on_the_umask(hub: Hub, tmp_path: Path, mask: int) -> None:
    state = tmp_path / "node" / "var" / "lib" / "syncd" / "inet6"
    node = make_node(tmp_path / "node", str(hub.server), tmp_path / "keys" / "allowed_signers", state_dir=str(state))
    with umask(mask):
        code, _, err = node.sync()
    assert code == 0, err
    assert node.files() == repo_files(hub)
    etc = node.root / "etc"
    tinc_dirs = [etc, etc / "tinc", etc / "tinc" / "inet6", node.hosts]
    check_modes(node, state, [*tinc_dirs, state.parent, state.parent.parent, state.parent.parent.parent])


def test_an_open_state_dir_is_tightened_and_host_files_rewritten_0644(hub: Hub, node: Node) -> None:
    node.state.mkdir()
    node.state.chmod(0o777)
    with umask(0o077):
        code, _, err = node.sync()
    assert code == 0, err
    check_modes(node, node.state, [node.hosts])
    hub.change(
        "gateway moves",
        lambda w: (w / "hosts" / "gateway").write_text((w / "hosts" / "gateway").read_text() + "# moved\n"),
    )
    with umask(0o777):
        code, _, err = node.sync()
    assert code == 0, err
    assert node.files() == repo_files(hub)
    check_modes(node, node.state, [node.hosts])


def test_a_crash_while_creating_the_directories_converges_to_the_same_modes(
    hub: Hub, node: Node, tmp_path: Path
) -> None:
    """The first sync on a node with no tinc directory, killed at every step
    (mkdir and chmod included) under umask 077: the next run ends with the
    modes a clean run leaves."""
    assert node.sync("--dry-run")[0] == 0  # fetch first: the crashes hit the directories and the apply
    etc = node.root / "etc"
    created = [etc, etc / "tinc", etc / "tinc" / "inet6", node.hosts]

    def recovered(limit: int) -> None:
        with umask(0o077):
            code, _, err = node.sync()
        assert code == 0, f"crash at call {limit}: recovery failed: {err}"
        assert node.files() == repo_files(hub), f"crash at call {limit}"
        check_modes(node, node.state, created)

    crashes = kill_at_every_step(node, tmp_path, recovered, umask=0o077)
    check_modes(node, node.state, created)
    assert crashes >= 2 * len(created) + 3 * 5, f"only {crashes} crash points were exercised"
    record("crash test: kill points during a first sync that creates the tinc dirs, all converged", str(crashes))


def test_make_dirs_creates_what_is_missing_and_keeps_what_exists(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc").chmod(0o750)  # the operator's choice: kept
    with umask(0o077):
        make_dirs(tmp_path / "etc" / "tinc" / "inet6" / "hosts")
    assert mode(tmp_path / "etc") == 0o750
    for directory in ("etc/tinc", "etc/tinc/inet6", "etc/tinc/inet6/hosts"):
        assert mode(tmp_path / directory) == 0o755, directory
    (tmp_path / "etc" / "tinc" / "inet6" / "hosts").chmod(0)  # as a crash between mkdir and chmod leaves it
    make_dirs(tmp_path / "etc" / "tinc" / "inet6" / "hosts")
    assert mode(tmp_path / "etc" / "tinc" / "inet6" / "hosts") == 0o755
    (tmp_path / "file").write_text("x\n")
    with pytest.raises(FatalIOError, match=f"{tmp_path / 'file'}: not a directory"):
        make_dirs(tmp_path / "file" / "hosts")


@pytest.mark.parametrize("count", [3, BATCH_FROM + 8])
def test_write_many_writes_each_file_whole_and_leaves_no_temp_file(tmp_path: Path, count: int) -> None:
    (tmp_path / "node0").write_bytes(b"old")
    files = {f"node{i}": f"Subnet = 10.0.{i}.0/24\n".encode() * (i + 1) for i in range(count)}
    stats = write_many(tmp_path, files)
    assert sorted(stats) == sorted(files)
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
        assert stat.S_IMODE(stats[name].st_mode) == 0o644
        assert stats[name].st_ino == (tmp_path / name).lstat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


@pytest.mark.parametrize("count", [3, BATCH_FROM + 8])
def test_write_many_that_fails_leaves_no_temp_file(tmp_path: Path, count: int) -> None:
    files = {f"node{i}": b"Subnet = 10.0.0.0/24\n" for i in range(count)}
    (tmp_path / f"node{count - 1}").mkdir()  # the last rename fails
    with pytest.raises(OSError):
        write_many(tmp_path, files)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".syncd-")]
