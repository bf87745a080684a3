"""Malleable copies of a signed commit (see ``reencode_signature``)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.wire import run_git

REENCODINGS = ("blank-line", "sha256-header", "trailing-space", "crlf", "duplicate", "moved")


def reencode_signature(repo: Path, sha: str, how: str) -> str:
    """Write into ``repo`` a copy of the signed commit ``sha`` whose
    signature header is re-encoded, and return the copy's id (which differs).

    Both git (commit.c, parse_buffer_signed_by_header) and dulwich
    (``Commit.extract_signature``) take the signed payload to be the commit
    less every header starting with ``gpgsig`` and its continuation lines,
    wherever it stands; ssh-keygen decodes the armour with b64_pton, which
    skips whitespace.  Hence the variants:

    * ``blank-line``: an empty continuation line inside the armour;
    * ``sha256-header``: the same signature again in a ``gpgsig-sha256``
      header (the other hash's signature, ignored in a SHA-1 repository);
    * ``trailing-space``: a space at the end of one armour line;
    * ``crlf``: CR LF line ends inside the armour;
    * ``duplicate``: a second ``gpgsig`` header with the same signature
      (git and dulwich join the two into one signature text);
    * ``moved``: the ``gpgsig`` header moved before ``author``.
    """
    if how not in REENCODINGS:
        raise ValueError(f"unknown re-encoding {how!r}; known: {', '.join(REENCODINGS)}")
    raw = run_git(repo, "cat-file", "commit", sha)
    head, sep, body = raw.partition(b"\n\n")
    lines = [line + b"\n" for line in head.split(b"\n")]
    start = next((i for i, line in enumerate(lines) if line.startswith(b"gpgsig ")), None)
    if start is None:
        raise ValueError(f"commit {sha} in {repo} has no gpgsig header")
    end = start + 1
    while end < len(lines) and lines[end].startswith(b" "):
        end += 1
    block = lines[start:end]
    if how == "blank-line":
        block.insert(2, b" \n")
    elif how == "trailing-space":
        block[1] = block[1][:-1] + b" \n"
    elif how == "crlf":
        block = [block[0]] + [line[:-1] + b"\r\n" for line in block[1:-1]] + [block[-1]]
    elif how == "sha256-header":
        block += [b"gpgsig-sha256" + block[0][len(b"gpgsig") :], *block[1:]]
    elif how == "duplicate":
        block += block
    rest = lines[:start] + lines[end:]
    if how == "moved":
        author = next(i for i, line in enumerate(rest) if line.startswith(b"author "))
        rest[author:author] = block
    else:
        rest[start:start] = block
    forged = b"".join(rest)[:-1] + sep + body
    return run_git(repo, "hash-object", "-t", "commit", "-w", "--literally", "--stdin", stdin=forged).decode().strip()
