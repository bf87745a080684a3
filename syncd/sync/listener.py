"""The agent's ears: UDP notifications on its VPN address(es), and
sending them (``syncd notify``, and an agent telling others).

A listener thread reads one datagram at a time into a fixed buffer and
hands each ``Notice`` that decodes to a callback; it keeps nothing per
sender, so a flood costs CPU for the datagrams the kernel's socket buffer
holds, and no memory.  The socket is bound with ``IP_FREEBIND``: the agent
may start before tincd's ``tinc-up`` has assigned the VPN address, and
hears notifications as soon as the address exists.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import threading
from collections.abc import Callable, Iterable

from syncd.sync.gossip import MAX_DATAGRAM, Notice, decode

OnNotice = Callable[[Notice, str], None]  # (notice, the sender's address)
POLL = 0.5  # seconds: how often the thread looks at its stop flag
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind to an address not (yet) assigned


def bind_udp(address: str, port: int) -> socket.socket:
    """A UDP socket bound to ``address`` (not yet assigned is fine on Linux)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Listener:
    """Notifications on ``addresses`` at ``port``, to ``on_notice``, from a daemon thread."""

    def __init__(self, addresses: Iterable[str], port: int, on_notice: OnNotice) -> None:
        self.sockets = [bind_udp(address, port) for address in addresses]
        self.on_notice = on_notice
        self.stop_flag = threading.Event()
        self.received = 0  # datagrams read (for tests and logs)
        self.thread = threading.Thread(target=self._serve, name="syncd-notify", daemon=True)

    @property
    def bound(self) -> list[str]:
        return [f"{s.getsockname()[0]} port {s.getsockname()[1]}" for s in self.sockets]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=2 * POLL + 1)
        for sock in self.sockets:
            sock.close()

    def _serve(self) -> None:
        while not self.stop_flag.is_set():
            ready, _, _ = select.select(self.sockets, [], [], POLL)
            for sock in ready:
                for _ in range(256):  # bounded: the stop flag is looked at between batches
                    try:
                        data, peer = sock.recvfrom(MAX_DATAGRAM + 1)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    self.received += 1
                    notice = decode(data)
                    if notice is not None:
                        self.on_notice(notice, str(peer[0]))


def send(notice: Notice, targets: Iterable[tuple[str, int]]) -> tuple[int, list[str]]:
    """One datagram to each target; returns how many went out and why the
    others did not (an unreachable network, a bad address)."""
    sent, problems = 0, []
    payload = notice.encode()
    for address, port in targets:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, (address, port))
            sent += 1
        except (OSError, ValueError) as exc:
            problems.append(f"{address} port {port}: {getattr(exc, 'strerror', None) or exc}")
    return sent, problems
