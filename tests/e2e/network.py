"""The "IPv6 everywhere with tinc" network, for real, in namespaces.

    inet (198.51.100.0/24)                  home LAN (192.168.1.0/24)
    ┌──────────┐   ┌────────┐  NAT   ┌────────┬──────────┐
    │ gateway  │───┤ router ├────────┤ my_pc  │ my_laptop│
    │ .1       │   │ .2     │ .1     │ .2     │ .3       │
    └──────────┘   └────────┘        └────────┴──────────┘
    (newbie .3 joins later, on the internet side)

* ``gateway`` has the public address, the network's /48 (2002:102:304::/48)
  and announces its own /64 and ``::/0``; it serves the hosts repository
  with ``git daemon``.
* ``my_pc`` and ``my_laptop`` sit behind a masquerading router and connect
  only to the gateway; ``LocalDiscovery = yes`` lets them find each other on
  the home LAN (the router does no hairpin NAT, so without it their traffic
  would go through the gateway).
* Every node runs real ``tincd`` (``StrictSubnets = yes``) and gets its
  host files only through the ``syncd`` command line tool: Debian's 1.0 by
  default; a ``Flavour`` puts chosen nodes on tinc 1.1 (tests/tinc11.py),
  with Ed25519 keys beside RSA or alone, reloaded with ``tinc reload``.
* Trust lives in the repository: my_pc and my_laptop own their host files
  (an owner line with each node's own SSH key), ``join: open`` lets a
  newcomer add its own host file, and a root ``allowed_signers`` lets the
  admins rotate themselves.  Each member pushes from its own clone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.lab import Lab, run, wait_for, wait_for_each
from tests.gitutil import SshKey, allowed_signers, commit, git, make_key

NET = "inet6"
PREFIX = "2002:102:304"


@dataclass(frozen=True)
class Flavour:
    """Which tinc each node runs, and what the repository carries."""

    policy_tinc: str = "1.0"  # the repository's `tinc:`
    tinc11: frozenset[str] = frozenset()  # the nodes on tinc 1.1; the others run Debian's 1.0
    ed25519_only: bool = False  # tinc 1.1 nodes have Ed25519 keys only (else RSA too, for 1.0 peers)
    lagging: frozenset[str] = frozenset()  # 1.1 nodes whose Ed25519 key the repository lacks (not pushed yet)

    def policy(self) -> str:
        legacy = "legacy_rsa: true\n" if self.policy_tinc == "1.1" and not self.ed25519_only else ""
        return f"""hosts_dir: hosts
tinc: "{self.policy_tinc}"
prefixes: ["{PREFIX}::/48"]
routes:
  gateway: ["::/0"]
min_rsa_bits: 2048
allocate: {{prefix: "{PREFIX}::/48", size: 64}}
{legacy}"""


ONE_ZERO = Flavour()
Times = dict[str, float | None]  # seconds per node (None: it never happened)


@dataclass
class Node:
    name: str
    ns: str
    root: Path
    lan_ip: str
    index: int  # its /64 is PREFIX:index::/64
    gateway: bool = False
    sbin: Path | None = None  # tinc 1.1's tincd and tinc; None: Debian's tincd 1.0
    tincd: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def tinc_dir(self) -> Path:
        return self.root / "tinc"

    @property
    def config(self) -> Path:
        return self.root / "syncd.yaml"

    @property
    def pidfile(self) -> Path:
        return self.root / "tinc.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "tinc.log"

    @property
    def vpn_ip(self) -> str:
        return f"{PREFIX}:{self.index:x}::1"

    @property
    def subnet(self) -> str:
        return f"{PREFIX}:{self.index:x}::/64"

    @property
    def version(self) -> str:
        return "1.0" if self.sbin is None else "1.1"

    def env(self) -> dict[str, str]:
        """The environment of syncd on this node: tinc 1.1's control program
        on PATH, where an operator's installation puts it."""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        if self.sbin is not None:
            env["PATH"] = f"{self.sbin}:{env['PATH']}"
        return env

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def closed_connections(self) -> list[str]:
        """tincd's connections to peers that it closed (not tinc 1.1's control
        connections, one per `tinc reload`)."""
        lines = self.log().splitlines()
        return [line for line in lines if "Closing connection with" in line and "<control>" not in line]


