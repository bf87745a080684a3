"""SSH commit signatures: git's allowed_signers format, and the check of a
signed git object against it (pure).

This is the trust anchor of syncd, so it does not shell out to ssh-keygen and
does not use dulwich's verify helpers (which accept unsigned commits when
given no key ids).  The signature itself is ``sshsig`` (OpenSSH's
PROTOCOL.sshsig); the allowed signers follow the ALLOWED SIGNERS section of
ssh-keygen(1), which is the file ``git config gpg.ssh.allowedSignersFile``
reads.  An allowed_signers line is ``principals [options] keytype key
[comment]``, read exactly as OpenSSH's sshsig.c reads it (see below), except
that ``cert-authority`` is refused (syncd pins keys, not CAs), and so is a
line OpenSSH would skip as malformed.  As in ``git verify-commit``, a key's
validity window is checked at the commit's committer time.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from syncd.errors import AllowedSignersError, SignatureError
from syncd.signing.sshsig import PLAIN_KEY_TYPES, key_type_of, parse_signature, unsupported, verify

# --- allowed_signers ----------------------------------------------------------------
#
# Parsed as OpenSSH's sshsig.c parses it (parse_principals_key_and_options),
# because git hands the same file to `ssh-keygen -Y find-principals` and
# `ssh-keygen -Y verify`: syncd must never trust a key those would not.  Where
# OpenSSH skips a malformed line, syncd refuses the file instead.


@dataclass(frozen=True, slots=True)
class AllowedSigner:
    patterns: str  # the principals field: a match_pattern_list() pattern list
    public_key: bytes  # wire-format blob
    key_type: str
    namespaces: str | None  # a match_pattern_list() pattern list; None: any namespace
    valid_after: int | None  # Unix seconds
    valid_before: int | None
    line: int

    @property
    def principals(self) -> tuple[str, ...]:
        """What ``ssh-keygen -Y find-principals`` prints for this line."""
        return tuple(self.patterns.split(","))

    def allows_principal(self, principal: str) -> bool:
        return match_pattern_list(principal, self.patterns)

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def valid_at(self, when: int) -> bool:
        return (self.valid_after is None or when >= self.valid_after) and (
            self.valid_before is None or when <= self.valid_before
        )


def match_pattern(string: bytes, pattern: bytes) -> bool:
    """OpenSSH's match_pattern(): ``*`` is any run of bytes, ``?`` one byte,
    every other byte (``[`` and ``]`` too) itself.  Iterative: the last ``*``
    absorbs one more byte on each mismatch, so no input backtracks exponentially."""
    s = p = 0
    star = resume = -1
    while s < len(string):
        if p < len(pattern) and pattern[p] == 0x2A:  # '*'
            star, resume, p = p, s, p + 1
        elif p < len(pattern) and pattern[p] in (0x3F, string[s]):  # '?' or the byte
            s, p = s + 1, p + 1
        elif star >= 0:
            resume += 1
            s, p = resume, star + 1
        else:
            return False
    return pattern[p:].count(b"*") == len(pattern) - p


_SUBPATTERN_MAX = 1023  # match.c: char sub[1024], and a longer one is "no match"


def match_pattern_list(string: str, patterns: str) -> bool:
    """OpenSSH's match_pattern_list() == 1: a comma-separated list of patterns,
    each negated by a leading ``!``; a matching negated pattern wins."""
    value, spec = string.encode(), patterns.encode()
    positive = False
    i = 0
    while i < len(spec):
        negated = spec[i] == 0x21  # '!'
        i += negated
        end = spec.find(b",", i)
        end = len(spec) if end < 0 else end
        if end - i >= _SUBPATTERN_MAX:
            return False
        if match_pattern(value, spec[i:end]):
            if negated:
                return False
            positive = True
        i = end + 1
    return positive


_TIME_RE = re.compile(r"(\d{8})(\d{4}(\d{2})?)?([Zz]|UTC|utc)?\Z", re.ASCII)


def parse_time(text: str, where: str) -> int:
    """misc.c parse_absolute_time(): ``YYYYMMDD[HHMM[SS]]``, UTC with a ``Z``
    or ``UTC`` suffix, local time without; 0 or before 1970 is invalid."""
    match = _TIME_RE.match(text)
    if not match:
        raise AllowedSignersError(f"{where}: time {text!r} is not YYYYMMDD[HHMM[SS]][Z]")
    digits = match[1] + (match[2] or "0000")
    if len(digits) == 12:
        digits += "00"
    try:
        parsed = time.strptime(digits, "%Y%m%d%H%M%S")
        value = calendar.timegm(parsed) if match[4] else int(time.mktime(parsed))
    except (ValueError, OverflowError):
        raise AllowedSignersError(f"{where}: time {text!r} is not a valid date") from None
    if value <= 0:
        raise AllowedSignersError(f"{where}: time {text!r} is not after 1970-01-01 00:00:00 UTC")
    return value


# sshkey.c keyimpls: every name sshkey_read() takes as a key type.
_RSA_NAMES = {"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"}  # all three read an ssh-rsa blob
_OTHER_NAMES = {"ssh-dss", "ssh-xmss@openssh.com", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}
OPENSSH_KEY_NAMES = (
    PLAIN_KEY_TYPES
    | _RSA_NAMES
    | _OTHER_NAMES
    | {n.replace("@openssh.com", "") + "-cert-v01@openssh.com" for n in PLAIN_KEY_TYPES | _RSA_NAMES | _OTHER_NAMES}
)


_NOT_PRINTABLE_ASCII = re.compile(r"[^\t\x20-\x7e]")


def _line_text(raw: bytes, where: str) -> str:
    """One line as text: UTF-8, and no character that would make what an
    editor shows differ from what OpenSSH reads (its lines end at ``\\n``
    only, so a vertical tab, form feed, U+2028... would hide a second
    "line" inside this one's comment).  Tab is whitespace, as in OpenSSH;
    a carriage return only as the last character (CRLF line ends), which
    b64_pton() skips as whitespace."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AllowedSignersError(
            f"{where}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8"
        ) from None
    text = text.removesuffix("\r")
    for found in _NOT_PRINTABLE_ASCII.finditer(text):
        char, column = found[0], found.start() + 1
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise AllowedSignersError(
                f"{where}: column {column}: control character or unusual blank U+{ord(char):04X}: OpenSSH ends "
                "lines at a newline only, so this line would not read as it looks; remove it"
            )
    return text


