"""``syncd.1``, the man page, generated from the argparse parser (every
command, every option, in the words of ``--help``).

``python -m syncd.cli.manpage > syncd.1`` (``make install`` does this).
"""

from __future__ import annotations

import datetime
import os
import sys

from syncd import __version__
from syncd.cli.clidoc import Command, Option, Program, describe

EXIT_STATUS = (
    ("0", "ok: the check is clean, the commit was applied, or the node was already current."),
    (
        "1",
        "refused or findings: check found errors; sync refused a commit (a missing or unknown signature, "
        "a rewound history, invalid content) and changed nothing.",
    ),
    ("2", "usage or config error, or any condition that retrying cannot fix."),
    ("3", "transient failure: no URL reachable, a fetch timed out, tincd did not reload; retry later."),
    ("130", "interrupted (Ctrl-C)."),
)

FILES = (
    ("/etc/syncd/NET.yaml", "the node config of the tinc network NET."),
    (
        "/etc/syncd/NET.allowed_signers",
        "the admin keys allowed to sign the hosts repository, in git's allowed_signers format "
        "(see ALLOWED SIGNERS in ssh-keygen(1)).",
    ),
    ("/var/lib/syncd/NET", "state: the local git store, the last applied commit, the health of the last passes."),
    ("/etc/tinc/NET/hosts", "the host files syncd installs; the only directory of tinc it writes."),
    (
        "/usr/local/lib/systemd/system/syncd@.service, syncd@.timer, syncd-run@.service",
        "systemd units: a sync every 5 minutes, or the agent (syncd run).",
    ),
)

DESCRIPTION = (
    "Every node of a tinc VPN needs the host file of every node it talks to. syncd keeps them in one git "
    "repository that the network's admins sign: check validates the host files exactly as tincd reads them "
    "(as a pre-commit hook and in CI); sync, on each node, fetches the repository, accepts only commits "
    "signed by a key in the node's allowed_signers file that descend from the last applied one, validates "
    "the tree as check does, installs the changed host files atomically into /etc/tinc/NET/hosts and "
    "reloads tincd; run does that every few minutes as a service and puts back a managed file that "
    "someone changed. A refused commit changes nothing on the node."
)

SEE_ALSO = r"\fBtincd\fR(8), \fBtinc.conf\fR(5), \fBgit\fR(1), \fBssh\-keygen\fR(1), \fBsystemd.service\fR(5)"


def escape(text: str) -> str:
    """Text as roff reads it literally: backslashes, dashes (so that options
    can be copied from the page), and control characters at a line start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def render(program: Program, version: str = __version__, date: str = "") -> str:
    out = [
        f'.TH {program.name.upper()} 1 "{date}" "{program.name} {version}" "User Commands"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{program.name} \\- {escape(_first_sentence(program.description))}",
        ".SH SYNOPSIS",
    ]
    for command in program.commands:
        out += [".PP", _synopsis(command.usage)]
    out += [".SH DESCRIPTION", escape(program.description), ".PP", escape(DESCRIPTION)]
    out += [".SH OPTIONS", *_options([o for o in program.options if o.flags])]
    out += [".SH COMMANDS"]
    for command in program.commands:
        out += _command(command)
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        out += [".TP", f".B {code}", escape(meaning)]
    out += [".SH FILES"]
    for path, meaning in FILES:
        out += [".TP", f".I {escape(path)}", escape(meaning)]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B SYNCD_DEBUG",
        "When set, an internal error prints its traceback.",
        ".SH SEE ALSO",
        SEE_ALSO,
    ]
    return "\n".join(out) + "\n"


def _first_sentence(text: str) -> str:
    sentence = text.split(". ")[0].rstrip(".")
    return sentence[:1].lower() + sentence[1:]


def _synopsis(usage: str) -> str:
    # "syncd check [-h] [REPO]": the command in bold, its arguments in roman
    words = usage.split(" ", 2)
    head = " ".join(words[:2])
    rest = words[2] if len(words) > 2 else ""
    return f".B {escape(head)}\n{escape(rest)}" if rest else f".B {escape(head)}"


def _command(command: Command) -> list[str]:
    lines = [f".SS {escape(command.name)}", _synopsis(command.usage), ".PP"]
    lines.append(escape(command.description or command.summary))
    positionals = command.positionals
    if positionals:
        lines += [".PP", "Arguments:"]
        lines += _options(positionals)
    flags = [option for option in command.options if option.flags]
    if flags:
        lines += [".PP", "Options:"]
        lines += _options(flags)
    return lines


def _options(options: list[Option] | tuple[Option, ...]) -> list[str]:
    lines: list[str] = []
    for option in options:
        if option.flags:
            names = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in option.flags)
            value = f" \\fI{escape(option.metavar)}\\fR" if option.metavar else ""
            lines += [".TP", names + value]
        else:
            lines += [".TP", f"\\fI{escape(option.metavar or '')}\\fR"]
        text = option.help
        if option.repeatable and "repeatable" not in text:
            text += " (repeatable)"
        lines.append(escape(text))
    return lines


def _date() -> str:
    # reproducible builds: the date of the sources when the packager says so
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not epoch.isdigit():
        return ""
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%d")


def main() -> int:
    from syncd.cli.main import build_parser

    sys.stdout.write(render(describe(build_parser()), date=_date()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
