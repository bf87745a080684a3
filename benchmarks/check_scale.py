"""`syncd check` at scale: 1k, 10k and 100k nodes.

Each node has two subnets (its IPv6 /64 and an IPv4 /32) and a real Ed25519
key.  Both commands run as fresh processes, so interpreter start-up counts on
both sides:

* `syncd check REPO` — wall time and peak RSS (the child's ru_maxrss);
* a bare Python read of the same files (scandir + read every file).

Each is run several times over a warm page cache; the best time is shown.
Goals, each printed beside its measure: 10k nodes in <= 3x the bare read
(wall), 100k nodes in <= 150 MiB peak RSS and within 12x of 10k.

    python benchmarks/check_scale.py [--sizes 1000,10000,100000] [--runs 3] [--keep DIR]

--keep DIR leaves the networks (DIR/netN) and the bare-read script
(DIR/bare_read.py) there, to time the two commands again with other tools:
python DIR/bare_read.py DIR/net10000/hosts against syncd check DIR/net10000.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from syncd.tinc.keys import tinc_b64encode

GOAL_RATIO = 3.0  # syncd check at 10k nodes against a bare read of the files (wall)
GOAL_PEAK_MIB = 150  # syncd check at 100k nodes, peak RSS

BARE_READ = """
import os, sys
total = 0
for entry in os.scandir(sys.argv[1]):
    with open(entry.path, "rb") as fh:
        total += len(fh.read())
print(total)
"""


def make_network(root: Path, nodes: int) -> None:
    hosts = root / "hosts"
    hosts.mkdir(parents=True)
    (root / "syncd.yaml").write_text("tinc: '1.1'\nprefixes: ['fd00::/8', 10.0.0.0/8]\n")
    for i in range(nodes):
        raw = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        (hosts / f"node{i}").write_text(
            f"# node {i}\nAddress = node{i}.vpn.example.org 655\n"
            f"Subnet = fd00:{i >> 16:x}:{i & 0xFFFF:x}::/64\n"
            f"Subnet = 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n"
            f"Ed25519PublicKey = {tinc_b64encode(raw)}\n"
        )


def timed(argv: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak RSS in MiB and stdout+stderr of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{output}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def best(argv: list[str], runs: int) -> tuple[float, float, float, str]:
    """The best wall and CPU time of ``runs`` (this machine's noise only adds)."""
    results = [timed(argv) for _ in range(runs)]
    return min(r[0] for r in results), min(r[1] for r in results), max(r[2] for r in results), results[-1][3]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="generate the networks in DIR and keep them")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as scratch:
        tmp = scratch if args.keep is None else str(args.keep)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "bare_read.py").write_text(BARE_READ.lstrip())
        for nodes in sizes:
            root = Path(tmp) / f"net{nodes}"
            t0 = time.perf_counter()
            if args.keep is not None and root.exists():
                print(f"reusing {root}", file=sys.stderr)  # kept by an earlier --keep
            else:
                make_network(root, nodes)
                print(f"generated {nodes} nodes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            bare, bare_cpu, _, _ = best([sys.executable, "-c", BARE_READ, str(root / "hosts")], args.runs)
            check, cpu, rss, output = best([sys.executable, "-m", "syncd", "check", str(root)], args.runs)
            if f"{nodes} nodes, {2 * nodes} subnets: 0 errors" not in output:
                raise SystemExit(f"unexpected check output for {nodes} nodes:\n{output[-2000:]}")
            rows.append((nodes, check, cpu, rss, bare, bare_cpu))

    print()
    print(
        "| nodes | syncd check wall (s) | CPU (s) | peak RSS (MiB) | bare read wall (s) | CPU (s) "
        "| check / bare (wall) | (CPU) | per node (us) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for nodes, check, cpu, rss, bare, bare_cpu in rows:
        print(
            f"| {nodes} | {check:.3f} | {cpu:.3f} | {rss:.0f} | {bare:.3f} | {bare_cpu:.3f} "
            f"| {check / bare:.2f}x | {cpu / bare_cpu:.2f}x | {check / nodes * 1e6:.0f} |"
        )
    goals = []
    by_size = {nodes: (check, rss, bare) for nodes, check, _, rss, bare, _ in rows}
    if 10_000 in by_size:
        check, _, bare = by_size[10_000]
        goals.append(("`syncd check`, 10k nodes, against a bare read (wall)", "<= 3x", f"{check / bare:.2f}x",
                      check / bare <= GOAL_RATIO))  # fmt: skip
    if 100_000 in by_size:
        _, rss, _ = by_size[100_000]
        goals.append(("`syncd check`, 100k nodes, peak RSS", f"<= {GOAL_PEAK_MIB} MiB", f"{rss:.0f} MiB",
                      rss <= GOAL_PEAK_MIB))  # fmt: skip
    if 10_000 in by_size and 100_000 in by_size:
        growth = by_size[100_000][0] / by_size[10_000][0]
        goals.append(("`syncd check`, 100k nodes against 10k (wall)", "<= 12x", f"{growth:.1f}x", growth <= 12))
    if goals:
        print("\n| goal | wanted | measured | met |\n|---|---:|---:|---|")
        for what, wanted, measured, met in goals:
            print(f"| {what} | {wanted} | {measured} | {'yes' if met else 'NO'} |")
    return 0  # a goal not met is printed as such; make bench runs on


if __name__ == "__main__":
    sys.exit(main())
