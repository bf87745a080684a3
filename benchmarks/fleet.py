"""A fleet of syncd nodes polling one git server, per transport, next to `git fetch`.

One signed repository of --hosts host files (benchmarks/sync_scale.py's
generator) is served at once, on 127.0.0.1 only, by `git daemon` (git://),
sshd (ssh://, a deploy key), nginx + fcgiwrap + `git http-backend` (smart
HTTP) and a static nginx (dumb HTTP, the bare repository after `git
update-server-info`): see benchmarks/fleet_servers.py.  --nodes node states
(each its own config per transport, state_dir and tinc dir; node i is named
node<i>) and as many `git clone --mirror` copies (the yardstick) then poll:

1. first sync: node i syncs once over transport i mod T (so each transport
   serves nodes/T first syncs); mirror i is cloned the same way;
2. per transport, in turn: --polls no-op polls by every node (`syncd sync`,
   a fresh process, as syncd@.timer runs it) and by every mirror (`git
   fetch`); then one signed commit changing one host file, picked up by
   every node (checked: the file carries the change) and every mirror
   (checked: its branch is the new tip).  Before each change the server's
   repository is repacked into one pack (no bitmap), so each transport's
   change meets the same layout: one pack, and the new commit's objects loose.

--jobs clients run at a time.  Printed per transport and client, per poll:

* server CPU: the whole server process tree's utime+stime+cutime+cstime
  from /proc/<pid>/stat (clock ticks), read before and after each phase.
  Short-lived processes (git daemon's and sshd's per-connection children,
  git-upload-pack, pack-objects, git http-backend) are counted once their
  parent has reaped them, in the parent's cutime/cstime, so the tree is read
  only when it is back to the processes it started with (every one of the
  others gone, none a zombie) and no connection is open.  The tree's root is
  a child subreaper (benchmarks/fleet_reaper.py): a process orphaned on the
  way is re-parented to it and reaped there, not by init.  A process that
  ignores SIGCHLD has its children reaped by the kernel without their CPU
  time reaching it: the benchmark refuses such a tree, except for fcgiwrap,
  which does that, and whose CGI is therefore a wrapper that starts `git
  http-backend` in the background on the CGI's own pipes and exits: `git
  http-backend` (with the git-upload-pack it waits for) is re-parented to
  the root and counted there.  The wrapper's own `sh` (about a millisecond)
  is not counted: a real server runs no such wrapper.  Resolution: one clock
  tick per process per reading, spread over the phase's polls;
* nodes per server core at a 300 s interval: 300 s / server CPU per no-op poll;
* client CPU and wall: os.wait4 of each client process (its user + system
  time with that of the children it waited for: syncd's fetch child, ssh,
  git's helpers); wall from start to reaping, --jobs clients at a time;
* bytes: TCP payload bytes the server sent to the client (HTTP headers,
  pack, the ssh session's encrypted stream), counted by a relay in front of
  every server; for the two nginx servers they are checked against nginx's
  own $bytes_sent log;
* failures: a client that exits non-zero, times out, or did not end where
  it should.  Any failure makes the exit status 1 (2: a program is missing).

    python benchmarks/fleet.py [--nodes 200] [--hosts 1000] [--polls 1]
                               [--transports git,ssh,http,dumb] [--jobs 2]

Needs root for sshd (or leave ssh out), git, openssh-server, nginx and
fcgiwrap (a missing one: exit 2, naming the Debian package).  A default run
uses about 22 CPU-minutes, nearly all of it in the 1,800 fresh `syncd sync`
processes (17 minutes on a busy 2-core machine), and about 1 GB under
$TMPDIR, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fleet_servers import (
    TICK,
    MissingError,
    Server,
    cpu_between,
    dumb_http,
    git_daemon,
    nginx_sent,
    require,
    smart_http,
    sshd,
)
from sync_scale import GIT_ENV, commit_signed, make_network, node_config, run

TRANSPORTS = ("git", "ssh", "http", "dumb")
PROGRAMS = {"git": ["git"], "ssh": ["sshd", "ssh", "unshare"], "http": ["nginx", "fcgiwrap"], "dumb": ["nginx"]}
POLL_TIMEOUT = 120.0  # seconds for one client process (syncd's own repo.timeout is 60)
CLIENT_ENV = {k: v for k, v in GIT_ENV.items() if not k.lower().endswith("_proxy")}  # loopback only
Check = Callable[[int, str], "str | None"]


@dataclass
class Poll:
    argv: list[str]
    check: Check  # (exit code, output) -> what went wrong, or None
    env: dict[str, str] = field(default_factory=lambda: CLIENT_ENV)


@dataclass
class Tally:
    polls: int = 0
    failures: int = 0
    client_cpu: float = 0.0
    wall: float = 0.0
    server_cpu: float = 0.0
    server_error: float = 0.0  # at most this far off: clock ticks
    sent: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    work: Path  # the admins' clone
    key: Path  # their signing key
    srv: Path  # the bare repository every server serves
    signers: Path
    hosts: int
    nodes: list[Path]
    mirrors: list[Path]
    tallies: dict[tuple[str, str, str], Tally] = field(default_factory=dict)  # (phase, transport, client)

    @property
    def changed(self) -> str:
        return f"node{self.hosts - 1}"


def run_poll(poll: Poll) -> tuple[float, float, str | None]:
    """One client process: (CPU seconds, wall seconds, what went wrong or None)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        poll.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=poll.env,
        start_new_session=True,
    )  # fmt: skip
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(POLL_TIMEOUT, expire)
    timer.start()
    assert proc.stdout is not None
    try:
        out = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        proc.stdout.close()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    problem = f"timed out after {POLL_TIMEOUT:g} s" if expired.is_set() else poll.check(code, out)
    if problem:
        problem = f"{' '.join(poll.argv[-3:])}: {problem}: {out.strip()[-300:]}"
    return usage.ru_utime + usage.ru_stime, wall, problem


