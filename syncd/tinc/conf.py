"""tincd's line reader: ``read_config_file()`` and ``readline()`` in tinc's
``src/conf.c`` (1.0.36 and 1.1), as bytes in, stored variables and findings
out (pure).  What a variable means is for the caller (``hostfile``).

* ``readline()`` uses ``fgets()`` into a 2049-byte buffer: a line longer than
  2048 bytes is cut, and the rest is parsed as a line of its own.  It strips
  the ``\\n`` and then one ``\\r``.
* Lines that are empty or start with ``#`` are skipped (no trailing comments).
* A line starting with ``-----BEGIN`` opens a PEM block that is skipped up to
  a line starting with ``-----END``.
* Trailing spaces and tabs are stripped.  The variable runs to the first
  space, tab or ``=``; then blanks, one optional ``=``, blanks; the rest is
  the value.  An indented line therefore has the empty variable name (and is
  ignored); ``Subnet: x`` is the unknown variable ``Subnet:``.
* A variable with no value makes tincd stop reading the file: everything
  after it is never seen, and the peer's connection is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from syncd.findings import Finding, error, warning

MAX_LINE_BYTES = 2048  # fgets(buffer, MAX_STRING_SIZE = 2049, fp)


class Entry(NamedTuple):
    """One ``Variable = value`` line that tincd stores."""

    line: int
    variable: str  # as written
    value: str


_new_entry = tuple.__new__  # one per line of every file: skips the namedtuple's Python-level __new__


class PemBlock(NamedTuple):
    begin: int  # line numbers, 1-based
    end: int | None  # None: never terminated
    label: str  # "RSA PUBLIC KEY" for "-----BEGIN RSA PUBLIC KEY-----"
    body: tuple[str, ...]


def physical_lines(path: str, data: bytes) -> tuple[Iterable[tuple[int, str]], list[Finding]]:
    """``readline()``: physical lines → the ``(line number, text)`` chunks
    tincd parses, plus the findings about the lines themselves.

    Almost every host file is short ASCII without CR or NUL: for those the
    chunks are just the lines.  Anything else takes the exact path below.
    """
    if data.isascii() and data.find(b"\r") < 0 and data.find(b"\0") < 0:
        lines = data.decode("ascii").split("\n")
        if lines[-1] == "":
            lines.pop()
        if len(data) <= MAX_LINE_BYTES or max(map(len, lines), default=0) <= MAX_LINE_BYTES:
            return enumerate(lines, 1), []
    chunks: list[tuple[int, str]] = []
    problems: list[Finding] = []
    raw_lines = data.split(b"\n")
    ends_with_newline = raw_lines[-1] == b""
    if ends_with_newline:
        raw_lines.pop()
    bad_encoding_line = 0
    for index, raw in enumerate(raw_lines):
        number = index + 1
        has_newline = ends_with_newline or index < len(raw_lines) - 1
        if not bad_encoding_line:
            if b"\0" in raw:
                bad_encoding_line = number
            else:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad_encoding_line = number
        pieces = [raw[i : i + MAX_LINE_BYTES] for i in range(0, len(raw), MAX_LINE_BYTES)] or [b""]
        if has_newline and pieces[-1].endswith(b"\r"):
            pieces[-1] = pieces[-1][:-1]
        if len(pieces) > 1 and any(pieces[1:]):
            problems.append(
                error(
                    path,
                    number,
                    "syntax",
                    f"line is {len(raw)} bytes; tincd reads at most {MAX_LINE_BYTES} bytes a line and "
                    "parses the rest as a separate line",
                )
            )
        for piece in pieces:
            # C strings end at NUL: tincd never sees what follows one
            chunks.append((number, piece.split(b"\0", 1)[0].decode("utf-8", "replace")))
    if bad_encoding_line:
        kind = "a NUL byte" if b"\0" in raw_lines[bad_encoding_line - 1] else "bytes that are not UTF-8"
        problems.append(error(path, bad_encoding_line, "encoding", f"line holds {kind}; host files must be UTF-8 text"))
    return chunks, problems


class ConfText(NamedTuple):
    """What the reader keeps of a file besides its variables."""

    pem_blocks: list[PemBlock]
    stopped_at: int | None  # the line where tincd stops reading
    line_count: int


# read_config_file(): the variable runs to the first space, tab or '=', then
# blanks, one optional '=', blanks.  Applied after trailing blanks are cut.
_SPLIT = re.compile(r"([^\t =]*)[\t ]*(?:=[\t ]*)?")
_NOT_PLAIN = ("", " ", "\t")  # a value starting so would lose more blanks to _SPLIT


def plain_entries(data: bytes) -> list[Entry] | None:
    """The entries of a file every line of which is empty, a comment, or the
    plain ``Name = value``; ``None`` for any other file (``read_lines``
    reads those).  Most host files are like this: read so, they cost a
    third less than line by line.

    Exact: ASCII without CR or NUL and no line over ``MAX_LINE_BYTES`` makes
    ``physical_lines`` return the lines as they are, with no finding (and no
    byte order mark).  A plain line (an alphanumeric name, " = ", a value
    that starts with no blank) splits alike both ways (``_SPLIT``); it
    opens no PEM block (it starts with no "-") and stops nothing (its value
    is not empty), so no line after it is read differently either."""
    if not data.isascii():
        return None
    text = data.decode("ascii")  # a str: "in" on bytes raises and clears a TypeError first (CPython 3.11)
    if "\r" in text or "\0" in text or text.startswith("-") or "\n-" in text:
        return None  # (a PEM block, the usual reason, is seen before reading any line)
    lines = text.split("\n")
    if len(text) > MAX_LINE_BYTES and max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line or line[0] == "#":
            continue
        variable, sep, value = line.rstrip(" \t").partition(" = ")
        if not sep or not variable.isalnum() or value[:1] in _NOT_PLAIN:
            return None
        entries.append(_new_entry(Entry, (number, variable, value)))
    return entries


def line_count_of(data: bytes) -> int:
    """The number of lines, a last one without its newline included."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def read_config(path: str, data: bytes, findings: list[Finding], on_entry: Callable[[Entry], None]) -> ConfText:
    """Read ``data`` line by line as tincd does: each stored variable goes to
    ``on_entry`` as it is read, each finding (and those of ``on_entry``, in
    line order) to ``findings``."""
    plain = plain_entries(data)
    if plain is None:
        return read_lines(path, data, findings, on_entry)
    for entry in plain:
        on_entry(entry)
    return ConfText([], None, line_count_of(data))


