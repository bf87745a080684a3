"""Desired host files vs what is installed → ``Plan`` (pure).

The plan is data: ``syncd sync --dry-run`` prints it (with ``Plan.diff``,
given a reader of the installed files), ``apply`` carries it out.
Ownership follows docs/architecture.md ("Safety rules"): a file the repository has is made equal to
the repository's version whoever wrote it (syncd adopts it); a file syncd
installed earlier and the repository no longer has is removed; any other
file is left alone and reported as unmanaged.  A file tincd 1.1 appended a
learned Ed25519 key to is the repository's version (``learnedkey``): kept,
and reported with the line to add to the repository.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace

from syncd.tinc import learnedkey


def blob_id(data: bytes) -> str:
    """git's id for a blob with these bytes: the one name syncd gives a host
    file's content, in the tree, the manifest and the parse cache alike."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True, slots=True)
class Plan:
    add: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    adopt: tuple[str, ...] = ()  # already identical, not yet in the manifest
    unmanaged: tuple[str, ...] = ()
    desired: Mapping[str, bytes] = field(default_factory=dict)  # the bytes of each file to write
    ids: Mapping[str, str] = field(default_factory=dict)  # every desired name → blob id
    # the repository's version plus an Ed25519 key tincd learned: name → key (kept, not written)
    learned: Mapping[str, str] = field(default_factory=dict)

    @property
    def writes(self) -> tuple[str, ...]:
        return self.add + self.update

    @property
    def changes_files(self) -> bool:
        return bool(self.add or self.update or self.remove)

    def manifest(self) -> dict[str, str]:
        """What syncd owns once the plan is applied: name → blob id."""
        return dict(sorted(self.ids.items()))

    def describe(self) -> list[str]:
        lines = [f"+ {n}" for n in self.add] + [f"~ {n}" for n in self.update] + [f"- {n}" for n in self.remove]
        lines += [f"= {n} (identical; adopted)" for n in self.adopt]
        lines += [
            f"= {n} (tincd appended the Ed25519 key it learned: kept; add to the repository's file: "
            f"{learnedkey.line(key)})"
            for n, key in sorted(self.learned.items())
        ]
        lines += [f"? {n} (not in the repository, not installed by syncd: left alone)" for n in self.unmanaged]
        return lines

    def diff(self, read_installed: Callable[[str], bytes | None]) -> list[list[str]]:
        """A unified diff of each file the plan changes, installed → desired,
        in ``describe``'s order: two header lines with git's labels
        (``a/hosts/NAME``, ``b/hosts/NAME``, ``/dev/null`` for no file), then
        the hunks.  ``read_installed(name)`` gives the installed bytes
        (``apply.installed_reader``), None if the file cannot be read."""
        diffs: list[list[str]] = []
        for name in self.add + self.update + self.remove:
            old = None if name in self.add else read_installed(name)
            if old is None and name not in self.add:
                diffs.append([f"(hosts/{name}: the installed file cannot be read)"])
                continue
            new = self.desired.get(name)
            lines = difflib.unified_diff(
                _diff_lines(old),
                _diff_lines(new),
                "/dev/null" if old is None else f"a/hosts/{name}",
                "/dev/null" if new is None else f"b/hosts/{name}",
            )
            text = "".join(lines)
            if text:  # empty when the file changed back since the plan was made
                diffs.append(text.splitlines())
        return diffs


# Control characters other than tab: a host file must not move the cursor
# or recolour the operator's terminal when its diff is shown.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _diff_lines(data: bytes | None) -> list[str]:
    """Lines split at "\\n" only (a stray "\\r" shows), each ending in one; a
    last line without it carries git's marker, so that adding the newline
    shows as a change."""
    if data is None:
        return []
    text = data.decode("utf-8", "replace")
    lines = [_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line) + "\n" for line in text.split("\n")]
    last = lines.pop()
    if last != "\n":
        lines.append(last + "\\ No newline at end of file\n")
    return lines


def make_plan(
    desired: Mapping[str, bytes],
    installed: Mapping[str, str],
    manifest: Mapping[str, str],
    ids: Mapping[str, str] | None = None,
) -> Plan:
    """``desired``: name → bytes of the repository's host files (a lazy
    mapping may load them: only the files to write are read); ``installed``:
    the valid-named regular files now in the hosts directory (name → blob
    id); ``manifest``: what syncd installed (the same); ``ids``: the desired
    files' blob ids when the tree gave them (else they are computed)."""
    known = ids or {}
    ids = {name: known.get(name) or blob_id(desired[name]) for name in desired}
    add, update, adopt = [], [], []
    for name in sorted(desired):
        current = installed.get(name)
        if current is None:
            add.append(name)
        elif current != ids[name]:
            update.append(name)
        elif name not in manifest:
            adopt.append(name)
    remove = sorted(n for n in installed if n not in desired and n in manifest)
    unmanaged = sorted(n for n in installed if n not in desired and n not in manifest)
    data = {name: desired[name] for name in add + update}
    return Plan(tuple(add), tuple(update), tuple(remove), tuple(adopt), tuple(unmanaged), data, ids)


def keep_learned(
    plan: Plan, read_installed: Callable[[str], bytes | None], changed: Collection[str] | None = None
) -> Plan:
    """``plan`` without the updates that would only take away an Ed25519 key
    tincd 1.1 appended (``learnedkey.appended_key``): those files are kept
    and listed in ``Plan.learned``.  ``read_installed(name)`` gives the
    installed bytes.  Only files the plan would update are read, and of
    those only the ``changed`` ones (when given): files that changed since
    syncd recorded them, or that it never recorded, or that it recorded with
    a key tincd appended.  A file exactly as syncd wrote it carries nothing
    tincd appended."""
    learned: dict[str, str] = {}
    for name in plan.update if changed is None else (n for n in plan.update if n in changed):
        installed = read_installed(name)
        key = None if installed is None else learnedkey.appended_key(plan.desired[name], installed)
        if key is not None:
            learned[name] = key
    if not learned:
        return plan
    update = tuple(n for n in plan.update if n not in learned)
    desired = {n: data for n, data in plan.desired.items() if n not in learned}
    return replace(plan, update=update, desired=desired, learned=learned)