def phase(fleet: Fleet, name: tuple[str, str, str], server: Server, polls: list[Poll], jobs: int) -> None:
    """Run ``polls``, ``jobs`` at a time, and tally them with the server's CPU and bytes."""
    started = time.perf_counter()
    cpu, sent = server.settle(), server.relay.sent
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run_poll, polls))
    server_cpu, server_error = cpu_between(cpu, server.settle())
    tally = Tally(len(polls), server_cpu=server_cpu, server_error=server_error, sent=server.relay.sent - sent)
    for client_cpu, wall, problem in results:
        tally.client_cpu += client_cpu
        tally.wall += wall
        if problem:
            tally.failures += 1
            tally.errors.append(problem)
    fleet.tallies[name] = tally
    failed = f", {tally.failures} FAILED: {tally.errors[0]}" if tally.failures else ""
    print(f"  {' / '.join(name)}: {len(polls)} polls in {time.perf_counter() - started:.1f} s{failed}", file=sys.stderr)


def exits_zero(code: int, out: str) -> str | None:
    return None if code == 0 else f"exit {code}"


def synced(node: Path, hosts: int) -> Check:
    def check(code: int, out: str) -> str | None:
        files = sum(1 for _ in (node / "tinc" / "hosts").iterdir()) if code == 0 else 0
        return exits_zero(code, out) or (None if files == hosts else f"{files} host files, not {hosts}")

    return check


def has_change(node: Path, name: str, marker: str) -> Check:
    def check(code: int, out: str) -> str | None:
        if code != 0:
            return f"exit {code}"
        return None if marker in (node / "tinc" / "hosts" / name).read_text() else f"hosts/{name} lacks the change"

    return check


def mirror_tip(mirror: Path) -> str:
    loose = mirror / "refs" / "heads" / "main"
    if loose.exists():
        return loose.read_text().strip()
    for line in (mirror / "packed-refs").read_text().splitlines():
        if line.endswith(" refs/heads/main"):
            return line.split()[0]
    return ""


