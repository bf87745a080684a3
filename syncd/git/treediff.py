"""Trees read and compared on their raw bytes: a commit costs what it changes.

A git tree is a run of entries, each ``MODE SP NAME NUL ID`` (20 bytes of
id).  A commit that edits one host file of a 10,000-node network writes a
hosts tree that differs from its parent's in one entry, and the two trees'
bytes are equal before that entry and after it.  ``Trees.diff`` finds that
span from the common prefix and suffix of the raw bytes and the entry
offsets of the tree already parsed, parses only the entries inside it, and
carries the rest of the parsed tree over: the cost is the bytes compared
(memcmp) and the entries changed, not the size of the network.

Entry offsets carried over are exact, not guessed: the bytes before the
span are the same in both trees, so they parse into the same entries at the
same offsets; a parse of the new tree from the span's first entry that lands
on an entry boundary of the old tree inside the common suffix continues
exactly as the old tree's did.  A tree that names an entry twice is parsed
whole each time and compared as dulwich reads it (the last entry of a name
wins), as a tree with no known relative is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

from dulwich.objects import ObjectID, parse_tree

Entry = tuple[int, ObjectID]  # mode, id (hex)
RawTree = Callable[[ObjectID], bytes]  # a tree's raw bytes, size- and type-checked by the caller
ID_BYTES = 20
MAX_MODE = 0xFFFFFFFF  # dulwich's parser refuses a larger mode ("number too large"), and stat.S_IS* overflow
CACHED_TREES = 16  # parsed trees kept (a 10k-node hosts tree is about a megabyte parsed)
RECENT_TREES = 4  # parsed trees kept from one pass to the next (the applied tip's root and hosts trees)
FLATTEN = 64  # derived trees chained before one holds its whole map again (a chain holds maps only)


class Names:
    """A tree's entries by name: a whole map, or the changes (``overlay``:
    name to entry, None for one removed) over the entries of the tree it was
    derived from.  The whole map is built when first asked for, or after
    ``FLATTEN`` derivations in a row, so that a commit does not copy the
    entries of every node; a chain holds only maps, never the trees' bytes."""

    __slots__ = ("_base", "_depth", "_entries", "_overlay")

    def __init__(
        self,
        entries: dict[str, Entry] | None,
        base: Names | None = None,
        overlay: dict[str, Entry | None] | None = None,
    ) -> None:
        self._entries, self._base, self._overlay = entries, base, overlay
        self._depth: int = 0 if base is None else base._depth + 1

    @property
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            overlays: list[dict[str, Entry | None]] = []
            node: Names = self
            while node._entries is None:  # one copy of the nearest whole map, not one per link
                assert node._base is not None and node._overlay is not None
                overlays.append(node._overlay)
                node = node._base
            entries = dict(node._entries)
            for overlay in reversed(overlays):
                for name, entry in overlay.items():
                    if entry is None:
                        entries.pop(name, None)
                    else:
                        entries[name] = entry
            self._entries, self._base, self._overlay, self._depth = entries, None, None, 0
        return self._entries

    def get(self, name: str) -> Entry | None:
        """The entry ``name``, without building the whole map."""
        node = self
        while node._entries is None:
            assert node._base is not None and node._overlay is not None
            if name in node._overlay:
                return node._overlay[name]
            node = node._base
        return node._entries.get(name)


class Parsed:
    """One tree: its raw bytes, the offset of each entry (then the length),
    and its entries by name (``Names``).  ``unique``: no name twice, so
    ``entries`` is the tree, and a child tree may be derived from it."""

    __slots__ = ("names", "raw", "starts", "unique")

    def __init__(self, raw: bytes, starts: list[int], names: Names, unique: bool) -> None:
        self.raw, self.starts, self.names, self.unique = raw, starts, names, unique

    @property
    def entries(self) -> dict[str, Entry]:
        return self.names.entries

    def get(self, name: str) -> Entry | None:
        """The entry ``name``, without building the whole map."""
        return self.names.get(name)


def parse_whole(raw: bytes) -> Parsed:
    """Every entry of a tree (dulwich's parser: a malformed tree raises
    ``ObjectFormatException``), and their offsets."""
    items = list(parse_tree(raw, ID_BYTES))  # dulwich's C parser gives a list already
    entries = cast(dict[str, Entry], {name.decode("utf-8", "replace"): (mode, sha) for name, mode, sha in items})
    starts = []
    pos, end = 0, len(raw)
    while pos < end:
        starts.append(pos)
        pos = raw.index(b"\0", pos) + 1 + ID_BYTES
    starts.append(end)
    return Parsed(raw, starts, Names(entries), len(entries) == len(items) == len(starts) - 1)


def _entry_at(raw: bytes, pos: int) -> tuple[str, Entry, int]:
    """The entry at ``pos`` and where the next one starts; ValueError when
    the bytes there are not an entry as ``parse_tree`` reads one."""
    space = raw.index(b" ", pos)
    nul = raw.index(b"\0", space)
    end = nul + 1 + ID_BYTES
    if end > len(raw):
        raise ValueError("an entry runs past the tree's end")
    digits = raw[pos:space]
    if not digits.isdigit():  # int() would also take "+644" or "100_644"
        raise ValueError("a mode that is not octal digits")
    mode = int(digits, 8)
    if mode > MAX_MODE:
        raise ValueError("a mode that does not fit in 32 bits")
    return raw[space + 1 : nul].decode("utf-8", "replace"), (mode, ObjectID(raw[nul + 1 : end].hex().encode())), end


