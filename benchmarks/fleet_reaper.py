"""The root of one measured server tree (benchmarks/fleet.py).

    python fleet_reaper.py '[["git", "daemon", ...], ["nginx", ...]]'

Starts each command as its child, marks itself a child subreaper
(prctl(PR_SET_CHILD_SUBREAPER)) and reaps every child until none is left.
A process of the tree whose parent exits before it (a CGI program that
fcgiwrap, which ignores SIGCHLD, would otherwise reap without a trace) is
re-parented here instead of to init, and its CPU time, with that of
everything it waited for, lands in this process's cutime/cstime, where
/proc/<pid>/stat shows it.  SIGTERM is passed on to every child; whatever is
still alive 3 s later is killed.  A command that exits by itself stops the
others: the tree is then broken and the benchmark says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

PR_SET_CHILD_SUBREAPER = 36
KILL_AFTER = 3  # seconds from SIGTERM to SIGKILL for the children still alive


def children() -> list[int]:
    """The pids whose parent is this process (started or adopted)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2 :].split()[1] == me:
                found.append(int(entry.name))
    return found


def signal_children(signum: int) -> None:
    for pid in children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def main() -> int:
    commands: list[list[str]] = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"fleet_reaper: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        signal_children(signal.SIGTERM)
        signal.alarm(KILL_AFTER)

    def kill(signum: int, frame: FrameType | None) -> None:
        signal_children(signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, kill)
    started = {os.posix_spawnp(argv[0], argv, os.environ) for argv in commands}
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid in started:
            started.discard(pid)
            stop(signal.SIGTERM, None)  # one server gone: the tree is broken, end the rest


if __name__ == "__main__":
    sys.exit(main())
