"""Network namespaces, veth links and processes for the end-to-end tests.

Everything the lab creates is named with a per-run prefix, tracked, and torn
down in ``close()`` (processes by pid, then namespaces), also when the test
fails.  Traffic stays inside the namespaces: no link leaves them and none is
attached to the host's own network namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class Lab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = f"sd{os.getpid() % 100000}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.links = 0

    # --- namespaces and links --------------------------------------------------------

    def ns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        self.exec(full, "ip", "link", "set", "lo", "up")
        return full

    def switch(self, name: str) -> str:
        """A namespace holding one bridge, ``br0``: an Ethernet segment."""
        full = self.ns(name)
        self.exec(full, "ip", "link", "add", "br0", "type", "bridge")
        self.exec(full, "ip", "link", "set", "br0", "up")
        return full

    def plug(self, host: str, switch: str, ifname: str, address: str, gateway: str | None = None) -> None:
        """A veth from ``host`` (as ``ifname``, with ``address``) to ``switch``'s bridge."""
        self.links += 1
        a, b = f"{self.prefix}a{self.links}", f"{self.prefix}b{self.links}"
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        run(["ip", "link", "set", a, "netns", host])
        run(["ip", "link", "set", b, "netns", switch])
        self.exec(host, "ip", "link", "set", a, "name", ifname)
        self.exec(host, "ip", "addr", "add", address, "dev", ifname)
        self.exec(host, "ip", "link", "set", ifname, "up")
        self.exec(switch, "ip", "link", "set", b, "master", "br0")
        self.exec(switch, "ip", "link", "set", b, "up")
        if gateway is not None:
            self.exec(host, "ip", "route", "add", "default", "via", gateway)

    def packets(self, host: str, ifname: str = "eth0") -> int:
        """Packets received plus sent on an interface so far."""
        base = f"/sys/class/net/{ifname}/statistics"
        out = self.exec(host, "cat", f"{base}/rx_packets", f"{base}/tx_packets").stdout.decode().split()
        return int(out[0]) + int(out[1])

    # --- commands and processes ------------------------------------------------------------

    def exec(self, ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)

    def spawn(
        self, ns: str, argv: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            env=env,
        )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for ns in reversed(self.namespaces):
            # anything a test left running in the namespace goes with it
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.decode().split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        self.processes.clear()


def run(argv: Sequence[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode().strip()}")
    return result


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until ``check()`` first held, or None after ``timeout``."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return None
        time.sleep(interval)


def wait_for_each(names: Sequence[str], check: Callable[[str], bool], timeout: float) -> dict[str, float | None]:
    """Seconds until ``check(name)`` first held, for each name (None: not
    within ``timeout``); polled together, so one slow name delays none."""
    start = time.monotonic()
    times: dict[str, float | None] = dict.fromkeys(names)
    while True:
        for name in names:
            if times[name] is None and check(name):
                times[name] = time.monotonic() - start
        if all(t is not None for t in times.values()) or time.monotonic() - start >= timeout:
            return times
        time.sleep(0.05)
