"""The four git servers of benchmarks/fleet.py, each a measured process tree
on loopback behind a byte-counting relay.

* git://: `git daemon`;
* ssh://: OpenSSH's `sshd` with a host key of its own and one authorized
  deploy key (``restrict``);
* smart HTTP: nginx passing every request to `git http-backend` through
  fcgiwrap (FastCGI over a Unix socket);
* dumb HTTP: nginx serving the bare repository's files as they are (after
  `git update-server-info`).

Each tree's root is benchmarks/fleet_reaper.py (a child subreaper: see its
docstring); nginx runs in the foreground with its own prefix and config in
the run's temp dir, on a free 127.0.0.1 port, its workers as www-data when
started as root.  Clients connect to a `Relay` in front of the server, which
counts the bytes of every connection in each direction.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sync_scale import free_port

TICK = os.sysconf("SC_CLK_TCK")
SIGCHLD_BIT = 1 << (signal.SIGCHLD - 1)  # in /proc/<pid>/status SigIgn
REAPER = Path(__file__).resolve().parent / "fleet_reaper.py"
PACKAGES = {
    "unshare": "util-linux",
    "git": "git",
    "ssh": "openssh-client",
    "sshd": "openssh-server",
    "nginx": "nginx",
    "fcgiwrap": "fcgiwrap",
}
# fcgiwrap ignores SIGCHLD (its CGI children are reaped by the kernel and their
# CPU time reaches no parent): the CGI it runs is CGI_WRAPPER, which leaves
# `git http-backend` to the tree's subreaper root.  No other process may.
IGNORES_SIGCHLD_OK = frozenset({"fcgiwrap"})
CGI_WRAPPER = """#!/bin/sh
# fcgiwrap reaps its CGI children without a trace (SIGCHLD ignored): start
# git http-backend in the background on this CGI's own pipes and exit, so it
# is re-parented to the server tree's subreaper, which accounts for its CPU.
exec 3<&0
git http-backend <&3 3<&- &
"""


class MissingError(Exception):
    """A program the benchmark needs is not installed."""


def require(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        package = PACKAGES.get(program, program)
        raise MissingError(f"{program} is not installed: apt-get install {package}")
    return found


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout:g} s")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def proc_table() -> dict[int, tuple[int, str, tuple[int, ...]]]:
    """pid -> (ppid, name, (utime, stime, cutime, cstime) in clock ticks) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue  # gone meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
            table[int(entry.name)] = (int(fields[1]), name, tuple(int(f) for f in fields[11:15]))
    return table


def tree(root: int, table: dict[int, tuple[int, str, tuple[int, ...]]]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, ()))
    return found


class Relay:
    """127.0.0.1:port -> the server's port; counts the bytes each way."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.sent = 0  # server -> client
        self.received = 0  # client -> server
        self.active = 0
        self.lock = threading.Lock()
        self.closing = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.active += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client, socket.create_connection(("127.0.0.1", self.upstream), timeout=10) as upstream:
                for s in (client, upstream):
                    s.settimeout(300)  # a stuck connection ends, and so does this thread
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                up = threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)
                up.start()
                self._pump(upstream, client, True)
                up.join(timeout=300)
        except OSError:
            pass
        finally:
            with self.lock:
                self.active -= 1

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while chunk := src.recv(1 << 16):
                dst.sendall(chunk)
                with self.lock:
                    if to_client:
                        self.sent += len(chunk)
                    else:
                        self.received += len(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def idle(self) -> bool:
        with self.lock:
            return self.active == 0

    def close(self) -> None:
        self.closing = True
        self.acceptor.join(timeout=5)
        self.listener.close()


@dataclass
class Server:
    """One transport's server tree, its relay and the URL clients use."""

    key: str
    label: str
    url: str
    root: subprocess.Popen[bytes]
    relay: Relay
    log: Path
    ssh_command: str | None = None
    baseline: frozenset[int] = frozenset()

    def settle(self, timeout: float = 20.0) -> Counters:
        """Wait until only the long-lived processes are left (every short-lived
        one reaped) and no connection is open; then read the tree's counters."""
        deadline = time.monotonic() + timeout
        while True:
            if self.root.poll() is not None:
                raise RuntimeError(f"{self.label}: the server tree ended ({self.log}):\n{self.tail()}")
            table = proc_table()
            pids = tree(self.root.pid, table)
            if pids <= self.baseline and self.relay.idle():
                return counters(pids, table)
            if time.monotonic() > deadline:
                extra = sorted(f"{p} {table[p][1]}" for p in pids - self.baseline if p in table)
                raise RuntimeError(f"{self.label}: still running after {timeout:g} s: {extra}")
            time.sleep(0.02)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def check_reaping(self) -> None:
        """Refuse a tree in which a process ignores SIGCHLD (its children's CPU
        would be lost), but for fcgiwrap, whose CGI leaves its children to the root."""
        for pid in self.baseline:
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                name = status.split("\n", 1)[0].split(":", 1)[1].strip()
                ignored = int(status.split("SigIgn:", 1)[1].split()[0], 16)
                if ignored & SIGCHLD_BIT and name not in IGNORES_SIGCHLD_OK:
                    raise RuntimeError(f"{self.label}: {name} (pid {pid}) ignores SIGCHLD: its children's CPU is lost")


