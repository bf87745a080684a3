"""`syncd sync` on a 10k-node signed repository, next to `git fetch`.

The repository is served by a real `git daemon` on 127.0.0.1; each node has
two subnets and an Ed25519 key.  Printed, as a table (best of --runs):

* first sync (fetch everything, verify, validate, install 10k files;
  goal: <= 4 s);
* a no-op sync next to a no-op `git fetch` of the same repository into a
  clone (goal: <= 3x);
* a one-file change: the signed commit is fetched, verified, validated and
  exactly one file is written (goal: <= 4x `git fetch` of the same change);
* the same two inside one process, as the `syncd run` loop does them (no
  interpreter start-up, no imports; goals: <= 1.2x and <= 2x);
* the floor under a fresh process: `python -c 'import dulwich.client'`;
* the cost of asking every URL: a no-op pass with repo.url and two mirrors
  next to the same pass with repo.url alone (in those two rows the
  `git fetch` column holds the one-URL pass);
* the stat walk a fresh pass makes of the installed files
  (``hostsdir.read_installed``, every file as recorded) next to its floor,
  a bare ``os.scandir`` + ``stat`` loop in Python over the same directory
  (in that row the `git fetch` column holds the floor).

syncd runs as installed (bytecode compiled: PYTHONDONTWRITEBYTECODE is
dropped from its environment, and a first run writes it).

    python benchmarks/sync_scale.py [--nodes 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from syncd.tinc.keys import tinc_b64encode

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "admin",
    "GIT_AUTHOR_EMAIL": "admin@example.org",
    "GIT_COMMITTER_NAME": "admin",
    "GIT_COMMITTER_EMAIL": "admin@example.org",
}


FIRST_SYNC_GOAL = 4.0  # seconds, at 10k nodes


def run(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def timed(*args: str | Path, cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:  # one socket a try, closed
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def snapshot(hosts: Path) -> dict[str, tuple[int, int]]:
    return {e.name: (e.stat().st_ino, e.stat().st_mtime_ns) for e in os.scandir(hosts)}


def commit_signed(work: Path, key: Path, message: str) -> None:
    run("git", "add", "-A", cwd=work)
    run("git", "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", message, cwd=work)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=work)


def make_network(tmp: Path, nodes: int) -> tuple[Path, Path, Path]:
    """A signed repository of ``nodes`` host files: (work clone, key, bare server)."""
    key = tmp / "admin"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f", key)
    kind, blob = (tmp / "admin.pub").read_text().split()[:2]
    (tmp / "allowed_signers").write_text(f"admin@example.org {kind} {blob}\n")
    server = tmp / "srv" / "hosts.git"
    run("git", "init", "-q", "--bare", "-b", "main", server)
    work = tmp / "work"
    (work / "hosts").mkdir(parents=True)
    (work / "syncd.yaml").write_text("tinc: '1.1'\nprefixes: ['fd00::/8', 10.0.0.0/8]\n")
    for i in range(nodes):
        raw = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        (work / "hosts" / f"node{i}").write_text(
            f"Subnet = fd00:{i >> 16:x}:{i & 0xFFFF:x}::/64\n"
            f"Subnet = 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n"
            f"Ed25519PublicKey = {tinc_b64encode(raw)}\n"
        )
    run("git", "init", "-q", "-b", "main", cwd=work)
    run("git", "remote", "add", "origin", server, cwd=work)
    commit_signed(work, key, f"{nodes} nodes")
    return work, key, server


def node_config(node: Path, url: str | Path, signers: Path, name: str = "node0", ssh_command: str | None = None) -> str:
    """The config of a node whose tinc and state directories are under ``node`` (reload none)."""
    ssh = f", ssh_command: '{ssh_command}'" if ssh_command else ""
    return (
        f"net: bench\nnode: {name}\nrepo: {{url: '{url}'{ssh}}}\n"
        f"trust: {{allowed_signers: {signers}}}\n"
        f"tinc: {{dir: {node / 'tinc'}, reload: none}}\nstate_dir: {node / 'state'}\n"
    )


def make_node(node: Path, url: str | Path, signers: Path) -> Path:
    """A node's directories and config (node0, reload none), fresh; its config."""
    shutil.rmtree(node, ignore_errors=True)
    (node / "tinc").mkdir(parents=True)
    config = node / "node.yaml"
    config.write_text(node_config(node, url, signers))
    return config


