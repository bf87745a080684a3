"""Desired host files vs what is installed → ``Plan`` (pure).

The plan is data: ``syncd sync --dry-run`` prints it, ``apply`` carries it
out.  Ownership follows DESIGN.md §6: a file the repository has is made
equal to the repository's version whoever wrote it (syncd adopts it); a
file syncd installed earlier and the repository no longer has is removed;
any other file is left alone and reported as unmanaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Plan:
    add: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    adopt: tuple[str, ...] = ()  # already identical, not yet in the manifest
    unmanaged: tuple[str, ...] = ()
    desired: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def writes(self) -> tuple[str, ...]:
        return self.add + self.update

    @property
    def changes_files(self) -> bool:
        return bool(self.add or self.update or self.remove)

    def manifest(self) -> dict[str, str]:
        """What syncd owns once the plan is applied: name → sha256."""
        return {name: digest(data) for name, data in sorted(self.desired.items())}

    def describe(self) -> list[str]:
        lines = [f"+ {n}" for n in self.add] + [f"~ {n}" for n in self.update] + [f"- {n}" for n in self.remove]
        lines += [f"= {n} (identical; adopted)" for n in self.adopt]
        lines += [f"? {n} (not in the repository, not installed by syncd: left alone)" for n in self.unmanaged]
        return lines


def make_plan(
    desired: Mapping[str, bytes],
    installed: Mapping[str, str],
    manifest: Mapping[str, str],
) -> Plan:
    """``installed``: the valid-named regular files now in the hosts
    directory (name → sha256); ``manifest``: what syncd installed (the same)."""
    add, update, adopt = [], [], []
    for name in sorted(desired):
        current = installed.get(name)
        if current is None:
            add.append(name)
        elif current != digest(desired[name]):
            update.append(name)
        elif name not in manifest:
            adopt.append(name)
    remove = sorted(n for n in installed if n not in desired and n in manifest)
    unmanaged = sorted(n for n in installed if n not in desired and n not in manifest)
    return Plan(tuple(add), tuple(update), tuple(remove), tuple(adopt), tuple(unmanaged), dict(desired))
