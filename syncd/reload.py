"""Make tincd re-read its host files (TINC.md "Reload").

Methods (``tinc.reload`` in the node config):

* ``signal``: SIGHUP to the pid in ``tinc.pidfile`` (tincd's ``--pidfile``;
  Debian's unit uses ``/run/tinc.NET.pid``).  The pid is signalled only if
  ``/proc/PID`` is a running ``tincd``: a stale pidfile must never make
  syncd signal whatever process reused the number.  tinc 1.0 *exits* when
  its tinc.conf no longer parses at reload, so afterwards syncd checks that
  the process is still there and fails loudly if not.
* ``tinc``: ``tinc -c DIR reload`` (tinc 1.1's control program).
* ``systemd``: ``systemctl reload tinc@NET``.
* ``command``: an argv list of the operator's choosing.
* ``none``: do not reload (tincd picks the files up at its next restart).
* ``auto``: ``signal`` when the pidfile names a running tincd, else
  ``systemd`` when the ``tinc@NET`` unit is active, else ``tinc`` when tinc
  1.1's control program is installed, else ``none``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.config import TincConfig
from syncd.errors import ReloadError

ALIVE_CHECK_SECONDS = 1.0  # how long to watch tincd after SIGHUP
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Reloaded:
    method: str
    detail: str


def read_pid(pidfile: Path) -> int | None:
    """The pid in a tincd pidfile (1.0: ``PID``; 1.1: ``PID COOKIE HOST PORT``)."""
    try:
        first = pidfile.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() and int(first) > 1 else None


def process_name(pid: int) -> str | None:
    """The command name of a live (not zombie) process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses
    state = fields[fields.rfind(")") + 2 :].split(" ", 1)[0]
    if state in ("Z", "X"):
        return None
    return fields[fields.find("(") + 1 : fields.rfind(")")]


def is_tincd(pid: int) -> bool:
    name = process_name(pid)
    if name == "tincd":
        return True
    try:
        return Path(f"/proc/{pid}/exe").readlink().name == "tincd"
    except OSError:
        return False


def choose(tinc: TincConfig, net: str) -> str:
    if tinc.reload != "auto":
        return tinc.reload
    pid = read_pid(tinc.pidfile) if tinc.pidfile is not None else None
    if pid is not None and is_tincd(pid):
        return "signal"
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        active = subprocess.run(
            ["systemctl", "is-active", "--quiet", f"tinc@{net}"], check=False, timeout=COMMAND_TIMEOUT
        )
        if active.returncode == 0:
            return "systemd"
    if shutil.which("tinc"):
        return "tinc"
    return "none"


def reload_tinc(tinc: TincConfig, net: str) -> Reloaded:
    method = choose(tinc, net)
    if method == "signal":
        return _signal(tinc.pidfile)
    if method == "tinc":
        return _run("tinc", ["tinc", "-c", str(tinc.dir), "reload"])
    if method == "systemd":
        return _run("systemd", ["systemctl", "reload", f"tinc@{net}"])
    if method == "command":
        return _run("command", list(tinc.command))
    if tinc.reload == "none":
        return Reloaded("none", "tinc.reload: none")
    return Reloaded("none", "tinc.reload: auto found no running tincd")


def _signal(pidfile: Path | None) -> Reloaded:
    if pidfile is None:
        raise ReloadError("tinc.pidfile is not set")
    pid = read_pid(pidfile)
    if pid is None:
        raise ReloadError(f"{pidfile}: no pid to signal (is tincd running with --pidfile={pidfile}?)")
    if not is_tincd(pid):
        name = process_name(pid)
        raise ReloadError(
            f"{pidfile} names pid {pid}, which is {'not running' if name is None else repr(name)}, not tincd: "
            "not signalled"
        )
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + ALIVE_CHECK_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not is_tincd(pid):
            raise ReloadError(
                f"TINCD EXITED after SIGHUP (pid {pid}): tinc 1.0 exits when tinc.conf no longer parses; "
                "the VPN is down on this node: check tinc.conf and tincd's log, then restart tincd"
            )
    return Reloaded("signal", f"SIGHUP to tincd pid {pid}")


def _run(method: str, argv: list[str]) -> Reloaded:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReloadError(f"{' '.join(argv)}: {exc}") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ReloadError(f"{' '.join(argv)} exited {result.returncode}: {output[-1] if output else ''}")
    return Reloaded(method, " ".join(argv))
