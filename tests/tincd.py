"""A real tincd for tests, Debian's 1.0 or (given ``sbin``) the tinc 1.1 of
``tests/tinc11.py``: ``DeviceType = dummy`` (no tun device), bound to
127.0.0.1 on a free port, started with ``--pidfile`` and ``--logfile``,
stopped by pid."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, require


@dataclass
class Tincd:
    dir: Path
    name: str
    proc: subprocess.Popen[bytes] | None = None
    sbin: Path | None = None  # tinc 1.1's tincd and tinc; None: the system's tincd 1.0

    @property
    def tincd(self) -> str:
        return require("tincd") if self.sbin is None else str(self.sbin / "tincd")

    @property
    def pidfile(self) -> Path:
        return self.dir / "tinc.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / "tinc.log"

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def hups(self) -> int:
        return self.log().count("Got HUP signal")

    def host_file(self) -> str:
        return (self.dir / "hosts" / self.name).read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def make_tinc_dir(directory: Path, name: str, subnet: str, sbin: Path | None = None) -> Tincd:
    """tinc.conf, fresh key pairs and the node's host file: an RSA key
    (``tincd -K``) for 1.0; RSA and Ed25519 keys (``tinc generate-keys``) for 1.1."""
    (directory / "hosts").mkdir(parents=True, exist_ok=True)
    (directory / "tinc.conf").write_text(
        f"Name = {name}\nDeviceType = dummy\nAddressFamily = ipv4\nBindToAddress = 127.0.0.1\n"
        f"Port = {free_port()}\nStrictSubnets = yes\n"
    )
    (directory / "hosts" / name).write_text(f"Subnet = {subnet}\n")
    if sbin is None:
        argv = [require("tincd"), "-c", str(directory), "-K2048"]
    else:
        argv = [str(sbin / "tinc"), "-c", str(directory), "--batch", "generate-keys", "2048"]
    subprocess.run(argv, input=b"\n\n", capture_output=True, check=True)
    return Tincd(directory, name, sbin=sbin)


@contextlib.contextmanager
def running(node: Tincd) -> Iterator[Tincd]:
    node.proc = subprocess.Popen(
        [node.tincd, "-c", str(node.dir), "-D", f"--pidfile={node.pidfile}", f"--logfile={node.logfile}", "-d1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while "Ready" not in node.log():
            if node.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tincd did not start:\n{node.log()}")
            time.sleep(0.05)
        yield node
    finally:
        if node.proc.poll() is None:
            node.proc.terminate()
            try:
                node.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=5)