def at_tip(mirror: Path, tip: str) -> Check:
    def check(code: int, out: str) -> str | None:
        return exits_zero(code, out) or (None if mirror_tip(mirror) == tip else "the mirror's main is not the new tip")

    return check


def syncd(node: Path, server: Server) -> list[str]:
    return [sys.executable, "-m", "syncd", "sync", "-c", str(node / f"{server.key}.yaml")]


def git_env(server: Server) -> dict[str, str]:
    return {**CLIENT_ENV, "GIT_SSH_COMMAND": server.ssh_command} if server.ssh_command else CLIENT_ENV


def fetch(mirror: Path, server: Server) -> list[str]:
    return ["git", "-C", str(mirror), "fetch", "-q", server.url, "+refs/heads/*:refs/heads/*"]


def first_sync(fleet: Fleet, servers: list[Server], jobs: int) -> None:
    """Node and mirror i sync once, over transport i mod T."""
    for k, server in enumerate(servers):
        nodes = fleet.nodes[k :: len(servers)]
        polls = [Poll(syncd(node, server), synced(node, fleet.hosts)) for node in nodes]
        phase(fleet, ("first sync", server.key, "syncd sync"), server, polls, jobs)
        mirrors = fleet.mirrors[k :: len(servers)]
        argv = ["git", "clone", "-q", "--mirror", server.url]
        clones = [Poll([*argv, str(m)], exits_zero, git_env(server)) for m in mirrors]
        phase(fleet, ("first sync", server.key, "git fetch"), server, clones, jobs)


def signed_change(fleet: Fleet, number: int) -> tuple[str, str]:
    """Commit one signed change to one host file; (the line added, the new tip).

    The server's repository is first packed into one pack, so that every
    transport's change lands on the same layout: one pack, and the new
    commit's objects loose (a push of a few objects is unpacked).  Without a
    bitmap index, which `git gc` writes in a bare repository: with one,
    upload-pack sends the changed 1,000-entry tree whole (24 KB), not as a
    delta against the tree the client has (1 KB)."""
    run("git", "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q", cwd=fleet.srv)
    marker = f"# fleet change {number}"
    with (fleet.work / "hosts" / fleet.changed).open("a") as fh:
        fh.write(marker + "\n")
    commit_signed(fleet.work, fleet.key, f"change {number}")
    run("git", "update-server-info", cwd=fleet.srv)  # what a static mirror's post-update hook does
    tip = subprocess.run(["git", "rev-parse", "HEAD"], cwd=fleet.work, env=GIT_ENV, capture_output=True, text=True)
    return marker, tip.stdout.strip()


def polls_over(fleet: Fleet, server: Server, number: int, rounds: int, jobs: int) -> None:
    """Every node and mirror: ``rounds`` no-op polls, then one signed change."""
    key, nodes, mirrors = server.key, fleet.nodes, fleet.mirrors
    noop = [Poll(syncd(node, server), exits_zero) for _ in range(rounds) for node in nodes]
    phase(fleet, ("no-op", key, "syncd sync"), server, noop, jobs)
    noop = [Poll(fetch(m, server), exits_zero, git_env(server)) for _ in range(rounds) for m in mirrors]
    phase(fleet, ("no-op", key, "git fetch"), server, noop, jobs)
    marker, tip = signed_change(fleet, number)
    change = [Poll(syncd(node, server), has_change(node, fleet.changed, marker)) for node in nodes]
    phase(fleet, ("change", key, "syncd sync"), server, change, jobs)
    change = [Poll(fetch(m, server), at_tip(m, tip), git_env(server)) for m in mirrors]
    phase(fleet, ("change", key, "git fetch"), server, change, jobs)


def start(key: str, work: Path, srv: Path, jobs: int) -> contextlib.AbstractContextManager[Server]:
    work.mkdir(parents=True)
    if key == "git":
        return git_daemon(work, srv)
    if key == "ssh":
        return sshd(work, srv)
    if key == "http":
        return smart_http(work, srv, jobs)
    return dumb_http(work, srv)


