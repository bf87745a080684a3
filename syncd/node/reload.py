"""Make tincd re-read its host files (docs/host-files.md, "Reload").

Methods (``tinc.reload`` in the node config):

* ``signal``: SIGHUP to the pid in ``tinc.pidfile`` (tincd's ``--pidfile``;
  Debian's unit uses ``/run/tinc.NET.pid``).  The pid is signalled only if
  ``/proc/PID`` is a running ``tincd``: a stale pidfile must never make
  syncd signal whatever process reused the number.  tinc 1.0 *exits* when
  its tinc.conf no longer parses at reload, so afterwards syncd checks that
  the process is still there and fails loudly if not.

  tincd not running (no pidfile, an empty one, a pid that is gone or is
  some other program) is not a failure: the files are installed and tincd
  reads them all when it starts, which is how a node's first boot goes
  (files first, then tincd).  The result is ``none`` with a warning.
* ``tinc``: ``tinc -c DIR --pidfile=PIDFILE reload`` (tinc 1.1's control
  program, the first ``tinc`` on ``PATH``; ``tinc.pidfile`` tells it where
  the running tincd's pidfile, and so its control socket, is).  A tinc 1.1
  elsewhere: ``command``, e.g. ``[/opt/tinc/sbin/tinc, -n, NET, reload]``.
* ``systemd``: ``systemctl reload tinc@NET``.
* ``command``: an argv list of the operator's choosing.
* ``none``: do not reload (tincd picks the files up at its next restart).
* ``auto``: ``signal`` when the pidfile names a running tincd, else
  ``systemd`` when the ``tinc@NET`` unit is active, else ``tinc`` when tinc
  1.1's control program is installed, else ``none``.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.errors import ReloadError
from syncd.node.config import TincConfig

ALIVE_CHECK_SECONDS = 1.0  # how long to watch tincd after SIGHUP
COMMAND_TIMEOUT = 30.0
MAX_PIDFILE_BYTES = 256  # "PID COOKIE HOST PORT" at most (tinc 1.1)


NOT_RUNNING = "tincd is not running; it reads the host files when it starts"


@dataclass(frozen=True, slots=True)
class Reloaded:
    method: str  # the method used, or "none" when nothing was reloaded
    detail: str
    warning: str | None = None  # for the operator: a reload that was due did not happen


def read_pid(pidfile: Path, text: str | None = None) -> int | None:
    """The pid in a tincd pidfile (1.0: ``PID``; 1.1: ``PID COOKIE HOST PORT``),
    from ``text`` when the caller has read it already."""
    try:
        first = (read_pidfile(pidfile) if text is None else text).split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    # never 0 or 1: kill(0) signals our own process group, pid 1 is init
    return int(first) if first.isascii() and first.isdigit() and int(first) > 1 else None


def read_pidfile(pidfile: Path) -> str:
    """The pidfile's text.  Opened without blocking and read only if it is a
    regular file: a FIFO in its place must not hang a sync."""
    fd = os.open(pidfile, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(pidfile))
        return os.read(fd, MAX_PIDFILE_BYTES).decode("ascii")
    finally:
        os.close(fd)


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
        return _control(tinc)
    if method == "systemd":
        return _run("systemd", ["systemctl", "reload", f"tinc@{net}"])
    if method == "command":
        return _run("command", list(tinc.command))
    if tinc.reload == "none":
        return Reloaded("none", "tinc.reload: none")
    looked = f"{tinc.pidfile}, " if tinc.pidfile is not None else ""
    return Reloaded(
        "none",
        "tinc.reload: auto found no running tincd",
        f"{NOT_RUNNING} (tinc.reload auto looked at {looked}the tinc@{net} unit and tinc's control program)",
    )


def _signal(pidfile: Path | None) -> Reloaded:
    if pidfile is None:
        raise ReloadError("tinc.pidfile is not set")
    pid = running_tincd(pidfile)
    if isinstance(pid, str):
        return Reloaded("none", pid, f"{NOT_RUNNING} ({pid})")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:  # it exited between the check and the signal
        return Reloaded("none", f"tincd pid {pid} exited", f"{NOT_RUNNING} (pid {pid} from {pidfile} exited)")
    except OSError as exc:
        raise ReloadError(f"SIGHUP to tincd pid {pid} (from {pidfile}): {exc.strerror}") from None
    deadline = time.monotonic() + ALIVE_CHECK_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not is_tincd(pid):
            raise ReloadError(
                f"TINCD EXITED after SIGHUP (pid {pid}): tinc 1.0 exits when tinc.conf no longer parses; "
                "the VPN is down on this node: check tinc.conf and tincd's log, then restart tincd"
            )
    return Reloaded("signal", f"SIGHUP to tincd pid {pid}")


def _control(tinc: TincConfig) -> Reloaded:
    """``tinc reload``, when the pidfile names a running tincd (tinc 1.1's
    control program fails otherwise; tincd reads the files when it starts)."""
    pidfile = []
    if tinc.pidfile is not None:
        pid = running_tincd(tinc.pidfile)
        if isinstance(pid, str):
            return Reloaded("none", pid, f"{NOT_RUNNING} ({pid})")
        pidfile = [f"--pidfile={tinc.pidfile}"]
    return _run("tinc", ["tinc", "-c", str(tinc.dir), *pidfile, "reload"])


def running_tincd(pidfile: Path) -> int | str:
    """The pid of the tincd that ``pidfile`` names, or why there is none to
    signal.  A pidfile that cannot be read or holds something other than a
    pid is an error: tincd never writes one like that."""
    try:
        text = read_pidfile(pidfile)
    except FileNotFoundError:
        return f"no {pidfile}"
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ReloadError(f"{pidfile}: cannot read tincd's pidfile: {why}") from None
    if not text.strip():
        return f"{pidfile} is empty"  # tincd is starting, or died before writing it
    pid = read_pid(pidfile, text)
    if pid is None:
        raise ReloadError(f"{pidfile}: {text.strip()[:40]!r} is not a tincd pidfile (PID, or PID COOKIE HOST PORT)")
    if is_tincd(pid):
        return pid
    name = process_name(pid)
    if name is None:
        return f"{pidfile} names pid {pid}, which is not running"
    return f"{pidfile} names pid {pid}, which is {name!r}, not tincd: a stale pidfile, not signalled"


def _run(method: str, argv: list[str]) -> Reloaded:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReloadError(f"{' '.join(argv)}: {exc}") from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ReloadError(f"{' '.join(argv)} exited {result.returncode}: {output[-1] if output else ''}")
    return Reloaded(method, " ".join(argv))
