"""Self-tests of the hostile servers (tests/hostile/): real git and
dulwich talk to it, and each mode really misbehaves the way it claims."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.client import get_transport_and_path
from dulwich.config import ConfigDict
from dulwich.errors import GitProtocolError
from dulwich.objects import ObjectID
from dulwich.repo import Repo

from tests.figures import record
from tests.gitutil import git, verify_with_git
from tests.hostile import (
    MODES,
    PHANTOM_TIP,
    REENCODINGS,
    HostileURL,
    hostile_git,
    reencode_signature,
    stalled_ssh_pids,
    stalling_http,
    stalling_ssh_command,
)
from tests.syncenv import Hub, admin_and_signers


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Hub, Path]:
    """A signed hosts repository with three commits; and its allowed_signers."""
    root = tmp_path_factory.mktemp("hub")
    admin, signers = admin_and_signers(root / "keys")
    hub = Hub(root / "hub", admin)
    hub.change("add node9", lambda w: (w / "hosts" / "node9").write_text("Subnet = 10.9.0.0/16\n"))
    hub.change("node9 moves", lambda w: (w / "hosts" / "node9").write_text("Subnet = 10.19.0.0/16\n"))
    return hub, signers


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """dulwich's git:// client takes its socket timeout from the default."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def dulwich_fetch(url: str, target: Path) -> Repo:
    repo = Repo(str(target)) if target.exists() else Repo.init_bare(str(target), mkdir=True)
    client, path = get_transport_and_path(url)
    try:
        client.fetch(path, repo)
    finally:
        client.close()
    return repo


def oid(sha: str) -> ObjectID:
    return ObjectID(sha.encode())


def rev(repo: Path, name: str) -> str:
    return git(repo, "rev-parse", name)


def assert_stopped(url: HostileURL) -> None:
    assert url.server.leftovers() == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hostile-")]


