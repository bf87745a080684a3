"""A node's tinc directory as ``syncd add-node`` writes it: ``tinc.conf``,
``tinc-up``/``tinc-down`` (the classic guide's files), and the writing of
every planned file at once.

Nothing there is ever replaced behind the operator's back: ``existing``
names each planned file that is already present, and add-node refuses
(unless ``--force``) before a key is generated.  ``write_all`` is all or
nothing: every file goes to a temporary file beside its target first; only
when all of them are written are they renamed into place, so a failure
(a full disk, no permission) leaves every existing file as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from syncd.tinc.subnet import Kind, Subnet

TEMP_PREFIX = ".syncd-add-node-"


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    data: bytes
    mode: int
    secret: bool = False


def existing(paths: Sequence[Path]) -> list[Path]:
    """Those of ``paths`` that are already there, in any form (a symlink
    too), each once."""
    return [path for path in dict.fromkeys(paths) if os.path.lexists(path)]


def write_all(files: Sequence[PlannedFile]) -> list[Path]:
    """Write ``files``: all of them, or (on any error) none, leaving every
    file that was there untouched and removing the directories it made."""
    made: list[Path] = []
    temps: list[tuple[Path, Path]] = []
    try:
        for planned in files:
            _make_parents(planned.path.parent, made)
            temp = planned.path.with_name(f"{TEMP_PREFIX}{planned.path.name}.{secrets.token_hex(4)}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, planned.mode)
            temps.append((temp, planned.path))
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), planned.mode)  # whatever the umask
                fh.write(planned.data)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    for temp, path in temps:
        temp.replace(path)  # a symlink at path is replaced, never followed
    return [path for _, path in temps]


def _make_parents(directory: Path, made: list[Path]) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        made.append(path)


def tinc_conf(name: str, peers: tuple[str, ...]) -> str:
    # StrictSubnets: the host files syncd installs, signed, decide who routes what
    lines = [f"Name = {name}", "AddressFamily = ipv4", "StrictSubnets = yes", *(f"ConnectTo = {p}" for p in peers)]
    return "\n".join(lines) + "\n"


def _family(subnet: Subnet) -> str:
    return "-6" if subnet.kind is Kind.IPV6 else "-4"


def tinc_up(subnet: Subnet, address: str, default_route: bool) -> str:
    family = _family(subnet)
    lines = [
        "#!/bin/sh",
        f'ip {family} link set "$INTERFACE" up mtu 1400',
        f'ip {family} addr add {shlex.quote(address)} dev "$INTERFACE"',
    ]
    if default_route:
        lines.append(f'ip {family} route add default dev "$INTERFACE"')
    return "\n".join(lines) + "\n"


def tinc_down(subnet: Subnet, address: str, default_route: bool) -> str:
    family = _family(subnet)
    lines = ["#!/bin/sh"]
    if default_route:
        lines.append(f'ip {family} route del default dev "$INTERFACE"')
    lines += [
        f'ip {family} addr del {shlex.quote(address)} dev "$INTERFACE"',
        f'ip {family} link set "$INTERFACE" down',
    ]
    return "\n".join(lines) + "\n"