Row = tuple[str, float, float | None, float | None]


def three_urls(tmp: Path, url: str, config: Path, runs: int, syncd: list[str]) -> list[Row]:
    """The no-op pass with repo.url and two mirrors (every URL is asked for
    its tip each pass) next to the same pass with repo.url alone; the
    mirrors are `git clone --mirror` copies served by the same daemon."""
    from syncd.node.config import load_config
    from syncd.rules.validate import ParseCache
    from syncd.sync.agent import sync_once

    mirrors = []
    for name in ("mirror1.git", "mirror2.git"):
        run("git", "clone", "-q", "--mirror", tmp / "srv" / "hosts.git", tmp / "srv" / name)
        mirrors.append(url.replace("hosts.git", name))
    three = config.with_name("three.yaml")
    text = config.read_text()
    three.write_text(text.replace(f"url: '{url}'", f"url: '{url}', mirrors: {mirrors}"))
    assert three.read_text() != text
    one_loaded, three_loaded = load_config(config), load_config(three)
    caches = (ParseCache(), ParseCache())
    one_times: list[float] = []
    three_times: list[float] = []
    for _ in range(runs + 1):  # the first round warms both caches
        for loaded, cache, times in ((one_loaded, caches[0], one_times), (three_loaded, caches[1], three_times)):
            start = time.perf_counter()
            result = sync_once(loaded, parse_cache=cache)
            times.append(time.perf_counter() - start)
            assert result.status == "unchanged" and len(result.urls) == len(loaded.repo.urls), result
            assert all(u.state == "current" for u in result.urls), result.urls
    one_cli = [timed(*syncd, "sync", "-c", config)[0] for _ in range(runs)]
    three_cli = [timed(*syncd, "sync", "-c", three)[0] for _ in range(runs)]
    return [
        ("no-op pass inside `syncd run`, 3 URLs (vs 1 URL)", min(three_times[1:]), min(one_times[1:]), None),
        ("no-op sync, 3 URLs (vs 1 URL)", min(three_cli), min(one_cli), None),
    ]