def read_lines(path: str, data: bytes, findings: list[Finding], on_entry: Callable[[Entry], None]) -> ConfText:
    """``read_config`` for any file, line by line."""
    chunks, problems = physical_lines(path, data)
    findings.extend(problems)
    if data.startswith(b"\xef\xbb\xbf"):
        findings.append(
            error(
                path,
                1,
                "encoding",
                "the file starts with a UTF-8 byte order mark: tincd reads it as part of the first "
                "variable's name and ignores that line; save the file without a BOM",
            )
        )
    line_count = line_count_of(data)
    pem_blocks: list[PemBlock] = []
    stopped_at: int | None = None
    pem: PemBlock | None = None
    pem_body: list[str] = []
    for line, text in chunks:
        if not text or text[0] == "#":
            continue
        if text[0] == "-":
            if pem is not None:
                if text.startswith("-----END"):
                    pem_blocks.append(PemBlock(pem.begin, line, pem.label, tuple(pem_body)))
                    pem = None
                else:
                    pem_body.append(text)
                continue
            if text.startswith("-----BEGIN"):
                label = text[len("-----BEGIN") :].strip(" \t\r")
                pem = PemBlock(line, None, label.removesuffix("-----").strip(), ())
                pem_body = []
                continue
            if text.startswith("-----END"):
                findings.append(
                    warning(path, line, "syntax", "PEM end line without a BEGIN line; tincd ignores the line")
                )
                continue
        elif pem is not None:
            pem_body.append(text)
            continue

        if stopped_at is not None:
            continue  # tincd never reads past the stop; only PEM blocks (OpenSSL) still count
        stripped = text.rstrip(" \t")
        variable, sep, value = stripped.partition(" = ")
        if not sep or not variable.isalnum() or value[:1] in _NOT_PLAIN:
            # not the plain "Name = value" (where both ways agree): the general split
            match = _SPLIT.match(stripped)
            assert match is not None  # every group in the pattern may be empty
            variable, value = match[1], stripped[match.end() :]
        if not value:
            findings.append(_stop(path, line, variable, line_count))
            stopped_at = line
        elif not variable:
            findings.append(
                error(path, line, "syntax", "indented line: tincd reads it as a nameless variable and ignores it")
            )
        else:
            on_entry(_new_entry(Entry, (line, variable, value)))

    if pem is not None:
        findings.append(_unclosed(path, pem))
        pem_blocks.append(PemBlock(pem.begin, None, pem.label, tuple(pem_body)))
    return ConfText(pem_blocks, stopped_at, line_count)


def _stop(path: str, line: int, variable: str, line_count: int) -> Finding:
    what = f"no value for {variable!r}" if variable else "a line of only blanks"
    if variable.startswith("-----"):
        what = f"{variable!r} is not a complete PEM line"
    unread = f" (lines {line + 1}-{line_count} are never read)" if line < line_count else ""
    return error(
        path, line, "syntax", f"{what}: tincd stops reading the file here{unread} and refuses this node's connection"
    )


def _unclosed(path: str, pem: PemBlock) -> Finding:
    return error(
        path,
        pem.begin,
        "syntax",
        f"the {pem.label or 'PEM'} block is never closed with an -----END line: tincd ignores everything after it",
    )
