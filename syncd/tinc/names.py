"""What a valid node name is, and which file names tinc runs as scripts (pure)."""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,64}\Z")  # check_id() in src/utils.c, plus a length cap
NAME_RULE = "1-64 of A-Z, a-z, 0-9, _"  # what a refusal of a name says it must be

# tincd runs hosts/NAME-up and hosts/NAME-down as the node NAME comes and
# goes (execute_script() in src/graph.c): what each suffix means, for messages.
SCRIPT_SUFFIXES = {"-up": "connects", "-down": "disconnects"}


def is_node_name(name: str) -> bool:
    """The one check of a node name, wherever one is read: tincd's
    ``check_id()`` (letters, digits, ``_``), at most 64 characters."""
    return _NAME_RE.match(name) is not None


def script_suffix(name: str) -> str | None:
    """``-up`` / ``-down`` when ``name`` is ``NAME-up`` / ``NAME-down`` for a
    valid node NAME (a script tincd runs), else None."""
    for suffix in SCRIPT_SUFFIXES:
        if name.endswith(suffix) and is_node_name(name[: -len(suffix)]):
            return suffix
    return None


def is_script_name(name: str) -> bool:
    """``NAME-up`` / ``NAME-down``: scripts tincd runs when NAME comes and goes."""
    return script_suffix(name) is not None
