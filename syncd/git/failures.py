"""The errors of a fetch that the refs probe raises too (no dulwich here:
the unchanged pass of ``sync.agent`` runs on the probe alone): one URL
that did not answer in time, and the one error of a fetch that no URL
survived."""

from __future__ import annotations

from syncd.errors import (
    ConfigError,
    FetchError,
    FetchTimeoutError,
    FetchTooLargeError,
    NoBranchError,
    NotARepositoryError,
    SignatureError,
    SyncdError,
)


def timed_out(shown: str, timeout: float) -> FetchTimeoutError:
    """``shown`` (a redacted URL) gave no complete answer within ``repo.timeout``."""
    return FetchTimeoutError(f"{shown}: no complete answer within {timeout:g} s (repo.timeout)")


def fetch_failure(failures: list[SyncdError], branch: str) -> SyncdError:
    """The one error for a fetch no URL survived: a refused signature wins
    (exit 1: only a new commit can fix it); no URL having the branch is a
    config error; else the URLs' failures, of one class when they agree."""
    summary = "; ".join(f.message for f in failures)
    refusals = [f for f in failures if isinstance(f, SignatureError)]
    if refusals:
        return SignatureError("; ".join(f.message for f in refusals))
    if failures and all(isinstance(f, NoBranchError) for f in failures):
        return ConfigError(
            f"no repository URL has the branch {branch}: {summary}",
            hint="check repo.branch (and repo.url) in the node's config",
        )
    if failures and all(isinstance(f, NoBranchError | NotARepositoryError) for f in failures):
        return ConfigError(
            f"no repository URL could be fetched: {summary}",
            hint="check repo.url (and repo.mirrors) in the node's config: a local path must be a git repository "
            "(a bare repository or a clone); a server is named by its URL (ssh://, https://, git://)",
        )
    for kind in (FetchTimeoutError, FetchTooLargeError):
        if failures and all(isinstance(f, kind) for f in failures):
            return kind(f"no repository URL could be fetched: {summary}")
    return FetchError(f"no repository URL could be fetched: {summary}")