def test_real_git_clones_from_honest(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    server, tip = hub[0].server, hub[0].tip
    with hostile_git(server, "honest") as url:
        subprocess.run(["git", "clone", "-q", "--bare", url, str(tmp_path / "c.git")], check=True, timeout=30)
    assert rev(tmp_path / "c.git", "main") == tip
    git(tmp_path / "c.git", "fsck", "--full", "--strict")
    [conn] = url.connections
    assert conn.request == f"git-upload-pack /{server.name}"
    assert "version=2" in conn.params  # git asks for v2 and accepts the v0 answer
    assert set(conn.wants) == {tip} and conn.done
    assert_stopped(url)


def test_dulwich_fetches_from_honest_and_sends_haves(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    h = hub[0]
    older = tmp_path / "older.git"  # the server as it was one commit ago
    git(tmp_path, "clone", "-q", "--bare", str(h.server), str(older))
    first = rev(older, "main~1")
    git(older, "update-ref", "refs/heads/main", first)
    target = tmp_path / "d.git"
    with hostile_git(older, "honest") as old_url:
        dulwich_fetch(old_url, target)
    assert oid(first) in Repo(str(target)).object_store and oid(h.tip) not in Repo(str(target)).object_store
    git(target, "update-ref", "refs/heads/main", first)  # what a fetch looks at to say what it has
    with hostile_git(h.server, "honest") as url:
        repo = dulwich_fetch(url, target)
    assert oid(h.tip) in repo.object_store
    git(target, "update-ref", "refs/heads/main", h.tip)
    git(target, "fsck", "--full", "--strict")
    [clone], [fetch] = old_url.connections, url.connections
    assert clone.haves == [] and fetch.haves[0] == first
    assert fetch.sent < clone.sent  # only what main~1 lacks crossed the wire
    assert {"side-band-64k", "ofs-delta", "multi_ack_detailed"} <= set(fetch.capabilities)


def test_real_git_fetches_incrementally_from_honest(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    """git negotiates in rounds (flush, ACK common / NAK) and gets a thin pack."""
    h = hub[0]
    node = tmp_path / "node.git"
    git(tmp_path, "clone", "-q", "--bare", str(h.server), str(node))
    first = rev(node, "main~1")
    git(node, "update-ref", "refs/heads/main", first)
    git(node, "reflog", "expire", "--expire=now", "--all")
    git(node, "gc", "-q", "--prune=now")  # the node really lacks the tip now
    assert subprocess.run(["git", "-C", str(node), "cat-file", "-e", h.tip], check=False).returncode != 0
    with hostile_git(h.server, "honest") as url:
        git(node, "fetch", "-q", url, "+main:refs/heads/main")
    assert rev(node, "main") == h.tip
    git(node, "fsck", "--full", "--strict")
    [conn] = url.connections
    assert first in conn.haves and conn.done
    assert "thin-pack" in conn.capabilities


@pytest.mark.parametrize("omit", ["tree", "blobs", "parent"])
def test_incomplete_leaves_the_named_objects_out(hub: tuple[Hub, Path], tmp_path: Path, omit: str) -> None:
    h = hub[0]
    with hostile_git(h.server, "incomplete", omit=omit) as url:
        repo = dulwich_fetch(url, tmp_path / "d.git")
    store = repo.object_store
    root = rev(h.server, "main^{tree}")
    blobs = git(h.server, "ls-tree", "-r", "--object-only", "main").split()
    trees = git(h.server, "ls-tree", "-r", "-d", "--object-only", "main").split()
    assert oid(h.tip) in store
    assert (oid(root) in store) == (omit != "tree")
    assert all((oid(b) in store) == (omit != "blobs") for b in blobs)
    assert all(oid(t) in store for t in trees)
    assert (oid(rev(h.server, "main~1")) in store) == (omit != "parent")
    assert_stopped(url)


def test_real_git_notices_an_incomplete_pack(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    with hostile_git(hub[0].server, "incomplete", omit="blobs") as url:
        result = subprocess.run(["git", "clone", "-q", "--bare", url, str(tmp_path / "c.git")], timeout=30, check=False)
    assert result.returncode != 0


def test_substitute_serves_a_reencoded_commit(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    h, signers = hub
    source = tmp_path / "forged.git"
    git(tmp_path, "clone", "-q", "--bare", str(h.server), str(source))
    forged = reencode_signature(source, h.tip, "sha256-header")
    with hostile_git(h.server, "substitute", tip=forged, source=source) as url:
        repo = dulwich_fetch(url, tmp_path / "d.git")
    assert oid(forged) in repo.object_store and oid(h.tip) not in repo.object_store
    assert verify_with_git(tmp_path / "d.git", forged, signers)
    assert url.connections[0].wants[0] == forged


@pytest.mark.parametrize("pack", ["empty", "none"])
def test_phantom_advertises_a_tip_it_never_sends(hub: tuple[Hub, Path], tmp_path: Path, pack: str) -> None:
    with hostile_git(hub[0].server, "phantom", pack=pack) as url:
        repo = dulwich_fetch(url, tmp_path / "d.git")  # dulwich itself does not notice
    assert oid(PHANTOM_TIP) not in repo.object_store
    assert url.connections[0].wants[0] == PHANTOM_TIP
    assert_stopped(url)


@pytest.mark.parametrize("mode", ["stall", "stall_after_refs"])
def test_stall_makes_a_socket_timeout_fire(hub: tuple[Hub, Path], tmp_path: Path, mode: str) -> None:
    with hostile_git(hub[0].server, mode) as url, socket_timeout(0.3):
        start = time.monotonic()
        with pytest.raises((TimeoutError, GitProtocolError)) as raised:
            dulwich_fetch(url, tmp_path / "d.git")
        assert isinstance(raised.value, TimeoutError) or isinstance(raised.value.__cause__, TimeoutError)
        assert time.monotonic() - start < 3
    assert url.connections[0].wants == ([hub[0].tip, hub[0].tip] if mode == "stall_after_refs" else [])
    assert_stopped(url)


def test_stop_while_a_client_waits(hub: tuple[Hub, Path]) -> None:
    """Exiting the server with a client still connected closes everything."""
    with hostile_git(hub[0].server, "stall") as url:
        client = socket.create_connection(("127.0.0.1", url.server.port), timeout=5)
        client.sendall(b"0032git-upload-pack /hosts.git\0host=127.0.0.1\0")
        time.sleep(0.2)
        start = time.monotonic()
    assert time.monotonic() - start < 2
    assert client.recv(10) == b""  # the server closed its end without a word
    client.close()
    assert_stopped(url)


@pytest.mark.parametrize("how", REENCODINGS)
def test_reencoded_signature_still_verifies(hub: tuple[Hub, Path], tmp_path: Path, how: str) -> None:
    h, signers = hub
    repo = tmp_path / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(h.server), str(repo))
    forged = reencode_signature(repo, h.tip, how)
    assert forged != h.tip
    assert verify_with_git(repo, forged, signers)  # git accepts every variant (git 2.39, OpenSSH 9)
    original, copy = Repo(str(repo))[oid(h.tip)], Repo(str(repo))[oid(forged)]
    payload, signature, _ = copy.extract_signature()  # type: ignore[attr-defined]
    assert payload == original.extract_signature()[0]  # type: ignore[attr-defined]
    assert signature is not None
    assert (copy.tree, copy.parents, copy.message) == (original.tree, original.parents, original.message)  # type: ignore[attr-defined]


def test_reencode_refuses_an_unsigned_commit(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    repo = tmp_path / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(hub[0].server), str(repo))
    unsigned = git(repo, "commit-tree", "-m", "unsigned", rev(repo, "main^{tree}"))
    with pytest.raises(ValueError, match="no gpgsig header"):
        reencode_signature(repo, unsigned, "blank-line")
    with pytest.raises(ValueError, match="unknown re-encoding"):
        reencode_signature(repo, hub[0].tip, "sideways")


def test_unknown_modes_and_options_are_refused(hub: tuple[Hub, Path]) -> None:
    for mode, opts, message in [
        ("sulk", {}, "unknown hostile mode"),
        ("honest", {"omit": "tree"}, "takes no option omit"),
        ("incomplete", {"omit": "commits"}, "needs omit="),
        ("substitute", {"tip": PHANTOM_TIP}, "needs tip="),
        ("flood", {}, "needs size="),
        ("phantom", {"pack": "half"}, "pack="),
    ]:
        with pytest.raises(ValueError, match=message), hostile_git(hub[0].server, mode, **opts):
            pass


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_flood_streams_without_growing(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    size = 256 << 20
    walker = Repo.init_bare(str(tmp_path / "e.git"), mkdir=True).get_graph_walker()
    received = [0]

    def count(data: bytes) -> int:  # the client keeps nothing either
        received[0] += len(data)
        return len(data)

    base = peak = vm_rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, vm_rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.monotonic()
    try:
        with hostile_git(hub[0].server, "flood", size=size) as url:
            client, path = get_transport_and_path(url)
            client.fetch_pack(path, lambda refs, depth=None: [refs[b"HEAD"]], walker, count)
    finally:
        elapsed = time.monotonic() - start
        done.set()
        sampler.join()
    record("hostile flood", f"{size >> 20} MiB to dulwich in {elapsed:.2f} s, RSS +{(peak - base) >> 20} MiB")
    assert size <= received[0] < size * 1.01
    assert url.connections[0].sent > size
    assert peak - base < 16 << 20, f"RSS grew by {(peak - base) >> 20} MiB while {size >> 20} MiB streamed"
    assert_stopped(url)


def test_flood_pack_is_a_valid_pack(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    """git index-pack accepts what flood sends, so a client must count bytes
    to stop it: nothing in the stream is malformed."""
    target = tmp_path / "t.git"
    git(tmp_path, "init", "-q", "--bare", str(target))
    with hostile_git(hub[0].server, "flood", size=3 << 20) as url:
        fetch = ["git", "-C", str(target), "fetch-pack", "-q", "--keep", "--keep", url, "refs/heads/main"]
        subprocess.run(fetch, capture_output=True, timeout=30, check=True)
    packs = list((target / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1 and packs[0].stat().st_size >= 3 << 20
    git(target, "verify-pack", str(packs[0]))


def test_drip_is_slow_but_never_silent_for_long(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    interval, chunk = 0.1, 512
    with hostile_git(hub[0].server, "drip", interval=interval, chunk=chunk) as url, socket_timeout(10 * interval):
        start = time.monotonic()
        repo = dulwich_fetch(url, tmp_path / "d.git")
        elapsed = time.monotonic() - start
    assert oid(hub[0].tip) in repo.object_store
    writes = url.connections[0].sent // chunk
    assert writes >= 5 and elapsed >= writes * interval


def test_garbage_is_no_protocol(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    with hostile_git(hub[0].server, "garbage") as url:
        with pytest.raises(GitProtocolError):
            dulwich_fetch(url, tmp_path / "d.git")
        result = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0 and "protocol error" in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_stops_cleanly(hub: tuple[Hub, Path], tmp_path: Path, mode: str) -> None:
    opts: dict[str, dict[str, object]] = {
        "drip": {"interval": 0.01, "chunk": 4096},
        "incomplete": {"omit": "tree"},
        "substitute": {"tip": hub[0].tip, "source": hub[0].server},
        "flood": {"size": 1 << 20},
    }
    with hostile_git(hub[0].server, mode, **opts.get(mode, {})) as url, socket_timeout(0.5):
        with contextlib.suppress(GitProtocolError, TimeoutError, AssertionError):
            dulwich_fetch(url, tmp_path / "d.git")
        assert len(url.connections) == 1
    assert_stopped(url)


def test_stop_while_the_server_is_blocked_sending(hub: tuple[Hub, Path], tmp_path: Path) -> None:
    """A client that stops reading in the middle of a flood does not keep
    the server from stopping."""
    walker = Repo.init_bare(str(tmp_path / "e.git"), mkdir=True).get_graph_walker()
    reading, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def stuck(data: bytes) -> int:
        reading.set()
        release.wait(10)
        return len(data)

    def fetch(url: str) -> None:
        client, path = get_transport_and_path(url)
        try:
            client.fetch_pack(path, lambda refs, depth=None: [refs[b"HEAD"]], walker, stuck)
        except BaseException as exc:
            failures.append(exc)

    with hostile_git(hub[0].server, "flood", size=1 << 30) as url:
        client = threading.Thread(target=fetch, args=(url,))
        client.start()
        assert reading.wait(5)
        time.sleep(0.3)  # the socket buffers fill up; the server blocks in send
        start = time.monotonic()
    stopped = time.monotonic() - start
    release.set()
    client.join(10)
    assert stopped < 2 and not client.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], GitProtocolError)  # the connection ended mid-pack
    assert_stopped(url)


def test_stalling_http_makes_dulwich_time_out(tmp_path: Path) -> None:
    settings = ConfigDict()
    settings.set((b"http",), b"timeout", b"0.3")
    with stalling_http() as url:
        client, path = get_transport_and_path(url, config=settings)
        start = time.monotonic()
        with pytest.raises(GitProtocolError, match="Read timed out"):
            client.fetch(path, Repo.init_bare(str(tmp_path / "d.git"), mkdir=True))
        elapsed = time.monotonic() - start
    # urllib3 retries: each of its attempts waited out the timeout once
    assert len(url.connections) >= 1 and elapsed >= 0.3 * len(url.connections)
    assert url.connections[0].request == "GET /hosts.git/info/refs?service=git-upload-pack HTTP/1.1"
    assert_stopped(url)


def running(pid: int) -> bool:
    """Alive and not a zombie (dulwich does not always reap its ssh child)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stalling_ssh_command_never_answers_and_ends_by_pid(tmp_path: Path) -> None:
    command = stalling_ssh_command(tmp_path / "ssh")
    failures: list[BaseException] = []

    def fetch() -> None:
        client, path = get_transport_and_path("ssh://git@127.0.0.1/hosts.git", ssh_command=command)
        try:
            client.fetch(path, Repo.init_bare(str(tmp_path / "d.git"), mkdir=True))
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    thread = threading.Thread(target=fetch)
    thread.start()
    deadline = time.monotonic() + 5
    while not stalled_ssh_pids(tmp_path / "ssh") and time.monotonic() < deadline:
        time.sleep(0.02)
    [pid] = stalled_ssh_pids(tmp_path / "ssh")
    thread.join(0.5)
    assert thread.is_alive()  # still waiting for an answer
    os.kill(pid, signal.SIGTERM)
    thread.join(5)
    assert not thread.is_alive() and failures and isinstance(failures[0], GitProtocolError)
    deadline = time.monotonic() + 5  # the pipe closes a moment before the process is gone
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(pid)


def test_stalling_ssh_command_ends_when_its_stdin_closes(tmp_path: Path) -> None:
    command = shlex.split(stalling_ssh_command(tmp_path))
    proc = subprocess.Popen([*command, "127.0.0.1", "git-upload-pack '/hosts.git'"], stdin=subprocess.PIPE)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stalled_ssh_pids(tmp_path) == [proc.pid]
