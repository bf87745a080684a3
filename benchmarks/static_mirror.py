"""What a change costs over a static mirror (dumb HTTP), next to `git fetch`.

A signed repository of --nodes host files (sync_scale.py's generator), packed
into one pack and served by a static nginx on 127.0.0.1 after `git
update-server-info`, as a mirror's post-update hook does.  One node and one
`git clone --bare` take the first sync; then, --changes times, the server is
repacked into one pack and one signed commit changes one host file (its
objects arrive loose, as a small push leaves them), and both pick it up.
Printed per size: the bytes nginx sent ($bytes_sent: status line, headers,
body) for syncd's pass and for `git fetch`'s, their ratio, and the goal
(<= 2x), with syncd's wall time.

    python benchmarks/static_mirror.py [--nodes 1000,10000] [--changes 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet_servers import nginx_argv, nginx_config, nginx_sent
from sync_scale import GIT_ENV, commit_signed, free_port, make_network, make_node, run, wait_for_port

GOAL = 2.0  # bytes of syncd's pass / bytes of git fetch's, for one change


def sent_by(prefix: Path, argv: list[str], cwd: Path | None = None) -> tuple[int, float]:
    """Bytes nginx sent while ``argv`` ran, and its wall time."""
    before = nginx_sent(prefix)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    time.sleep(0.05)  # nginx logs a request once it is done
    return nginx_sent(prefix) - before, elapsed


def measure(tmp: Path, nodes: int, changes: int) -> list[tuple[str, int, int, float]]:
    """(what, syncd's bytes, git fetch's bytes, syncd's seconds) for the first sync and each change."""
    work, key, server = make_network(tmp, nodes)
    run("git", "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q", cwd=server)
    run("git", "update-server-info", cwd=server)
    port = free_port()
    prefix = tmp / "nginx"
    tmp.chmod(0o755)  # nginx's workers (www-data) read the repository
    proc = subprocess.Popen(
        nginx_argv(nginx_config(prefix, port, f"        root {server.parent};\n")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, "nginx")
        url = f"http://127.0.0.1:{port}/hosts.git"
        config = make_node(tmp / "node", url, tmp / "allowed_signers")
        syncd = [sys.executable, "-m", "syncd", "sync", "-c", str(config)]
        ours, seconds = sent_by(prefix, syncd, cwd=tmp)
        theirs, _ = sent_by(prefix, ["git", "clone", "-q", "--bare", url, str(tmp / "clone")])
        rows = [("first sync", ours, theirs, seconds)]
        for n in range(changes):
            run("git", "-c", "repack.writeBitmaps=false", "repack", "-a", "-d", "-q", cwd=server)
            with (work / "hosts" / "node1").open("a") as fh:
                fh.write(f"# change {n}\n")
            commit_signed(work, key, f"change {n}")
            run("git", "update-server-info", cwd=server)
            ours, seconds = sent_by(prefix, syncd, cwd=tmp)
            theirs, _ = sent_by(prefix, ["git", "-C", str(tmp / "clone"), "fetch", "-q", "origin", "main:main"])
            rows.append((f"one-file change {n + 1}", ours, theirs, seconds))
        hosts = tmp / "node" / "tinc" / "hosts"
        assert (hosts / "node1").read_text().endswith(f"# change {changes - 1}\n"), "the change was not installed"
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1000,10000", help="repository sizes, comma-separated")
    parser.add_argument("--changes", type=int, default=2)
    args = parser.parse_args()
    print("| nodes | pass | syncd sync (bytes) | git fetch (bytes) | ratio | goal | syncd wall (s) |")
    print("|---:|---|---:|---:|---:|---|---:|")
    for nodes in (int(n) for n in args.nodes.split(",")):
        with tempfile.TemporaryDirectory(prefix="syncd-static-bench-") as tmp_name:
            for what, ours, theirs, seconds in measure(Path(tmp_name), nodes, args.changes):
                goal = "" if what == "first sync" else f"<= {GOAL:g}x"
                ratio = f"{ours / theirs:.2f}x" if theirs else ""
                print(f"| {nodes} | {what} | {ours:,} | {theirs:,} | {ratio} | {goal} | {seconds:.2f} |", flush=True)
    print(f"\nbytes: nginx's $bytes_sent per request (headers and body), {os.uname().nodename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