# (pid, what) -> nanoseconds; "own" is exact, the others are whole clock ticks
Counters = dict[tuple[int, str], int]
TICK_NS = 1_000_000_000 // TICK


def own_ns(pid: int) -> int | None:
    """The process's own CPU time in ns: the sum of its threads' run time in
    /proc/<pid>/task/*/schedstat (the time utime+stime share, unrounded)."""
    try:
        return sum(int(Path(t, "schedstat").read_text().split()[0]) for t in os.scandir(f"/proc/{pid}/task"))
    except (OSError, ValueError, IndexError):
        return None


def counters(pids: set[int], table: dict[int, tuple[int, str, tuple[int, ...]]]) -> Counters:
    """Each process's own time (schedstat, or utime+stime in ticks without
    it) and its reaped children's (cutime, cstime: ticks)."""
    found: Counters = {}
    for pid in pids:
        utime, stime, cutime, cstime = table[pid][2]
        own = own_ns(pid)
        if own is None:
            found[(pid, "utime")], found[(pid, "stime")] = utime * TICK_NS, stime * TICK_NS
        else:
            found[(pid, "own")] = own
        found[(pid, "cutime")], found[(pid, "cstime")] = cutime * TICK_NS, cstime * TICK_NS
    return found


def cpu_between(before: Counters, after: Counters) -> tuple[float, float]:
    """CPU seconds between two readings, and the most that can be off: a
    counter in whole clock ticks that moved is off by under one tick."""
    moved = [(k, after.get(k, 0) - before.get(k, 0)) for k in before.keys() | after.keys()]
    ticks = sum(1 for (_, what), delta in moved if delta and what != "own")
    return sum(delta for _, delta in moved) / 1e9, ticks / TICK


def _stop(server: Server) -> None:
    server.relay.close()
    if server.root.poll() is None:
        server.root.terminate()
        try:
            server.root.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in sorted(tree(server.root.pid, proc_table()), reverse=True):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.root.wait(timeout=10)