def ms(seconds: float, polls: int, digits: int = 1) -> str:
    return f"{seconds / polls * 1000:.{digits}f}" if polls else ""


def table(fleet: Fleet, servers: list[Server], name: str, columns: list[str]) -> list[str]:
    """One phase's rows, by transport, syncd beside git."""
    lines = ["| transport | client | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for server in servers:
        git = fleet.tallies.get((name, server.key, "git fetch"))
        for client in ("syncd sync", "git fetch"):
            t = fleet.tallies.get((name, server.key, client))
            if t is None or git is None:
                continue
            cells = {
                "polls": str(t.polls),
                "failures": str(t.failures),
                "server CPU/poll (ms)": f"{ms(t.server_cpu, t.polls, 2)} ±{ms(t.server_error, t.polls, 2)}",
                "nodes per server core at 300 s": f"{300 * t.polls / t.server_cpu:,.0f}" if t.server_cpu else "n/a",
                "client CPU/poll (ms)": ms(t.client_cpu, t.polls, 0),
                "client wall/poll (ms)": ms(t.wall, t.polls, 0),
                "bytes/poll (server→client)": f"{t.sent / t.polls:,.0f}" if t.polls else "",
                "bytes / git's": f"{t.sent * git.polls / git.sent / t.polls:.1f}x" if git.sent else "",
            }
            label = server.label if client == "syncd sync" else ""
            shown = "git clone --mirror" if (name, client) == ("first sync", "git fetch") else client
            lines.append(f"| {label} | {shown} | " + " | ".join(cells[c] for c in columns) + " |")
    return lines


COMMON = ["polls", "failures", "server CPU/poll (ms)"]
CLIENT = ["client CPU/poll (ms)", "client wall/poll (ms)", "bytes/poll (server→client)", "bytes / git's"]


def report(fleet: Fleet, servers: list[Server], args: argparse.Namespace) -> list[str]:
    nodes, cores = len(fleet.nodes), os.cpu_count()
    return [
        f"{nodes} syncd nodes and {nodes} git mirrors polling a {args.hosts}-node signed repository over loopback; "
        f"{args.jobs} clients at a time on {cores} cores",
        "",
        f"No-op poll ({args.polls} per node and mirror per transport):",
        "",
        *table(fleet, servers, "no-op", [*COMMON, "nodes per server core at 300 s", *CLIENT[:-1]]),
        "",
        "One signed commit changing one host file, picked up by every node and mirror:",
        "",
        *table(fleet, servers, "change", [*COMMON, *CLIENT]),
        "",
        f"First sync (node and mirror i over transport i mod {len(servers)}; {2 * args.jobs} at a time):",
        "",
        *table(fleet, servers, "first sync", [*COMMON, *CLIENT]),
        "",
        "server CPU: the server's whole process tree, from /proc: each process's own time (schedstat, ns) and its "
        f"reaped children's (cutime+cstime, whole ticks of 1/{TICK} s: ± is a tick for each that moved); client: "
        "os.wait4 of each client process with the children it waited for; bytes: TCP payload the server sent, "
        "counted by a relay; nodes per core: 300 s / server CPU per no-op poll",
    ]


def check_nginx_bytes(servers: list[Server], root: Path) -> list[str]:
    """The relay's count against nginx's $bytes_sent for the whole run."""
    problems = []
    for server in servers:
        if server.key in ("http", "dumb"):
            logged = nginx_sent(root / server.key / "nginx")
            if logged != server.relay.sent:
                problems.append(f"{server.label}: the relay counted {server.relay.sent} bytes, nginx {logged}")
    return problems


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200, help="node states, and as many git mirrors (default 200)")
    parser.add_argument("--hosts", type=int, default=1000, help="host files in the repository (default 1000)")
    parser.add_argument("--polls", type=int, default=1, help="no-op polls per node and transport (default 1)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="of git,ssh,http,dumb (default: all)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="clients at a time")
    parser.add_argument("--push-agents", type=int, default=50, help="agents of the push row (default 50; 0: none)")
    parser.add_argument("--push-only", action="store_true", help="only the push row (benchmarks/fleet_push.py)")
    args = parser.parse_args()
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = sorted(set(args.transports) - set(TRANSPORTS))
    if unknown or not args.transports or min(args.nodes, args.hosts, args.polls, args.jobs) < 1:
        parser.error(f"--transports takes some of {','.join(TRANSPORTS)}; the numbers must be >= 1")
    return args