def _strdelimw(text: str, where: str) -> tuple[str, str]:
    """misc.c strdelimw(): the first word, or a double-quoted run (the quote
    may start mid-word and ends the word), and the rest after whitespace."""
    cut = next((i for i, c in enumerate(text) if c in ' \t"'), -1)
    if cut < 0:
        raise AllowedSignersError(f"{where}: expected 'principals [options] keytype key'")
    if text[cut] != '"':
        return text[:cut], text[cut + 1 :].lstrip(" \t")
    text = text[:cut] + text[cut + 1 :]
    close = text.find('"', cut)
    if close < 0:
        raise AllowedSignersError(f"{where}: unterminated quote in the principals")
    return text[:close], text[close + 1 :].lstrip(" \t")


def _advance_past_options(text: str) -> int:
    """sshkey_advance_past_options(): end of the options (first unquoted blank;
    ``\\"`` does not toggle quoting); -1 for an unterminated quote."""
    i, quoted = 0, False
    while i < len(text) and (quoted or text[i] not in " \t"):
        if text[i] == "\\" and text[i + 1 : i + 2] == '"':
            i += 1
        elif text[i] == '"':
            quoted = not quoted
        i += 1
    return -1 if quoted else i


def _dequote(opts: str, i: int, where: str, name: str) -> tuple[str, int]:
    """misc.c opt_dequote(): a mandatory double-quoted value, ``\\"`` inside."""
    if opts[i : i + 1] != '"':
        raise AllowedSignersError(f'{where}: {name}= needs a double-quoted value ({name}="...")')
    value: list[str] = []
    i += 1
    while i < len(opts) and opts[i] != '"':
        i += opts[i] == "\\" and opts[i + 1 : i + 2] == '"'
        value.append(opts[i])
        i += 1
    if i >= len(opts):
        raise AllowedSignersError(f"{where}: {name}= has no closing quote")
    return "".join(value), i + 1


