"""Repository URLs as the transport reads them (no dulwich here: the
commands that only name a URL need not load it).

URLs may carry secrets (``https://user:token@host/...``): ``redact_url`` is
what every message and log line shows instead."""

from __future__ import annotations

import urllib.parse
from pathlib import Path


def redact_url(url: str) -> str:
    """``url`` with any password and query values replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    query = "&".join(f"{k}=***" if v else k for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def local_path(url: str) -> Path | None:
    """The directory a repository URL names on this machine (a path, or a
    ``file://`` URL), as git and dulwich read it; None for a remote URL
    (``ssh://``, ``https://``, ``git://``, or scp-like ``host:path``)."""
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if "://" in url or ":" in url.split("/", 1)[0]:
        return None
    return Path(url)