@contextlib.contextmanager
def serve(
    key: str, label: str, commands: list[list[str]], port: int, workdir: Path, url: str, sock: Path | None = None
) -> Iterator[Server]:
    """Start ``commands`` under one reaper root; wait until ``port`` accepts
    (and ``sock`` exists) and the tree is steady; yield the Server with
    ``url`` (``{port}`` is the relay's); stop it all by pid."""
    log = workdir / "server.log"
    with open(log, "ab") as out:
        root = subprocess.Popen(
            [sys.executable, str(REAPER), json.dumps(commands)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    relay = Relay(port)
    server = Server(key, label, "", root, relay, log)
    try:
        up = lambda: root.poll() is not None or (accepts(port) and (sock is None or sock.exists()))  # noqa: E731
        wait_until(up, f"{label}: nothing listens on {port}")
        seen: set[int] = set()
        for _ in range(50):  # steady: the same processes twice, 0.2 s apart (nginx forks its workers)
            pids = tree(root.pid, proc_table())
            if pids == seen and root.poll() is None:
                break
            seen = pids
            time.sleep(0.2)
        if root.poll() is not None:
            raise RuntimeError(f"{label} did not start:\n{server.tail()}")
        server.baseline = frozenset(seen)
        server.url = url.format(port=relay.port)
        server.check_reaping()
        yield server
    finally:
        _stop(server)


def nginx_config(prefix: Path, port: int, location: str) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    user = "user www-data www-data;\n" if os.geteuid() == 0 else ""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = "".join(f"    {kind}_temp_path {prefix / kind};\n" for kind in kinds)
    config = prefix / "nginx.conf"
    config.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\nevents {{ worker_connections 512; }}\n"
        "http {\n"
        "    log_format fleet '$bytes_sent $status $request_method $uri';\n"
        f"    access_log {prefix / 'access.log'} fleet;\n{temps}"
        f"    server {{\n        listen 127.0.0.1:{port};\n{location}    }}\n"
        "}\n"
    )
    return config


def nginx_sent(prefix: Path) -> int:
    """Bytes nginx logged as sent ($bytes_sent: status line, headers and body)."""
    with contextlib.suppress(FileNotFoundError):
        return sum(int(line.split()[0]) for line in (prefix / "access.log").read_text().splitlines())
    return 0


def nginx_argv(config: Path) -> list[str]:
    return [require("nginx"), "-p", str(config.parent), "-e", str(config.parent / "error.log"), "-c", str(config)]


def git_daemon(work: Path, srv: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [require("git"), "daemon", "--reuseaddr", "--export-all", f"--base-path={srv}", "--listen=127.0.0.1"]
    argv += [f"--port={port}", str(srv)]
    return serve("git", "git:// (git daemon)", [argv], port, work, "git://127.0.0.1:{port}/hosts.git")


def dumb_http(work: Path, srv: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    config = nginx_config(work / "nginx", port, f"        root {srv};\n")
    url = "http://127.0.0.1:{port}/hosts.git"
    return serve("dumb", "dumb HTTP (static nginx)", [nginx_argv(config)], port, work, url)


def smart_http(work: Path, srv: Path, workers: int) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    sock = work / "fcgiwrap.sock"
    wrapper = work / "git-http-backend.cgi"
    wrapper.write_text(CGI_WRAPPER)
    wrapper.chmod(0o755)
    params = {
        "SCRIPT_FILENAME": str(wrapper),
        "GIT_PROJECT_ROOT": str(srv),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PATH_INFO": "$uri",
        "QUERY_STRING": "$query_string",
        "REQUEST_METHOD": "$request_method",
        "CONTENT_TYPE": "$content_type",
        "CONTENT_LENGTH": "$content_length",
        "REMOTE_ADDR": "$remote_addr",
        "SERVER_PROTOCOL": "$server_protocol",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    location = "        client_max_body_size 0;\n        location / {\n"
    location += "".join(f'            fastcgi_param {k} "{v}";\n' for k, v in params.items())
    location += f"            fastcgi_pass unix:{sock};\n        }}\n"
    config = nginx_config(work / "nginx", port, location)
    # fcgiwrap's socket must be writable by nginx's workers (www-data)
    fcgiwrap = ["sh", "-c", f'umask 0; exec "$0" -c {workers} -s unix:{sock}', require("fcgiwrap")]
    url = "http://127.0.0.1:{port}/hosts.git"
    return serve("http", "smart HTTP (nginx + fcgiwrap)", [fcgiwrap, nginx_argv(config)], port, work, url, sock)


def sshd(work: Path, srv: Path) -> contextlib.AbstractContextManager[Server]:
    """sshd on loopback with its own host key; the deploy key is work/deploy."""
    program = require("sshd")
    require("ssh")
    if os.geteuid() != 0:
        raise MissingError("sshd needs root (privilege separation): run as root, or leave ssh out of --transports")
    keys = []
    for name in ("host_key", "deploy"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(work / name)], check=True)
        keys.append((work / f"{name}.pub").read_text().split()[:2])
    authorized = work / "authorized_keys"
    authorized.write_text(f"restrict {' '.join(keys[1])} deploy\n")
    authorized.chmod(0o600)
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel ERROR\n"
        f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
    argv = [program, "-D", "-e", "-f", str(config)]
    # sshd runs each command with the account's shell, and bash reads
    # ~/.bashrc when sshd starts it: root's may run anything this machine's
    # admin put there (a pyenv set-up costs 100 ms a connection).  A git
    # server's account runs none of it: sshd gets a mount namespace of its
    # own in which root's ~/.bashrc reads as empty.
    bashrc = Path("/root/.bashrc")
    if bashrc.exists():
        hide = f'mount --bind /dev/null {bashrc} && exec "$0" "$@"'
        argv = [require("unshare"), "--mount", "--propagation", "private", "sh", "-c", hide, *argv]
    return _ssh_server(work, argv, port, "root@127.0.0.1", srv, keys[0])


@contextlib.contextmanager
def _ssh_server(work: Path, argv: list[str], port: int, login: str, srv: Path, host: list[str]) -> Iterator[Server]:
    url = f"ssh://{login}:{{port}}{srv / 'hosts.git'}"
    with serve("ssh", "ssh:// (sshd)", [argv], port, work, url) as server:
        known = work / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.relay.port} {' '.join(host)}\n")
        server.ssh_command = (
            f"ssh -F /dev/null -i {work / 'deploy'} -o IdentitiesOnly=yes -o UserKnownHostsFile={known} "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes"
        )
        yield server
