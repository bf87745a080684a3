"""The store's own refs, by name (no dulwich here: the unchanged pass of
``sync.agent`` reads them as loose ref files without opening the store)."""

from __future__ import annotations

APPLIED_REF_NAME = "refs/heads/syncd-applied"  # the last commit this node applied
FETCHED_REF_NAME = "refs/heads/syncd-fetched"  # the tip of the last URL that offered one
