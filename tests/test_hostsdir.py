"""plan + apply on a real directory, for arbitrary starting points (hypothesis):
whatever was installed before, one apply leaves exactly the repository's
files plus the files syncd never owned, and a second apply writes nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.node.hostsdir import FileStat, apply_plan, read_installed
from syncd.rules.plan import blob_id, make_plan

NAMES = st.sampled_from(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])
CONTENT = st.sampled_from([b"Subnet = 10.0.0.1\n", b"Subnet = 10.0.0.2\n", b"Port = 655\n", b""])


@settings(max_examples=150, deadline=None)
@given(
    desired=st.dictionaries(NAMES, CONTENT, max_size=5),
    on_disk=st.dictionaries(NAMES, CONTENT, max_size=5),
    owned=st.sets(NAMES, max_size=5),
)
def test_apply_converges_and_never_touches_what_it_does_not_own(
    desired: dict[str, bytes], on_disk: dict[str, bytes], owned: set[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.mkdir()
        for name, data in on_disk.items():
            (hosts / name).write_bytes(data)
        (hosts / "alpha-up").write_bytes(b"#!/bin/sh\n")  # never a node name: never touched
        # the previous manifest: what syncd installed (some of it since changed or gone)
        manifest = {name: FileStat(blob_id(on_disk.get(name, b"old")), 0, 0, 0, 0) for name in owned}
        installed, _ = read_installed(hosts, manifest)
        plan = make_plan(desired, installed, {n: f.blob for n, f in manifest.items()})
        new_manifest = apply_plan(hosts, plan, manifest)

        unowned = {n: d for n, d in on_disk.items() if n not in desired and n not in owned}
        result = {p.name: p.read_bytes() for p in hosts.iterdir()}
        assert result == {**unowned, **desired, "alpha-up": b"#!/bin/sh\n"}
        assert {n: f.blob for n, f in new_manifest.items()} == {n: blob_id(d) for n, d in desired.items()}
        for name in desired:
            assert (hosts / name).stat().st_mode & 0o777 == 0o644
        assert sorted(plan.unmanaged) == sorted(unowned)

        # a second pass over the result changes nothing and rewrites nothing
        stats = {p.name: p.stat().st_ino for p in hosts.iterdir()}
        installed, stale = read_installed(hosts, new_manifest)
        again = make_plan(desired, installed, {n: f.blob for n, f in new_manifest.items()})
        assert not again.changes_files and not again.adopt and not stale
        assert apply_plan(hosts, again, new_manifest) == new_manifest
        assert {p.name: p.stat().st_ino for p in hosts.iterdir()} == stats