_OPTION_RE = re.compile("cert-authority|namespaces=|valid-after=|valid-before=", re.IGNORECASE)


def _parse_options(opts: str, where: str) -> tuple[str | None, int | None, int | None]:
    """sshsig.c sshsigopt_parse(): names case-insensitive, empty options
    between commas ignored, a trailing comma or a repeated option an error."""
    found: dict[str, str] = {}
    i = 0
    while i < len(opts):
        match = _OPTION_RE.match(opts, i)
        name = match[0].lower() if match else ""
        if name == "cert-authority":
            raise AllowedSignersError(f"{where}: cert-authority is not supported: list each admin's own key")
        if name:
            if name in found:
                raise AllowedSignersError(f"{where}: more than one {name[:-1]} option")
            found[name], i = _dequote(opts, i + len(name), where, name[:-1])
        if i == len(opts):
            break
        if opts[i] != ",":
            raise AllowedSignersError(f"{where}: unknown option {opts[i:].split(',')[0]!r}")
        i += 1
        if i == len(opts):
            raise AllowedSignersError(f"{where}: the options end with a comma")
    after = parse_time(found["valid-after="], where) if "valid-after=" in found else None
    before = parse_time(found["valid-before="], where) if "valid-before=" in found else None
    if after is not None and before is not None and before <= after:
        raise AllowedSignersError(f"{where}: valid-before is not after valid-after")
    return found.get("namespaces="), after, before


def read_key(text: str, where: str) -> tuple[str, bytes] | None:
    """sshkey.c sshkey_read(): ``keytype base64`` (then anything, the comment);
    None when ``text`` does not start with a key type name (so: options)."""
    match = re.match(r"([^ \t]*)[ \t]+([^ \t]*)", text)
    if match is None or match[1] not in OPENSSH_KEY_NAMES:
        return None
    name, token = match[1], match[2]
    key_type = "ssh-rsa" if name in _RSA_NAMES else name
    if key_type not in PLAIN_KEY_TYPES:
        raise AllowedSignersError(f"{where}: {unsupported(name).message}")
    try:
        blob = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    if not token or base64.b64encode(blob).decode() != token:  # b64_pton(): padded, zero spare bits
        raise AllowedSignersError(f"{where}: the {name} key is not valid base64")
    try:
        embedded = key_type_of(blob)
    except SignatureError:
        raise AllowedSignersError(f"{where}: the key blob is truncated") from None
    if embedded != key_type:
        raise AllowedSignersError(f"{where}: key type {name} but the key is {embedded}")
    return key_type, blob


def _parse_line(text: str, where: str, number: int) -> AllowedSigner | None:
    """sshsig.c parse_principals_key_and_options()."""
    text = text.lstrip(" \t")
    if not text or text.startswith("#"):
        return None
    patterns, rest = _strdelimw(text, where)
    if "" in patterns.split(","):
        raise AllowedSignersError(f"{where}: empty principal in {patterns!r}")
    opts = ""
    key = read_key(rest, where)
    if key is None:
        end = _advance_past_options(rest)
        if end < 0:
            raise AllowedSignersError(f"{where}: unterminated quote in the options")
        opts, rest = rest[:end], rest[end:].lstrip(" \t")
        if not rest or (key := read_key(rest, where)) is None:
            for word in (opts.split(",")[0], rest.replace("\t", " ").split(" ")[0]):
                if word.startswith(("ssh-", "ecdsa-", "sk-", "rsa-sha2-")) or "-cert-" in word:
                    raise AllowedSignersError(f"{where}: {unsupported(word).message}")
            if patterns in OPENSSH_KEY_NAMES:  # a bare .pub line: the key where the principal goes
                raise AllowedSignersError(
                    f"{where}: the line starts with the key type {patterns}, not with the signer's principal",
                    hint="each line is PRINCIPALS [OPTIONS] KEYTYPE BASE64: put the signer's name first, e.g. "
                    f'alice@example.org namespaces="git" {patterns} AAAA...',
                )
            raise AllowedSignersError(f"{where}: expected a key type and a base64 key after {opts!r}")
    namespaces, after, before = _parse_options(opts, where)
    return AllowedSigner(patterns, key[1], key[0], namespaces, after, before, number)


