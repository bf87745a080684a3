"""`syncd show` on real networks: the example network and the three corpora
(tests/corpora, or $SYNCD_CORPORA), each copied into a plain directory.

For each network, the best of several runs, in milliseconds:

* read: the working tree read and checked as `syncd check` does (and its
  history looked for);
* doc: the one document every format is drawn from;
* text, json, dot, html: each format drawn from it;
* html total: read + doc + html, in one process (what the goal counts);
* process: `syncd show --format html` as a fresh process, interpreter
  start-up included.

Goal: html total under 100 ms for the 242-host network (retiolum).

    python benchmarks/show_scale.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from syncd.cli import showformats
from syncd.cli.show import network_doc, read_worktree
from syncd.cli.showhtml import render_html

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ("retiolum", "icvpn", "ffs-ffsl3")
GOAL_MS = 100.0


def best(runs: int, work: Callable[[], object]) -> float:
    """The fastest of ``runs`` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def networks(scratch: Path) -> list[tuple[str, Path]]:
    corpora = Path(os.environ.get("SYNCD_CORPORA") or ROOT / "tests" / "corpora")
    found = [("examples/repo", ROOT / "examples" / "repo")]
    for name in CORPORA:
        hosts = corpora / name / "hosts"
        if not hosts.is_dir():
            sys.exit(f"{hosts}: no corpus: `make corpora` fetches them, or set SYNCD_CORPORA")
        shutil.copytree(hosts, scratch / name / "hosts")
        found.append((name, scratch / name))
    return found


def measure(name: str, repo: Path, runs: int) -> list[str]:
    files = len(list((repo / "hosts").iterdir()))
    read = best(runs, lambda: read_worktree(repo, None))
    network = read_worktree(repo, None)
    now = time.time()
    doc_ms = best(runs, lambda: network_doc(network, now))
    doc = network_doc(network, now)
    formats = {
        "text": showformats.render_text,
        "json": showformats.render_json,
        "dot": showformats.render_dot,
        "html": render_html,
    }
    drawn = {form: best(runs, lambda draw=draw: draw(doc)) for form, draw in formats.items()}  # type: ignore[misc]
    total = best(runs, lambda: render_html(network_doc(read_worktree(repo, None), now)))
    command = [sys.executable, "-m", "syncd", "show", str(repo), "--format", "html"]
    process = best(max(1, runs // 2), lambda: subprocess.run(command, check=True, capture_output=True))
    nodes = len(doc["nodes"]) if isinstance(doc["nodes"], list) else 0
    verdict = "" if name != "retiolum" else ("  ok" if total < GOAL_MS else f"  OVER {GOAL_MS:.0f} ms")
    cells = [f"{read:.1f}", f"{doc_ms:.1f}", *(f"{drawn[f]:.1f}" for f in formats), f"{total:.1f}", f"{process:.0f}"]
    return [name, str(files), str(nodes), *cells, verdict]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    header = ["network", "files", "nodes", "read", "doc", "text", "json", "dot", "html", "html total", "process", ""]
    with tempfile.TemporaryDirectory() as scratch:
        rows = [header] + [measure(name, repo, args.runs) for name, repo in networks(Path(scratch))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print("syncd show, milliseconds (best of runs); goal: html total < 100 ms for retiolum (242 files)")
    for row in rows:
        cells = [
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join(cells))
    if any("OVER" in row[-1] for row in rows):
        sys.exit("syncd show: the goal was missed")


if __name__ == "__main__":
    main()
