"""What refusing an unsigned commit full of junk costs a node.

A signed hosts repository (--nodes nodes) is served by a real `git daemon` on
127.0.0.1 and a node is synced to it.  Then, one at a time, an UNSIGNED
commit is put on top of the signed tip on the server, adding:

* (a) a 1 GiB blob of zeros: about 1 MiB on the wire, refused from the
  object's size in the pack (over repo.max_fetch_bytes, 256 MiB by default);
* (b) a 1 GiB blob of random bytes: the pack is cut off at the cap while it
  streams in;
* (c) 200 MiB of random bytes: under the cap, so received, scanned and
  indexed in the quarantine, then refused for the missing signature;
* (d) 20,000 small junk blobs in a new directory: many objects, under the cap.

For each, `syncd sync -c CONFIG` runs as a fresh process.  Printed: its wall
time, exit code, the reason recorded in state_dir/health.json, its peak RSS,
whether the node's hosts directory and state.json are byte-identical
afterwards, and how much the node's store grew (the quarantine must be gone).
Last, the junk is replaced by a signed commit changing one host file: that
pass must converge.

Peak RSS is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` read by a fresh helper
process around one ``subprocess.run`` of `syncd sync`: the kernel keeps, for
every reaped process, the largest of its own peak and its reaped children's,
so this is the peak of the largest single process among syncd and the fetch
child it forks (and the ssh-keygen it may run), not their sum.  The fetch
child is a fork, so pages it shares with its parent count in both.

Goal: refusing a 1 GiB unsigned blob, (a) and (b), costs under 400 MB and
under 60 s; every junk commit is refused and leaves the node as it was; the
honest pass converges.  The exit status is 1 when a goal is missed.

    python benchmarks/refuse_junk.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sync_scale import GIT_ENV, commit_signed, free_port, make_network, make_node, run

MIB = 1 << 20
GIB = 1 << 30
GOAL_RSS_KIB = 400 * 1000  # 400 MB
GOAL_SECONDS = 60.0
CHUNK = 4 * MIB

# Run by a fresh interpreter, so that RUSAGE_CHILDREN covers syncd alone.
HELPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=False)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "code": done.returncode, "peak_kib": peak, "stderr": done.stderr[-2000:]}))
"""


@dataclass(frozen=True, slots=True)
class Measured:
    wall: float
    code: int
    peak_kib: int
    stderr: str


def sync_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "syncd", "sync", "-c", str(config)]


def measure(command: Sequence[str | Path]) -> Measured:
    out = subprocess.run(
        [sys.executable, "-c", HELPER, *map(str, command)], capture_output=True, text=True, check=True
    ).stdout
    got = json.loads(out)
    return Measured(float(got["wall"]), int(got["code"]), int(got["peak_kib"]), str(got["stderr"]))


# --- the junk -----------------------------------------------------------------


Source = Callable[[int], bytes]  # n -> n bytes


def zeros(n: int) -> bytes:
    return bytes(n)


def random_source(seed: int) -> Source:
    # Mersenne Twister output: as incompressible as os.urandom for zlib, and fast.
    return random.Random(seed).randbytes


def _blob(stream: IO[bytes], path: str, size: int, source: Source) -> None:
    stream.write(f"M 100644 inline {path}\ndata {size}\n".encode())
    left = size
    while left:
        piece = min(left, CHUNK)
        stream.write(source(piece))
        left -= piece
    stream.write(b"\n")


def junk_commit(
    server: Path, parent: str, name: str, blobs: Iterator[tuple[str, int, Source]], compression: int
) -> str:
    """An unsigned commit on top of ``parent``, written by `git fast-import`
    straight into the server's repository (a pack, not a gigabyte of loose
    objects); ``compression`` is zlib's level for it (0: stored as is)."""
    importer = subprocess.Popen(
        ["git", "-c", f"core.compression={compression}", "-c", f"pack.compression={compression}",
         "-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--date-format=raw"],
        cwd=server, env=GIT_ENV, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert importer.stdin is not None
    with importer.stdin as stream:
        message = f"junk {name}\n".encode()
        stream.write(f"commit refs/heads/junk-{name}\n".encode())
        stream.write(b"committer Mallory <mallory@example.org> 1700000000 +0000\n")
        stream.write(f"data {len(message)}\n".encode() + message)
        stream.write(f"from {parent}\n".encode())
        for path, size, source in blobs:
            _blob(stream, path, size, source)
    if importer.wait() != 0:
        raise SystemExit(f"git fast-import failed for junk {name}")
    return rev_parse(server, f"refs/heads/junk-{name}")


def rev_parse(repo: Path, rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", rev], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True
    ).stdout.strip()


JUNK: list[tuple[str, str, int, Callable[[], Iterator[tuple[str, int, Source]]]]] = [
    ("a", "1 GiB of zeros (1 MiB packed)", 6, lambda: iter([("junk/zeros", GIB, zeros)])),
    ("b", "1 GiB of random bytes", 0, lambda: iter([("junk/random", GIB, random_source(1))])),
    ("c", "200 MiB of random bytes", 0, lambda: iter([("junk/random", 200 * MIB, random_source(2))])),
    (
        "d",
        "20,000 small blobs in junk/",
        6,
        lambda: ((f"junk/{i:05}", 200, random_source(100 + i)) for i in range(20_000)),
    ),
]


# --- the network and the node ---------------------------------------------------


@contextlib.contextmanager
def serve(base: Path) -> Iterator[str]:
    """`git daemon` on 127.0.0.1 exporting ``base``; stopped by its pid."""
    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}", "--listen=127.0.0.1",
         f"--port={port}", str(base)],
        env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("git daemon did not start")
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}/hosts.git"
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def fingerprint(node: Path) -> str:
    """A digest of every host file (name, mode, bytes) and state.json."""
    digest = hashlib.sha256()
    hosts = node / "tinc" / "hosts"
    for entry in sorted(os.scandir(hosts), key=lambda e: e.name):
        digest.update(f"{entry.name}\0{entry.stat(follow_symlinks=False).st_mode:o}\0".encode())
        digest.update(Path(entry.path).read_bytes())
    digest.update((node / "state" / "state.json").read_bytes())
    return digest.hexdigest()


