"""Tree diffs on raw bytes (syncd/git/treediff.py) agree with a whole parse.

The trees are git's own serialization of random entries; their ids are drawn
rich in NUL bytes, spaces and octal digits, so that a false entry boundary
inside an id would be found if the diff ever trusted one."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.errors import ObjectFormatException
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, ObjectID
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.git import treediff
from syncd.git.objects import check_connected, nothing_known
from syncd.git.treediff import Trees, derive, parse_whole

FILE, DIR, LINK = 0o100644, 0o40000, 0o120000


@pytest.fixture(autouse=True)
def made_up_ids() -> Iterator[None]:
    """These tests name trees by made-up ids: none is kept for the next."""
    treediff.forget()
    yield
    treediff.forget()


Entries = dict[bytes, tuple[int, bytes]]


def serialize(entries: Entries) -> bytes:
    """A tree as git writes it: sorted by name, a directory as NAME/."""
    order = sorted(entries, key=lambda n: n + (b"/" if entries[n][0] == DIR else b""))
    return b"".join(b"%o %s\0%s" % (entries[n][0], n, entries[n][1]) for n in order)


def expected(entries: Entries) -> dict[str, tuple[int, ObjectID]]:
    return {n.decode(): (m, ObjectID(i.hex().encode())) for n, (m, i) in entries.items()}


ids = st.binary(min_size=20, max_size=20) | st.lists(
    st.sampled_from([0, 0x20, 0x30, 0x31, 0x34, 0x36, 0x37]), min_size=20, max_size=20
).map(bytes)
FIXED_NAMES = [b"a", b"a.b", b"a0", b"10064", b"0 x", b"node1", b"node10", b"node2", b"z" * 40]
names = st.sampled_from(FIXED_NAMES) | st.from_regex(rb"\Anode[0-9]{1,4}\Z")
trees = st.dictionaries(names, st.tuples(st.sampled_from([FILE, DIR, LINK]), ids), max_size=40)


@settings(max_examples=400, deadline=None)
@given(old=trees, new=trees, shared=trees)
def test_a_derived_tree_is_the_tree_parsed_whole(old: Entries, new: Entries, shared: Entries) -> None:
    before, after = {**shared, **old}, {**shared, **new}  # trees with entries in common, and edits
    parsed_old, raw_new = parse_whole(serialize(before)), serialize(after)
    derived = derive(parsed_old, raw_new)
    assert derived is not None
    tree, changed = derived
    whole = parse_whole(raw_new)
    assert tree.entries == whole.entries == expected(after)
    assert tree.starts == whole.starts
    a, b = expected(before), expected(after)
    assert changed == {n: (a.get(n), b.get(n)) for n in a.keys() | b.keys() if a.get(n) != b.get(n)}


@pytest.mark.parametrize("flatten", [2, 5, treediff.FLATTEN])
def test_trees_diff_carries_each_tree_over_to_the_next(flatten: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains of derived trees, cut (each whole map built once) every ``flatten`` derivations."""
    monkeypatch.setattr(treediff, "FLATTEN", flatten)
    entries: Entries = {b"node%d" % i: (FILE, bytes([i % 256]) * 20) for i in range(300)}
    raws = {}
    for step in range(50):  # edits, additions and removals, one after another
        if step % 3 == 0:
            entries[b"node%d" % (step * 7 % 300)] = (FILE, bytes([step]) * 19 + b"\0")
        elif step % 3 == 1:
            entries[b"new%d" % step] = (LINK, b"\0" * 20)
        else:
            entries.pop(next(iter(sorted(entries))))
        raws[ObjectID(b"%040d" % step)] = (serialize(entries), dict(entries))
    trees = Trees(lambda tree: raws[tree][0], cached=2)
    previous: dict[str, tuple[int, ObjectID]] = {}
    prev_id: ObjectID | None = None
    for step, (tree, (_raw, now)) in enumerate(raws.items()):
        changed = trees.diff(prev_id, tree)
        current = expected(now)
        assert changed == {
            n: (previous.get(n), current.get(n))
            for n in previous.keys() | current.keys()
            if previous.get(n) != current.get(n)
        }
        for name in ("node0", "node7", "node299", "new4", "nothing", *list(current)[:3]):  # the chain, unflattened
            assert trees.lookup(tree, name) == current.get(name)
        if step % 10 == 9:  # now and then the whole map, built from the chain
            assert trees.entries(tree) == current
        previous, prev_id = current, tree


