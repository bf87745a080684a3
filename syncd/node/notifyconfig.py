"""The ``notify`` section of the node's config: notifications between
agents (README, "Push to every node in seconds")."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from syncd.errors import ConfigError


class Reader(Protocol):
    """What ``config._Reader`` offers: typed access naming the key in errors."""

    def error(self, key: str, message: str) -> ConfigError: ...

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any: ...

    def strings(self, key: str) -> tuple[str, ...]: ...

    def duration(self, key: str, default: float, maximum: float, minimum: float = 0.0) -> float: ...


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Notifications between agents (README, "Push to every node in seconds")."""

    listen: tuple[str, ...] | None = None  # None: this node's agent address, from its installed host file
    port: int = 6550  # UDP, on the VPN address(es)
    min_gap: float = 1.0  # seconds: at most one notified pass this often
    fanout: int = 5  # agents an agent tells of a new tip, in the commit's two trees; 0: none
    webhook: tuple[str, int] | None = None  # (address, port) of the forge push-webhook endpoint
    webhook_secret_file: Path | None = None  # the shared secret of X-Hub-Signature-256


def parse_notify(r: Reader, path_of: Callable[[str], Path]) -> NotifyConfig:
    listen_value = r.get("listen", (list, str), "auto")
    if listen_value == "auto":
        listen = None
    elif isinstance(listen_value, str):
        raise r.error("listen", f"{listen_value!r} must be auto or a list of addresses")
    else:
        listen = tuple(_ip(r, f"listen[{i}]", item) for i, item in enumerate(r.strings("listen")))
    port = r.get("port", int, 6550)
    if not 1 <= port <= 65535:
        raise r.error("port", f"{port} must be from 1 to 65535")
    min_gap = r.duration("min_gap", 1.0, maximum=86400, minimum=0.1)
    fanout = r.get("fanout", int, 5)
    if fanout != 0 and not 3 <= fanout <= 16:  # 1 or 2 would make chains, not trees
        raise r.error("fanout", f"{fanout} must be 0 (tell none) or from 3 to 16")
    webhook_text = r.get("webhook", str)
    webhook = None
    if webhook_text is not None:
        host, _, port_text = webhook_text.rpartition(":")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or not host:
            raise r.error("webhook", f"{webhook_text!r} must be ADDRESS:PORT (e.g. 10.0.0.1:8655 or [fd00::1]:8655)")
        webhook = (_ip(r, "webhook", host.removeprefix("[").removesuffix("]")), int(port_text))
    secret = r.get("webhook_secret_file", str)
    secret_file = path_of(secret) if secret else None
    if secret_file is not None and not secret_file.is_file():
        raise r.error("webhook_secret_file", f"{secret_file}: no such file")
    return NotifyConfig(listen, port, min_gap, fanout, webhook, secret_file)


def _ip(r: Reader, key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise r.error(key, f"{text!r} is not an IP address") from None