def common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` share (binary search: about
    twice the shorter's bytes compared, at memcmp speed, none copied)."""
    lo, hi = 0, min(len(a), len(b))
    view = memoryview(b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.startswith(view[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many trailing bytes ``a`` and ``b`` share, at most ``limit``."""
    la, lb = len(a), len(b)
    lo, hi = 0, limit
    view = memoryview(b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.endswith(view[lb - mid : lb - lo], la - mid, la - lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


Changed = dict[str, tuple[Entry | None, Entry | None]]  # name -> (entry in the old tree, in the new)


def derive(old: Parsed, raw: bytes) -> tuple[Parsed, Changed] | None:
    """The tree ``raw`` parsed by way of ``old`` (``unique``), and the
    entries that differ; None when ``raw`` must be parsed whole (it names an
    entry twice, or is malformed where it differs)."""
    prefix = common_prefix(old.raw, raw)
    suffix = common_suffix(old.raw, raw, min(len(old.raw), len(raw)) - prefix)
    shift = len(raw) - len(old.raw)
    first = bisect_right(old.starts, prefix) - 1  # the old entry holding the first differing byte (or old's end)
    start = old.starts[first]
    resume = bisect_left(old.starts, len(old.raw) - suffix)  # old boundaries inside the common suffix
    new_starts: list[int] = []
    new_entries: dict[str, Entry] = {}
    pos, at = start, resume
    try:
        while True:
            while at < len(old.starts) and old.starts[at] + shift < pos:
                at += 1
            if at < len(old.starts) and old.starts[at] + shift == pos:
                break  # back in step with the old tree: the rest is the same
            if pos >= len(raw):
                return None  # past the end without meeting a boundary: only a whole parse tells
            name, entry, end = _entry_at(raw, pos)
            if name in new_entries:
                return None
            new_starts.append(pos)
            new_entries[name] = entry
            pos = end
    except ValueError:
        return None
    gone = dict(_entry_at(old.raw, p)[:2] for p in old.starts[first:at])
    if any(name not in gone and old.get(name) is not None for name in new_entries):
        return None  # a name twice: dulwich's reading decides
    if old.names._depth >= FLATTEN:
        old.entries  # noqa: B018 (builds old's whole map: the chain stops here)
    overlay: dict[str, Entry | None] = dict.fromkeys(gone)
    overlay.update(new_entries)
    tail = old.starts[at:] if shift == 0 else [p + shift for p in old.starts[at:]]
    parsed = Parsed(raw, old.starts[:first] + new_starts + tail, Names(None, old.names, overlay), True)
    changed: Changed = {}
    for name in gone.keys() | new_entries.keys():
        a, b = gone.get(name), new_entries.get(name)
        if a != b:
            changed[name] = (a, b)
    return parsed, changed


class _Recent:
    """The trees a diff parsed last in this process, whatever the store: the
    next pass (``syncd run``) compares its first new commit with the tree
    applied last, which it parsed then.  Exact: a tree's id names its bytes,
    and a tree is parsed from its bytes alone.  Only ever the old side of a
    diff: the new side of a diff is read from the store at hand, so that
    a store that lacks it is noticed (``objects.check_connected``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.trees: OrderedDict[ObjectID, Parsed] = OrderedDict()

    def get(self, tree: ObjectID) -> Parsed | None:
        return self.trees.get(tree)

    def keep(self, tree: ObjectID, parsed: Parsed) -> Parsed:
        self.trees[tree] = parsed
        self.trees.move_to_end(tree)
        if len(self.trees) > self.size:
            self.trees.popitem(last=False)
        return parsed


_RECENT = _Recent(RECENT_TREES)


def forget() -> None:
    """Drop the trees kept from one pass to the next (for tests whose tree
    ids are made up, not the hashes of their bytes)."""
    _RECENT.trees.clear()


class Trees:
    """Parsed trees of one store for one pass (a few kept, most recent
    first out last), and the one-level difference of two of them."""

    def __init__(self, raw: RawTree, cached: int = CACHED_TREES) -> None:
        self.raw = raw
        self.cached = cached
        self._parsed: OrderedDict[ObjectID, Parsed] = OrderedDict()  # popped from the front in O(1)

    def parsed(self, tree: ObjectID) -> Parsed:
        known = self._parsed.pop(tree, None)
        if known is None:
            known = parse_whole(self.raw(tree))
        return self._keep(tree, known)

    def entries(self, tree: ObjectID) -> dict[str, Entry]:
        """A tree's entries by name (mode, id)."""
        return self.parsed(tree).entries

    def lookup(self, tree: ObjectID, name: str) -> Entry | None:
        """One entry of a tree."""
        return self.parsed(tree).get(name)

    def diff(self, old: ObjectID | None, new: ObjectID | None) -> Changed:
        """The names whose entries differ between two trees (None: empty),
        with their entries in each."""
        if old == new:
            return {}
        if old is None:
            assert new is not None
            return {n: (None, e) for n, e in self.entries(new).items()}
        if new is None:
            return {n: (e, None) for n, e in self.entries(old).items()}
        before = self._parsed.pop(old, None) or _RECENT.get(old)
        before = self._keep(old, before if before is not None else parse_whole(self.raw(old)))
        after = self._parsed.pop(new, None)
        if before.unique:
            derived = derive(before, self.raw(new) if after is None else after.raw)
            if derived is not None:
                _RECENT.keep(new, self._keep(new, derived[0] if after is None else after))
                return derived[1]
        after = _RECENT.keep(new, self._keep(new, after if after is not None else parse_whole(self.raw(new))))
        names = before.entries.keys() | after.entries.keys()
        return {
            n: (before.entries.get(n), after.entries.get(n))
            for n in names
            if before.entries.get(n) != after.entries.get(n)
        }

    def _keep(self, tree: ObjectID, parsed: Parsed) -> Parsed:
        self._parsed[tree] = parsed  # the most recent last
        if len(self._parsed) > self.cached:
            self._parsed.popitem(last=False)
        return parsed