def stat_walk(hosts: Path, state_dir: Path, runs: int) -> Row:
    """``read_installed`` of every installed file against the bare loop."""
    from syncd.node.hostsdir import read_installed
    from syncd.node.state import load_state

    manifest = load_state(state_dir).manifest

    def floor() -> None:
        for entry in os.scandir(hosts):
            entry.stat(follow_symlinks=False)

    ours, bare = [], []
    for _ in range(max(runs, 5)):  # interleaved: the same load on both
        start = time.perf_counter()
        installed, stale = read_installed(hosts, manifest)
        ours.append(time.perf_counter() - start)
        assert not stale and len(installed) == len(manifest)
        start = time.perf_counter()
        floor()
        bare.append(time.perf_counter() - start)
    return (f"stat walk of {len(manifest)} installed files (vs os.scandir + stat)", min(ours), min(bare), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    syncd = [sys.executable, "-m", "syncd"]

    with tempfile.TemporaryDirectory(prefix="syncd-sync-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        work, key, _server = make_network(tmp, args.nodes)
        print(f"made a {args.nodes}-node signed repository in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        port = free_port()
        daemon = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={tmp / 'srv'}", "--listen=127.0.0.1",
             f"--port={port}", str(tmp / "srv")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, "git daemon")
            url = f"git://127.0.0.1:{port}/hosts.git"
            clone = tmp / "clone"
            run("git", "clone", "-q", url, clone)

            rows: list[Row] = []
            timed(*syncd, "--version")  # compiles syncd's bytecode once, as an install does
            first = []
            for _ in range(args.runs):
                node = tmp / "node"
                config = make_node(node, url, tmp / "allowed_signers")
                elapsed, out = timed(*syncd, "sync", "-c", config)
                assert f"{args.nodes} added" in out, out
                first.append(elapsed)
            rows.append(("first sync (fetch + verify + validate + install)", min(first), None, FIRST_SYNC_GOAL))

            noop = [timed(*syncd, "sync", "-c", config)[0] for _ in range(args.runs)]
            git_noop = [timed("git", "fetch", "-q", "origin", cwd=clone)[0] for _ in range(args.runs)]
            rows.append(("no-op sync", min(noop), min(git_noop), 3.0))
            floor = [timed(sys.executable, "-c", "import dulwich.client")[0] for _ in range(args.runs)]
            rows.append(("floor: python -c 'import dulwich.client'", min(floor), min(git_noop), None))

            hosts = node / "tinc" / "hosts"
            change_times, git_change_times, written = [], [], []
            for run_index in range(args.runs):
                with (work / "hosts" / "node1").open("a") as fh:
                    fh.write(f"# change {run_index}\n")
                commit_signed(work, key, f"change {run_index}")
                before = snapshot(hosts)
                elapsed, out = timed(*syncd, "sync", "-c", config)
                change_times.append(elapsed)
                after = snapshot(hosts)
                written.append(sorted(n for n in after if after[n] != before.get(n)))
                git_change_times.append(timed("git", "fetch", "-q", "origin", cwd=clone)[0])
            assert all(w == ["node1"] for w in written), written
            rows.append(("one-file change (1 file written)", min(change_times), min(git_change_times), 4.0))

            # The same inside one process, as the `syncd run` loop does it:
            # no interpreter start-up and imports on every pass.
            from syncd.node.config import load_config
            from syncd.node.hostswatch import WatchedHosts
            from syncd.rules.validate import ParseCache
            from syncd.sync.agent import sync_once

            loaded = load_config(config)
            cache = ParseCache()  # what RunLoop keeps between passes
            watched = WatchedHosts(loaded.tinc.hosts_dir)  # and its watched hosts directory
            watched.start()
            in_noop = []
            for _ in range(args.runs):
                start = time.perf_counter()
                assert sync_once(loaded, parse_cache=cache, hosts=watched).status == "unchanged"
                in_noop.append(time.perf_counter() - start)
            rows.append(("no-op pass inside `syncd run`", min(in_noop), min(git_noop), 1.2))
            in_change = []
            for run_index in range(args.runs):
                with (work / "hosts" / "node2").open("a") as fh:
                    fh.write(f"# change {run_index}\n")
                commit_signed(work, key, f"in-process change {run_index}")
                start = time.perf_counter()
                result = sync_once(loaded, parse_cache=cache, hosts=watched)
                in_change.append(time.perf_counter() - start)
                assert result.plan.update == ("node2",) and not result.plan.add, result.plan
            rows.append(("one-file change inside `syncd run`", min(in_change), min(git_change_times), 2.0))
            watched.stop()
            rows.append(stat_walk(hosts, loaded.state_dir, args.runs))
            rows += three_urls(tmp, url, config, args.runs, syncd)
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)

    print()
    print(f"| {args.nodes} nodes | syncd sync (s) | git fetch (s) | ratio | goal | met |")
    print("|---|---:|---:|---:|---:|---|")
    for name, ours, theirs, goal in rows:
        ratio = ours / theirs if theirs else None
        if goal is None:
            shown, met = "", ""
        elif ratio is None:  # an absolute goal, in seconds
            shown, met = f"<= {goal:g} s", "yes" if ours <= goal else "no"
        else:
            shown, met = f"<= {goal:g}x", "yes" if ratio <= goal else "no"
        cells = [f"{ours:.3f}", f"{theirs:.3f}" if theirs else "", f"{ratio:.2f}x" if ratio else "", shown, met]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
