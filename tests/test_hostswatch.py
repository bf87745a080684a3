"""The watched hosts directory of `syncd run` (``node.hostswatch``), with
real inotify: after each kind of drift a pass sees exactly what a walk of
every file sees, and stats every file whenever the watch cannot vouch (a
lost event, a dead watcher, a replaced directory, a file with another
link).  The same drifts, and an overflowed watch, are repaired by a real
`syncd run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.node.hostsdir import FileStat, read_installed
from syncd.node.hostswatch import WatchedHosts
from syncd.node.state import STATE_FILE
from syncd.rules.plan import blob_id, make_plan
from tests.syncenv import Hub, Node, admin_and_signers, make_node
from tests.test_runloop import Agent, wait_until

Manifest = dict[str, FileStat]


def populate(hosts: Path, count: int = 12) -> Manifest:
    hosts.mkdir(parents=True)
    manifest = {}
    for i in range(count):
        data = f"Subnet = 10.0.{i}.0/24\n".encode()
        (hosts / f"node{i}").write_bytes(data)
        manifest[f"node{i}"] = FileStat.of(blob_id(data), os.lstat(hosts / f"node{i}"))
    return manifest


class Watched:
    """A started ``WatchedHosts`` and a way to wait for its next event."""

    def __init__(self, hosts: Path) -> None:
        self.fired = threading.Event()
        self.hosts = WatchedHosts(hosts, on_change=self.fired.set)
        self.hosts.start()

    def after(self, change: Callable[[], object]) -> None:
        """Make ``change`` and wait until the watch reported it (and the
        rest of its burst)."""
        self.fired.clear()
        change()
        assert self.fired.wait(5), "no inotify event within 5 s"
        time.sleep(0.1)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Manifest, Watched]]:
    hosts = tmp_path / "hosts"
    manifest = populate(hosts)
    watch = Watched(hosts)
    try:
        yield hosts, manifest, watch
    finally:
        watch.hosts.stop()


def append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"Subnet = 10.99.0.0/16\n")


def rename_over(path: Path) -> None:
    (path.parent / ".edit").write_bytes(b"Subnet = 10.98.0.0/16\n")
    (path.parent / ".edit").replace(path)


DRIFTS: dict[str, Callable[[Path], object]] = {
    "echo >> hosts/x": lambda h: append(h / "node1"),
    "a rename over a file": lambda h: rename_over(h / "node2"),
    "a deletion": lambda h: (h / "node3").unlink(),
    "a chmod": lambda h: (h / "node4").chmod(0o600),
    "a touch": lambda h: os.utime(h / "node5", ns=(1, 1)),
    "a new file": lambda h: (h / "node77").write_bytes(b"Subnet = 10.77.0.0/16\n"),
    "a rename away": lambda h: (h / "node6").rename(h.parent / "node6.moved"),
}


def test_after_each_drift_a_pass_sees_what_a_walk_sees_without_a_walk(
    watched: tuple[Path, Manifest, Watched],
) -> None:
    hosts, manifest, watch = watched
    assert (
        watch.hosts.scan(manifest)
        == read_installed(hosts, manifest)
        == ({n: f.blob for n, f in manifest.items()}, set())
    )
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert watch.hosts.walks == 1  # the second pass stat'ed nothing
    for what, drift in DRIFTS.items():
        watch.after(lambda drift=drift: drift(hosts))  # type: ignore[misc]
        assert watch.hosts.scan(manifest) == read_installed(hosts, manifest), what
    installed, stale = watch.hosts.scan(manifest)
    assert installed["node1"] != manifest["node1"].blob and installed["node2"] != manifest["node2"].blob
    assert "node3" not in installed and "node6" not in installed and "node77" in installed
    assert stale == {"node1", "node2", "node4", "node5"}  # node4: same bytes, new ctime: read again
    assert installed["node4"] == manifest["node4"].blob
    assert watch.hosts.walks == 1


def test_syncds_own_writes_are_accounted_for_by_name(watched: tuple[Path, Manifest, Watched]) -> None:
    hosts, manifest, watch = watched
    installed, _ = watch.hosts.scan(manifest)
    desired = {n: (hosts / n).read_bytes() for n in manifest if n != "node0"}
    desired["node1"] = b"Subnet = 10.42.0.0/16\n"
    desired["node50"] = b"Subnet = 10.50.0.0/16\n"
    plan = make_plan(desired, installed, {n: f.blob for n, f in manifest.items()})
    applied: list[Manifest] = []
    watch.after(lambda: applied.append(watch.hosts.apply(plan, manifest, set())))
    manifest = applied[0]  # a new object, as the next pass loads it
    assert (
        watch.hosts.scan(manifest)
        == read_installed(hosts, manifest)
        == ({n: blob_id(d) for n, d in desired.items()}, set())
    )
    assert watch.hosts.walks == 1


def test_a_manifest_that_changed_without_an_event_is_compared_again(watched: tuple[Path, Manifest, Watched]) -> None:
    hosts, manifest, watch = watched
    watch.hosts.scan(manifest)
    other = {
        **manifest,
        "node8": manifest["node8"]._replace(mtime_ns=1),
        "node9": manifest["node9"]._replace(blob="0" * 40),
    }
    del other["node10"]
    assert watch.hosts.scan(other) == read_installed(hosts, other)
    assert watch.hosts.scan(other)[1] == {"node8"}  # node9: its stat matches, so the record is believed
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert watch.hosts.walks == 1


def test_a_replaced_directory_is_walked_and_watched_again(watched: tuple[Path, Manifest, Watched]) -> None:
    hosts, manifest, watch = watched
    watch.hosts.scan(manifest)
    hosts.rename(hosts.parent / "hosts.old")  # the watch stays on the old directory: no event here
    populate(hosts, 3)
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert watch.hosts.walks == 2
    watch.after(lambda: append(hosts / "node1"))  # the new directory is watched
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert watch.hosts.walks == 2


def test_a_dead_watcher_means_a_walk(watched: tuple[Path, Manifest, Watched]) -> None:
    hosts, manifest, watch = watched
    watch.hosts.scan(manifest)
    observer = watch.hosts._observer
    observer.stop()
    observer.join(timeout=5)
    append(hosts / "node1")  # no thread reads its event
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert "node1" in watch.hosts.scan(manifest)[1]
    assert watch.hosts.walks == 2  # and it watches again: the next pass walks no more


def test_a_file_with_another_link_is_walked_every_pass(tmp_path: Path, watched: tuple[Path, Manifest, Watched]) -> None:
    hosts, manifest, watch = watched
    os.link(hosts / "node7", tmp_path / "elsewhere")
    watch.hosts.scan(manifest)
    append(tmp_path / "elsewhere")  # a write through the other link: no event on hosts/
    assert watch.hosts.scan(manifest) == read_installed(hosts, manifest)
    assert "node7" in watch.hosts.scan(manifest)[1]
    assert watch.hosts.walks == 3


def queue_limit() -> int:
    """How many events the kernel queues for an inotify instance."""
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped: from then on it reads
    no event, and its queue fills."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"

    assert wait_until(stopped, 5) is not None, f"pid {pid} did not stop"


CHILD = """
import json, sys
from pathlib import Path
from syncd.node.hostswatch import WatchedHosts
hosts = WatchedHosts(Path(sys.argv[1]))
hosts.start()
manifest = {}
for _ in sys.stdin:
    installed, stale = hosts.scan(manifest)
    print(json.dumps({"walks": hosts.walks, "installed": installed}), flush=True)