class IPv6Everywhere:
    def __init__(
        self, workdir: Path, flavour: Flavour = ONE_ZERO, sbin11: Path | None = None, interval: int = 1
    ) -> None:
        self.workdir = workdir
        self.interval = interval  # the agents' poll interval
        self.flavour = flavour
        self.sbin11 = sbin11  # required when the flavour puts a node on tinc 1.1
        self.lab = Lab(workdir)
        self.nodes: dict[str, Node] = {}
        self.admin: SshKey | None = None
        self.owners: dict[str, SshKey] = {}  # a node's own SSH key, on its host file's owner line
        self.repo = workdir / "admin-clone"
        self.served = workdir / "srv" / "hosts.git"

    # --- building it -------------------------------------------------------------------

    def build(self) -> None:
        lab = self.lab
        self.inet = lab.switch("inet")
        self.home = lab.switch("home")
        router = lab.ns("router")
        lab.plug(router, self.inet, "wan", "198.51.100.2/24")
        lab.plug(router, self.home, "lan", "192.168.1.1/24")
        lab.exec(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        lab.exec(router, "nft", "add table ip nat")
        lab.exec(router, "nft", "add chain ip nat post { type nat hook postrouting priority 100 ; }")
        lab.exec(router, "nft", 'add rule ip nat post oifname "wan" masquerade')
        self.router = router

        self.add_node("gateway", "198.51.100.1", self.inet, index=0, gateway=True)
        self.add_node("my_pc", "192.168.1.2", self.home, index=4, via="192.168.1.1")
        self.add_node("my_laptop", "192.168.1.3", self.home, index=5, via="192.168.1.1")

        keys = self.workdir / "admin"
        self.admin = make_key(keys, "admin")
        self.signers = allowed_signers(keys / "allowed_signers", (self.admin, 'namespaces="git"'))
        self.admin2 = make_key(keys, "admin2")
        self.stranger = make_key(self.workdir / "stranger", "stranger")

        # The admin's working copy, pushed to a bare repository the gateway serves.
        self.served.parent.mkdir(parents=True)
        git(self.served.parent, "init", "-q", "--bare", "-b", "main", str(self.served))
        (self.repo / "hosts").mkdir(parents=True)
        (self.repo / "syncd.yaml").write_text(self.flavour.policy())
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "remote", "add", "origin", str(self.served))
        for node in self.nodes.values():
            host = (node.tinc_dir / "hosts" / node.name).read_text()
            if node.name in self.flavour.lagging:  # the node's Ed25519 key was never pushed
                host = "".join(line for line in host.splitlines(True) if not line.startswith("Ed25519PublicKey"))
            (self.repo / "hosts" / node.name).write_text(host)
        self.push("gateway, my_pc and my_laptop")
        self.owned_sha = self.own_and_open(("my_pc", "my_laptop"))
        self.daemon = lab.spawn(
            self.nodes["gateway"].ns,
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={self.served.parent}",
             "--listen=198.51.100.1", "--port=9418", str(self.served.parent)],
            log=self.workdir / "git-daemon.log",
        )  # fmt: skip
        if wait_for(lambda: self._daemon_up(), 10) is None:
            raise RuntimeError("git daemon did not start")

    def own_and_open(self, names: tuple[str, ...]) -> str:
        """The admin gives each named node's host file an owner line with the
        node's own SSH key, and lets newcomers join with their own signature."""
        for name in names:
            host = self.repo / "hosts" / name
            host.write_text(self.owner_line(self.owner_key(name)) + "\n" + host.read_text())
        (self.repo / "syncd.yaml").write_text(self.flavour.policy() + "join: open\n")
        return self.push("my_pc and my_laptop own their host files; anyone may join")

    def owner_key(self, name: str) -> SshKey:
        if name not in self.owners:
            self.owners[name] = make_key(self.workdir / "owners" / name, name)
        return self.owners[name]

    @staticmethod
    def owner_line(key: SshKey) -> str:
        return f"# syncd-owner: {key.public_line()} {key.principal}"

    def _daemon_up(self) -> bool:
        gw = self.nodes["gateway"].ns
        probe = self.lab.exec(gw, "git", "ls-remote", "git://198.51.100.1/hosts.git", check=False, timeout=10)
        return probe.returncode == 0

    def add_node(
        self, name: str, ip: str, switch: str, index: int, gateway: bool = False, via: str | None = None
    ) -> Node:
        ns = self.lab.ns(name.replace("_", ""))
        self.lab.plug(ns, switch, "eth0", f"{ip}/24", via)
        node = Node(name, ns, self.workdir / "nodes" / name, ip, index, gateway, self._sbin(name))
        self.nodes[name] = node
        self._tinc_dir(node)
        self._syncd_config(node)
        return node

    def join_with_add_node(self, name: str, ip: str, switch: str, repo: Path) -> Node:
        """A newcomer set up by `syncd add-node` in ``repo`` (next free /64, keys,
        tinc.conf with ConnectTo gateway, tinc-up/down, hosts/NAME in the repository)."""
        ns = self.lab.ns(name.replace("_", ""))
        self.lab.plug(ns, switch, "eth0", f"{ip}/24")
        root = self.workdir / "nodes" / name
        node = Node(name, ns, root, ip, 0, sbin=self._sbin(name))
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "add-node", name, "--repo", str(repo),
             "--tinc-dir", str(root / "tinc"), "--net", NET, "--rsa-bits", "2048"],
            capture_output=True, text=True, timeout=120, env=node.env(), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"syncd add-node failed: {result.stderr}")
        subnet = result.stdout.split("subnet ", 1)[1].split(",", 1)[0]
        node.index = int(subnet.split(":")[3] or "0", 16)
        assert node.subnet == subnet, (node.subnet, subnet)
        self.nodes[name] = node
        self._syncd_config(node)
        return node

    def _tinc_dir(self, node: Node) -> None:
        """The node's tinc directory, laid out as in the classic guide."""
        tinc = node.tinc_dir
        (tinc / "hosts").mkdir(parents=True)
        # PingInterval: after a node's first ten MTU probes go unanswered, tincd 1.0
        # probes it again only every PingInterval (send_mtu_probe() in src/net_packet.c);
        # with the default 60 s a missed first LocalDiscovery round costs a minute.
        conf = ["Name = " + node.name, "AddressFamily = ipv4", "Mode = router", "StrictSubnets = yes"]
        conf.append("PingInterval = 10")
        if not node.gateway:
            conf += ["ConnectTo = gateway", "LocalDiscovery = yes"]
        (tinc / "tinc.conf").write_text("\n".join(conf) + "\n")
        up = [
            "#!/bin/sh",
            'ip link set "$INTERFACE" up mtu 1400',
            f'ip -6 addr add {node.vpn_ip}/48 dev "$INTERFACE"',
        ]
        if not node.gateway:
            up.append('ip -6 route add default dev "$INTERFACE"')
        (tinc / "tinc-up").write_text("\n".join(up) + "\n")
        (tinc / "tinc-up").chmod(0o755)
        host = []
        if node.gateway:
            host.append(f"Address = {node.lan_ip}")
        host.append(f"Subnet = {node.subnet}")
        if node.gateway:
            host.append("Subnet = ::/0")
        (tinc / "hosts" / node.name).write_text("\n".join(host) + "\n")
        if node.sbin is None:
            run(["tincd", "-c", str(tinc), "-K2048"], timeout=60)
        elif self.flavour.ed25519_only:
            run([str(node.sbin / "tinc"), "-c", str(tinc), "--batch", "generate-ed25519-keys"], timeout=60)
        else:
            run([str(node.sbin / "tinc"), "-c", str(tinc), "--batch", "generate-keys", "2048"], timeout=60)

    def _sbin(self, name: str) -> Path | None:
        if name not in self.flavour.tinc11:
            return None
        if self.sbin11 is None:
            raise ValueError(f"{name} runs tinc 1.1: give IPv6Everywhere its sbin11")
        return self.sbin11

    def _syncd_config(self, node: Node) -> None:
        """tinc 1.0 is reloaded by signal (``auto``), tinc 1.1 by its control
        program (``tinc``); a metrics file beside the state."""
        reload = "auto" if node.sbin is None else "tinc"
        node.config.write_text(
            f"net: {NET}\nnode: {node.name}\n"
            "repo: {url: 'git://198.51.100.1/hosts.git'}\n"
            f"trust: {{allowed_signers: '{self.workdir / 'admin' / 'allowed_signers'}'}}\n"
            f"tinc: {{dir: '{node.tinc_dir}', reload: {reload}, pidfile: '{node.pidfile}'}}\n"
            f"state_dir: '{node.root / 'state'}'\ninterval: {self.interval}\n"
            f"metrics_file: '{node.root / 'metrics.prom'}'\n"
        )

    # --- the admin ------------------------------------------------------------------------

    def push(self, message: str, key: SshKey | str | None = "admin", repo: Path | None = None) -> str:
        """Commit the work tree of ``repo`` (the admin's clone by default),
        signed with ``key``, and force-push it: the server takes anything."""
        signer = self.admin if key == "admin" else key
        assert not isinstance(signer, str)
        repo = repo or self.repo
        sha = commit(repo, message, signer, allow_empty=True)
        git(repo, "push", "-q", "--force", "origin", "HEAD:main")
        return sha

    def clone(self, name: str) -> Path:
        """A member's own working copy of the served repository, up to date."""
        path = self.workdir / f"{name}-clone"
        if not path.exists():
            git(self.workdir, "clone", "-q", str(self.served), str(path))
        self.refresh(path)
        return path

    def refresh(self, repo: Path, rev: str = "origin/main") -> None:
        git(repo, "fetch", "-q", "origin")
        git(repo, "reset", "-q", "--hard", rev)

    def drop_to(self, sha: str) -> None:
        """The admins throw away every commit after ``sha`` (force-push back)."""
        self.refresh(self.repo, sha)
        git(self.repo, "push", "-q", "--force", "origin", "HEAD:main")

    # --- the nodes --------------------------------------------------------------------------

    def syncd(self, node: Node, *args: str) -> subprocess.CompletedProcess[bytes]:
        """The syncd command line tool, as a user runs it, inside the node's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", node.ns, sys.executable, "-m", "syncd", *args, "-c", str(node.config)],
            capture_output=True,
            timeout=120,
            env=node.env(),
            check=False,
        )

    def sync(self, node: Node) -> str:
        result = self.syncd(node, "sync")
        if result.returncode != 0:
            raise AssertionError(f"syncd sync on {node.name} exited {result.returncode}: {result.stderr.decode()}")
        return result.stdout.decode()

    def log(self, node: Node) -> list[dict[str, object]]:
        """The node's audit trail (`syncd log --format json`), newest first."""
        result = self.syncd(node, "log", "--format", "json")
        if result.returncode != 0:
            raise AssertionError(f"syncd log on {node.name} exited {result.returncode}: {result.stderr.decode()}")
        return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]

    def role(self, node: Node, sha: str) -> object:
        """The role ``sha`` was applied in on ``node`` (None: not applied)."""
        return next((entry["role"] for entry in self.log(node) if entry["commit"] == sha), None)

    def start_tincd(self, node: Node) -> None:
        tincd = "tincd" if node.sbin is None else str(node.sbin / "tincd")
        node.tincd = self.lab.spawn(
            node.ns,
            [tincd, "-c", str(node.tinc_dir), "-D", f"--pidfile={node.pidfile}", f"--logfile={node.logfile}", "-d5"],
        )
        if wait_for(lambda: "Ready" in node.log(), 10) is None:
            raise RuntimeError(f"tincd on {node.name} did not start:\n{node.log()}")
        node.pids.append(node.tincd.pid)

    def start_agent(self, node: Node) -> None:
        node.agent = self.lab.spawn(
            node.ns, [sys.executable, "-m", "syncd", "run", "-c", str(node.config)], node.root / "agent.log", node.env()
        )

    def stop_agent(self, node: Node) -> None:
        if node.agent is not None and node.agent.poll() is None:
            node.agent.terminate()
            node.agent.wait(timeout=20)
        node.agent = None

    def ping(self, src: Node, dst: Node | str, count: int = 1, size: int = 56, timeout: float = 2) -> bool:
        target = dst if isinstance(dst, str) else dst.vpn_ip
        result = self.lab.exec(
            src.ns,
            "ping", "-6", "-n", "-q", "-c", str(count), "-i", "0.01", "-s", str(size), "-W", str(int(timeout)),
            "-I", src.vpn_ip, target,
            check=False,
            timeout=timeout * count + 10,
        )  # fmt: skip
        return result.returncode == 0

    def reachable(self, src: Node, dst: Node, timeout: float = 30) -> float | None:
        return wait_for(lambda: self.ping(src, dst), timeout, interval=0.1)

    def reached_since(self, since: float, dst: Node, sources: Sequence[str], timeout: float = 30) -> Times:
        """For each source node: seconds from ``since`` (monotonic) until it
        first pings ``dst`` (None: not within ``timeout`` from now)."""
        offset = time.monotonic() - since
        times = wait_for_each(sources, lambda name: self.ping(self.nodes[name], dst, timeout=1), timeout)
        return {name: None if t is None else offset + t for name, t in times.items()}

    def same_tincd(self) -> dict[str, bool]:
        """Each running tincd is still the process started first (reloaded, not restarted)."""
        result = {}
        for node in self.nodes.values():
            if node.tincd is None:
                continue
            pid = int(node.pidfile.read_text().split()[0])
            result[node.name] = node.tincd.poll() is None and pid == node.pids[0] == node.tincd.pid
        return result

    def close(self) -> None:
        self.lab.close()