def bench(tmp: Path, args: argparse.Namespace) -> tuple[Fleet, list[Server], list[str]]:
    t0 = time.perf_counter()
    work, key, srv = make_network(tmp, args.hosts)
    run("git", "update-server-info", cwd=srv)
    nodes = [tmp / "nodes" / f"n{i}" for i in range(args.nodes)]
    mirrors = [tmp / "mirrors" / f"m{i}" for i in range(args.nodes)]
    fleet = Fleet(work, key, srv, tmp / "allowed_signers", args.hosts, nodes, mirrors)
    print(f"made a {args.hosts}-node signed repository in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(start(t, tmp / "servers" / t, srv.parent, args.jobs)) for t in args.transports]
        for i, node in enumerate(nodes):
            (node / "tinc").mkdir(parents=True)
            for server in servers:
                text = node_config(node, server.url, fleet.signers, f"node{i % args.hosts}", server.ssh_command)
                (node / f"{server.key}.yaml").write_text(text)
        (tmp / "mirrors").mkdir()
        first_sync(fleet, servers, 2 * args.jobs)  # a setup step, much of it fsync: more at a time
        for number, server in enumerate(servers, 1):
            polls_over(fleet, server, number, args.polls, args.jobs)
        for server in servers:
            server.settle()  # every connection closed before the relays' and nginx's counts are compared
        return fleet, servers, check_nginx_bytes(servers, tmp / "servers")


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    if args.push_only:
        return push(args)
    try:
        for program in ["git", "ssh-keygen", *(p for t in args.transports for p in PROGRAMS[t])]:
            require(program)  # before anything is made
        with tempfile.TemporaryDirectory(prefix="syncd-fleet-") as tmp_name:
            tmp = Path(tmp_name)
            tmp.chmod(0o755)  # nginx's workers (www-data) read the repository
            fleet, servers, problems = bench(tmp, args)
    except MissingError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    print("\n".join(["", *report(fleet, servers, args)]))
    harness = resource.getrusage(resource.RUSAGE_SELF)
    clients = sum(t.client_cpu for t in fleet.tallies.values())
    print(f"\n{time.perf_counter() - started:.0f} s in all; CPU: clients {clients:.0f} s, servers "
          f"{sum(t.server_cpu for t in fleet.tallies.values()):.0f} s, this process (relays, /proc reads) "
          f"{harness.ru_utime + harness.ru_stime:.0f} s", file=sys.stderr)  # fmt: skip
    failures = sum(t.failures for t in fleet.tallies.values())
    for problem in problems + [e for t in fleet.tallies.values() for e in t.errors[:3]]:
        print(f"fleet: {problem}", file=sys.stderr)
    if failures or problems:
        print(f"fleet: {failures} failed polls, {len(problems)} byte count mismatches", file=sys.stderr)
        return 1
    return push(args)


def push(args: argparse.Namespace) -> int:
    """The push row: one push, notified, to --push-agents agents (benchmarks/fleet_push.py)."""
    if args.push_agents < 1:
        return 0
    from fleet_push import push_row

    with tempfile.TemporaryDirectory(prefix="syncd-push-") as tmp_name:
        lines, missed = push_row(args.push_agents, Path(tmp_name))
    print("\n".join(["", "One signed push, and a notification to one agent:", "", *lines]))
    for problem in missed:
        print(f"fleet: {problem}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