def store_bytes(node: Path) -> tuple[int, list[str]]:
    """Bytes under the state directory (health.json aside, it records each
    pass) and any quarantine left behind."""
    total, leftovers = 0, []
    for root, dirs, files in os.walk(node / "state"):
        leftovers += [d for d in dirs if d.startswith("incoming-")]
        total += sum(Path(root, f).stat().st_size for f in files if f != "health.json")
    return total, leftovers


def health_reason(node: Path, code: int) -> str:
    """The pass's reason: ``last_error_reason`` is kept after a success."""
    health = json.loads((node / "state" / "health.json").read_text())
    return str(health["last_outcome"] if code == 0 else health["last_error_reason"])


# --- the run ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    got: Measured
    reason: str
    unchanged: bool
    grew: int
    ok: bool


def refuse(node: Path, config: Path, name: str, big: bool) -> Row:
    before, (size_before, _) = fingerprint(node), store_bytes(node)
    got = measure(sync_command(config))
    after, (size_after, leftovers) = fingerprint(node), store_bytes(node)
    unchanged = before == after and not leftovers
    ok = got.code != 0 and unchanged
    if big:
        ok = ok and got.peak_kib < GOAL_RSS_KIB and got.wall < GOAL_SECONDS
    return Row(name, got, health_reason(node, got.code), unchanged, size_after - size_before, ok)


def converge(node: Path, config: Path, work: Path, key: Path, server: Path, signed: str) -> Row:
    """Replace the junk with a signed commit changing one host file."""
    run("git", "update-ref", "refs/heads/main", signed, cwd=server)
    with (work / "hosts" / "node1").open("a") as fh:
        fh.write("# honest change\n")
    commit_signed(work, key, "honest change")
    size_before, _ = store_bytes(node)
    got = measure(sync_command(config))
    size_after, leftovers = store_bytes(node)
    installed = (node / "tinc" / "hosts" / "node1").read_bytes() == (work / "hosts" / "node1").read_bytes()
    state = json.loads((node / "state" / "state.json").read_text())
    tip = rev_parse(server, "refs/heads/main")
    converged = installed and tip in json.dumps(state) and not leftovers
    name = "honest signed commit on top (1 file)"
    return Row(
        name, got, health_reason(node, got.code), converged, size_after - size_before, got.code == 0 and converged
    )


def bench(tmp: Path, nodes: int) -> list[Row]:
    t0 = time.perf_counter()
    work, key, server = make_network(tmp, nodes)
    signed = rev_parse(server, "refs/heads/main")
    print(f"made a {nodes}-node signed repository in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    with serve(tmp / "srv") as url:
        node = tmp / "node"
        config = make_node(node, url, tmp / "allowed_signers")
        first = measure(sync_command(config))
        if first.code != 0:
            raise SystemExit(f"the first sync failed ({first.code}):\n{first.stderr}")
        packs = sum(p.stat().st_size for p in (server / "objects" / "pack").glob("*.pack"))
        for name, what, level, blobs in JUNK:
            t0 = time.perf_counter()
            junk = junk_commit(server, signed, name, blobs(), level)
            run("git", "update-ref", "refs/heads/main", junk, cwd=server)
            packed = sum(p.stat().st_size for p in (server / "objects" / "pack").glob("*.pack")) - packs
            packs += packed
            print(f"made junk ({name}) in {time.perf_counter() - t0:.1f} s: a {packed} B pack", file=sys.stderr)
            rows.append(refuse(node, config, f"({name}) {what}", big=name in "ab"))
            said = rows[-1].got.stderr.strip().splitlines()
            print(f"  syncd: {said[-1] if said else '(nothing)'}", file=sys.stderr)
            run("git", "update-ref", "-d", f"refs/heads/junk-{name}", cwd=server)
        rows.append(converge(node, config, work, key, server, signed))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="syncd-junk-bench-") as tmp_name:
        rows = bench(Path(tmp_name), args.nodes)
    print()
    print(f"| unsigned commit adding ({args.nodes} nodes, max_fetch_bytes 256 MiB) | wall (s) | exit | reason "
          "| peak RSS (MB) | node unchanged | store grew (B) | goal met |")  # fmt: skip
    print("|---|---:|---:|---|---:|---|---:|---|")
    for row in rows:
        same = "converged" if row.name.startswith("honest") else "identical"
        print(
            f"| {row.name} | {row.got.wall:.2f} | {row.got.code} | {row.reason} | {row.got.peak_kib / 1000:.0f} "
            f"| {same if row.unchanged else 'NO'} | {row.grew} | {'yes' if row.ok else 'NO'} |"
        )
    print(f"\ngoal: (a) and (b) under {GOAL_RSS_KIB // 1000} MB and {GOAL_SECONDS:g} s; all junk refused, node "
          f"unchanged; the honest pass converges.  Total {time.perf_counter() - start:.0f} s.")  # fmt: skip
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
