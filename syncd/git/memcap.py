"""The memory a fetch child may use (``git/fetch.py`` forks one per URL).

A pack is small on the wire but its deltas may expand: dulwich keeps each
delta base until every delta on it is resolved, so a crafted chain (a leaf
delta before each link) makes a few KiB of pack hold one whole object per
level while it is indexed.  The child runs under an address-space limit;
past it an allocation raises MemoryError, that URL's fetch fails (exit 3,
naming the URL) and the agent is untouched.
"""

from __future__ import annotations

import os
import resource

MEMORY_MIN = 256 << 20  # the least a fetch child may grow by, whatever repo.max_fetch_bytes


def memory_budget(max_fetch_bytes: int) -> int:
    """How much the fetch child's address space may grow: four times
    ``repo.max_fetch_bytes``, at least 256 MiB.  A pack is small on the wire
    but its deltas may expand: a crafted chain of deltas (each level kept
    until its children are resolved) would otherwise make a few KiB of pack
    hold gigabytes while it is indexed."""
    return max(MEMORY_MIN, 4 * max_fetch_bytes)


def cap_memory(max_fetch_bytes: int) -> None:
    """In the child: RLIMIT_AS at what it holds now (inherited from the
    agent) plus ``memory_budget``; past it, an allocation raises
    MemoryError and the URL's fetch fails, leaving the agent untouched."""
    with open("/proc/self/statm", "rb") as fh:
        held = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = held + memory_budget(max_fetch_bytes)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def exhausted(max_fetch_bytes: int) -> bool:
    """Whether the child came close to its limit: an allocation that fails
    in a native extension (dulwich's Rust delta code) raises its own error,
    not MemoryError.  The peak address space (``VmPeak``) within a quarter
    of the budget of the limit says what the failure was."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return False
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmPeak:"):
                peak = int(line.split()[1]) * 1024
                return peak >= soft - memory_budget(max_fetch_bytes) // 4
    return False


def memory_message(max_fetch_bytes: int) -> str:
    return (
        f"indexing what the server sent needed more than {memory_budget(max_fetch_bytes) >> 20} MiB of memory "
        "(4x repo.max_fetch_bytes): a pack built to exhaust memory, or raise repo.max_fetch_bytes"
    )