def test_the_next_pass_takes_the_old_tree_parsed_but_reads_the_new() -> None:
    """A tree parsed by one pass's diff serves the next pass as the old side
    without being read; the new side is always read from the store at hand
    (a store that lacks it says so), even when it was parsed before."""
    one = {b"node%d" % i: (FILE, bytes([i]) * 20) for i in range(50)}
    two = {**one, b"node7": (FILE, b"\7" * 19 + b"\0")}
    three = {**two, b"node9": (FILE, b"\0" * 20)}
    ids = [ObjectID(b"%040d" % n) for n in (1, 2, 3)]
    raws = dict(zip(ids, map(serialize, (one, two, three)), strict=True))
    Trees(raws.__getitem__).diff(ids[0], ids[1])
    reads: list[ObjectID] = []

    def only_the_new(tree: ObjectID) -> bytes:
        reads.append(tree)
        if tree == ids[1]:
            raise KeyError(tree)  # parsed by the pass before: never read again as the old side
        return raws[tree]

    changed = Trees(only_the_new).diff(ids[1], ids[2])
    assert changed == {"node9": ((FILE, ObjectID(b"09" * 20)), (FILE, ObjectID(b"00" * 20)))}
    assert reads == [ids[2]]

    def lacking_the_new(tree: ObjectID) -> bytes:
        if tree == ids[2]:
            raise KeyError(tree)
        return raws[tree]

    with pytest.raises(KeyError):  # the new side, parsed just now, from a store that lacks it
        Trees(lacking_the_new).diff(ids[1], ids[2])


def test_a_name_twice_is_read_as_dulwich_reads_it() -> None:
    """A tree naming an entry twice is no base for a derived tree, and a
    change that names one twice falls back to a whole parse: the last entry
    of a name wins, as in dulwich's Tree."""
    old = parse_whole(serialize({b"a": (FILE, b"\1" * 20), b"b": (FILE, b"\2" * 20)}))
    twice = old.raw + b"100644 a\0" + b"\3" * 20
    assert derive(old, twice) is None
    doubled = parse_whole(twice)
    assert not doubled.unique and doubled.entries["a"] == (FILE, ObjectID(b"03" * 20))
    raws = {ObjectID(b"1" * 40): old.raw, ObjectID(b"2" * 40): twice}
    changed = Trees(raws.__getitem__).diff(ObjectID(b"1" * 40), ObjectID(b"2" * 40))
    assert changed == {"a": ((FILE, ObjectID(b"01" * 20)), (FILE, ObjectID(b"03" * 20)))}


def test_a_malformed_change_is_refused_as_dulwich_refuses_it() -> None:
    old = parse_whole(serialize({b"a": (FILE, b"\1" * 20), b"b": (FILE, b"\2" * 20)}))
    broken = old.raw[:-5]  # the last id cut short
    assert derive(old, broken) is None
    raws = {ObjectID(b"1" * 40): old.raw, ObjectID(b"2" * 40): broken}
    with pytest.raises(ObjectFormatException):
        Trees(raws.__getitem__).diff(ObjectID(b"1" * 40), ObjectID(b"2" * 40))


def test_a_mode_too_large_for_dulwich_is_refused_as_dulwich_refuses_it() -> None:
    """git reads such a mode wrapped to 32 bits (40000000000 as 0: a
    submodule; 100000100644 as a file) and pushes it; dulwich refuses it, and
    ``stat.S_ISDIR`` would overflow on it: the diff refuses it too."""
    old = parse_whole(serialize({b"a": (FILE, b"\1" * 20)}))
    for mode in (b"40000000000", b"100000100644"):
        broken = old.raw + mode + b" b\0" + b"\2" * 20
        assert derive(old, broken) is None
        raws = {ObjectID(b"1" * 40): old.raw, ObjectID(b"2" * 40): broken}
        with pytest.raises(ObjectFormatException, match="too large"):
            Trees(raws.__getitem__).diff(ObjectID(b"1" * 40), ObjectID(b"2" * 40))
    widest = old.raw + b"37777777777 b\0" + b"\2" * 20  # the largest mode dulwich reads
    derived = derive(old, widest)
    assert derived is not None and derived[1] == {"b": (None, (0xFFFFFFFF, ObjectID(b"02" * 20)))}


def test_the_connectivity_check_refuses_a_tree_that_does_not_parse(tmp_path: Path) -> None:
    """A pack is indexed unparsed (packindex): a malformed tree among the new
    objects is refused by the connectivity check that reads it, and a tree
    that differs from its parent's only in a malformed entry is, too."""
    store = DiskObjectStore.init(str(tmp_path / "objects"))
    blob = Blob.from_string(b"Subnet = 10.0.0.1\n")
    good = b"100644 a\0" + bytes.fromhex(blob.id.decode())
    store.add_object(blob)

    def loose(kind: str, data: bytes) -> ObjectID:
        raw = f"{kind} {len(data)}\0".encode() + data
        oid = ObjectID(hashlib.sha1(raw).hexdigest().encode())
        path = tmp_path / "objects" / oid.decode()[:2] / oid.decode()[2:]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(zlib.compress(raw))
        return oid

    def commit(tree: ObjectID, parent: ObjectID | None) -> ObjectID:
        head = f"tree {tree.decode()}\n" + (f"parent {parent.decode()}\n" if parent else "")
        who = "a <a@example.org> 1700000000 +0000"
        return loose("commit", f"{head}author {who}\ncommitter {who}\n\nx\n".encode())

    base = commit(loose("tree", good), None)
    assert check_connected(store, nothing_known, base) is None
    for broken in (good + b"1x0644 b\0" + bytes(20), good + b"100644 b\0" + bytes(5)):
        tip = commit(loose("tree", broken), base)
        found = check_connected(store, nothing_known, tip)
        assert found is not None and "does not parse" in found and "root tree of" in found, found