"""


def test_an_overflowed_queue_means_a_walk(tmp_path: Path) -> None:
    """The watching process is stopped while more events than the kernel
    queues (fs.inotify.max_queued_events) happen, the last of them a change
    to node9: its event is lost, IN_Q_OVERFLOW arrives instead."""
    hosts = tmp_path / "hosts"
    populate(hosts)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(hosts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None

    def scan() -> dict[str, object]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("scan\n")
        child.stdin.flush()
        answer: dict[str, object] = json.loads(child.stdout.readline())
        return answer

    try:
        assert scan()["walks"] == scan()["walks"] == 1
        stop(child.pid)
        for i in range(queue_limit() + 100):  # two names in turn: the kernel merges only an event equal to the last
            os.utime(hosts / f"node{i % 2}")
        append(hosts / "node9")
        child.send_signal(signal.SIGCONT)
        # the queued events reach the handler first; each scan meanwhile
        # answers with what was reported (a pass while events are in flight)
        walked = wait_until(lambda: scan()["walks"] == 2, 30)
        assert walked is not None, "no walk after the overflow"
        assert scan()["installed"] == read_installed(hosts, {})[0]
        assert scan()["walks"] == 2
    finally:
        child.send_signal(signal.SIGCONT)
        child.stdin.close()
        child.wait(timeout=10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Node, Agent]]:
    admin, signers = admin_and_signers(tmp_path / "keys")
    hub = Hub(tmp_path / "hub", admin)
    node = make_node(tmp_path / "node", str(hub.server), signers)
    running = Agent(node, tmp_path, interval=300)
    try:
        assert wait_until(lambda: any("READY=1" in m for m in running.received()), 20) is not None, (
            running.log_path.read_text()
        )
        yield node, running
    finally:
        running.stop()


def recorded(node: Node, name: str) -> list[object]:
    entry: list[object] = json.loads((node.state / STATE_FILE).read_text())["manifest"][name]
    return entry


def test_syncd_run_repairs_each_drift_and_an_overflowed_watch(agent: tuple[Node, Agent]) -> None:
    node, running = agent
    original = {p.name: p.read_bytes() for p in node.hosts.iterdir()}

    def restored(name: str) -> bool:
        path = node.hosts / name
        return path.exists() and path.read_bytes() == original[name]

    drifts: list[tuple[str, Callable[[], object]]] = [
        ("echo >> hosts/gateway", lambda: append(node.hosts / "gateway")),
        ("a rename over hosts/gateway", lambda: rename_over(node.hosts / "gateway")),
        ("rm hosts/my_laptop", lambda: (node.hosts / "my_laptop").unlink()),
    ]
    for what, drift in drifts:
        drift()
        assert wait_until(lambda: restored("gateway") and restored("my_laptop"), 5) is not None, what
    (node.hosts / "gateway").chmod(0o600)  # same bytes: the pass reads it again and records its new stat
    ctime = os.lstat(node.hosts / "gateway").st_ctime_ns
    assert wait_until(lambda: recorded(node, "gateway")[3] == ctime, 5) is not None, running.log_path.read_text()
    stop(running.proc.pid)
    try:
        (node.hosts / ".flood").write_bytes(b"")  # not a node name: left alone
        for i in range(queue_limit() + 100):  # none of them names gateway
            os.utime(node.hosts / (".flood" if i % 2 else "my_laptop"))
        append(node.hosts / "gateway")  # its event is lost in the overflow
    finally:
        running.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: restored("gateway"), 30) is not None, running.log_path.read_text()
    assert running.proc.poll() is None