def parse_allowed_signers(data: str | bytes, path: str = "allowed_signers") -> list[AllowedSigner]:
    """Parse the file (pass its bytes: a str read in text mode has had its
    carriage returns turned into line ends already).  Any malformed line is
    an ``AllowedSignersError`` naming the file and line."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
    lines = raw.split(b"\n")  # getline(): a line ends at \n and nowhere else
    if lines[-1] == b"":
        lines.pop()
    signers = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        signer = _parse_line(_line_text(line, where), where, number)
        if signer is not None:
            signers.append(signer)
    return signers


def why_not_allowed(
    signers: Sequence[AllowedSigner], key: bytes, when: int, namespace: str = "git"
) -> tuple[str, str | None]:
    """Why ``signers`` do not allow a signature by ``key`` at ``when``, in
    the words of the file (the line that lists the key and what on it
    refuses, or that no line does), and what would fix it."""
    candidates = [s for s in signers if s.public_key == key]
    if not candidates:
        return "no line lists that key", (
            "check that repo.url is your network's repository, and that trust.allowed_signers lists the keys of "
            "its admins (never a key just because a server presents it)"
        )
    valid = [s for s in candidates if s.valid_at(when)]
    if not valid:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        first = candidates[0]
        return f"line {first.line} ({first.patterns}) lists it, but not as valid at {stamp}", None
    line = valid[0]
    if not any(s.allows_namespace(namespace) for s in valid):
        return (
            f'line {line.line} ({line.patterns}) lists it with namespaces="{line.namespaces}", without {namespace}',
            f'git signs commits in namespace "{namespace}": write namespaces="{namespace}" on that line',
        )
    return f"line {line.line} lists it, for principals ({line.patterns}) no line allows with that key", None


@dataclass(frozen=True, slots=True)
class Verified:
    principal: str  # the principal git would report ("Good "git" signature for ...")


def verify_signed_object(
    payload: bytes, armored: bytes | None, signers: Sequence[AllowedSigner], when: int, namespace: str = "git"
) -> Verified:
    """Check a signed git object as ``git verify-commit`` does: signed at all;
    ``ssh-keygen -Y find-principals`` (the first line with the signing key
    valid at ``when``) names the principals; one of them passes ``ssh-keygen
    -Y verify -I PRINCIPAL`` (any line whose principal patterns accept it, with
    the key, ``namespace`` and ``when``); and the signature holds."""
    if armored is None:
        raise SignatureError("not signed")
    sig = parse_signature(armored)
    candidates = [s for s in signers if s.public_key == sig.public_key]
    if not candidates:
        raise SignatureError(f"signed by {sig.key_type} key {sig.fingerprint()}, which is not an allowed signer")
    found = next((s for s in candidates if s.valid_at(when)), None)
    if found is None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
        raise SignatureError(f"key {sig.fingerprint()} ({candidates[0].principals[0]}) is not valid at {stamp}")
    for principal in found.principals:
        if any(
            s.allows_principal(principal) and s.allows_namespace(namespace) and s.valid_at(when) for s in candidates
        ):
            verify(sig, payload, namespace)
            return Verified(principal)
    raise SignatureError(
        f"key {sig.fingerprint()} ({found.patterns}, allowed_signers line {found.line}) "
        f"is not allowed to sign in namespace {namespace!r}"
    )
