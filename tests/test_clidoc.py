"""The command line's own documentation: ``--help``, the man page rendered by
groff, and the completion scripts loaded by real bash and zsh."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli.clidoc import Program, describe
from syncd.cli.completion import script
from syncd.cli.main import build_parser, main
from syncd.cli.manpage import escape, render
from tests.conftest import ROOT
from tests.servers import require

PROGRAM = describe(build_parser())
SYNCD = [sys.executable, "-m", "syncd"]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def run_syncd(*args: str) -> str:
    result = subprocess.run([*SYNCD, *args], capture_output=True, text=True, env=env(), check=True, timeout=60)
    return result.stdout


@pytest.mark.parametrize("command", ["", *(c.name for c in PROGRAM.commands)])
def test_help_shows_no_argparse_escapes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"] if command else ["--help"]) == 0
    shown = capsys.readouterr().out
    assert "%%" not in shown and "%(" not in shown
    if command == "run":
        assert "(+/-10% jitter" in shown


def test_describe_reads_every_command_and_option() -> None:
    names = [command.name for command in PROGRAM.commands]
    assert {"check", "sync", "run", "status", "add-node", "completion"} <= set(names)
    check = next(c for c in PROGRAM.commands if c.name == "check")
    assert check.usage.startswith("syncd check [-h] ")
    hosts_dir = next(o for o in check.options if "--hosts-dir" in o.flags)
    assert hosts_dir.metavar == "DIR" and hosts_dir.kind == "dirs" and hosts_dir.help.startswith("check this")
    fmt = next(o for o in check.options if "--format" in o.flags)
    assert fmt.choices == ("text", "json", "github") and fmt.kind == "words"
    (repo,) = check.positionals
    assert repo.metavar == "REPO" and repo.optional
    add = next(c for c in PROGRAM.commands if c.name == "add-node")
    assert next(o for o in add.options if "--connect-to" in o.flags).repeatable
    assert not add.positionals[0].optional


def test_help_strings_are_expanded_as_argparse_does() -> None:
    parser = argparse.ArgumentParser(prog="x", description="%(prog)s does 100%%")
    parser.add_argument("--n", default=3, help="count (default %(default)s, 50%% more)")
    program = describe(parser)
    assert program.description == "x does 100%"
    assert program.options[-1].help == "count (default 3, 50% more)"


def test_roff_escapes_what_roff_would_read_as_markup() -> None:
    assert escape("a -b \\c") == "a \\-b \\ec"
    assert escape(".SH x\n'y\nz.") == "\\&.SH x\n\\&'y\nz."


def rendered(page: str, tmp_path: Path) -> str:
    source = tmp_path / "syncd.1"
    source.write_text(page)
    groff = require("groff")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-rLL=200n", str(source)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, LC_ALL="C.UTF-8"),
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # plain text: no overstrike bold/underline, the minus signs of \- as "-"
    text = re.sub(".\b", "", result.stdout)
    return text.replace("\u2212", "-").replace("\u2010", "-")


def test_man_page_renders_every_command_and_option(tmp_path: Path) -> None:
    text = rendered(run_syncd_manpage(), tmp_path)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.MULTILINE), section
    assert "syncd - keep a tinc VPN's host files in sync from a signed git repository" in text
    for command in PROGRAM.commands:
        assert re.search(rf"^   {re.escape(command.name)}$", text, re.MULTILINE), command.name
        assert f"syncd {command.name} " in text
        for option in command.options:
            for flag in option.flags:
                assert flag in text, (command.name, flag)
    assert "(+/-10% jitter" in text.replace("\n       ", " ")


def run_syncd_manpage() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "syncd.cli.manpage"], capture_output=True, text=True, env=env(), check=True, timeout=60
    )
    return result.stdout


def test_man_page_survives_markup_in_help(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="syncd", description="Does things.")
    commands = parser.add_subparsers(dest="command")
    odd = commands.add_parser("odd", help="odd", description=".TH not a macro\n'neither\\fB")
    odd.add_argument("--dot", metavar=".X", help="a value with a backslash \\ and a dash -")
    text = rendered(render(describe(parser)), tmp_path)
    assert ".TH not a macro" in text and "'neither\\fB" in text
    assert "--dot .X" in text and "a backslash \\ and a dash -" in text


def complete(words: list[str], cwd: Path, completion: str, setup: str = "") -> list[str]:
    """What bash offers for the last word, with the script loaded as a user would."""
    line = " ".join(f"'{w}'" for w in words)
    program = f"""
source <({completion})
{setup}
COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}
_syncd
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(
        [require("bash"), "-c", program], cwd=cwd, capture_output=True, text=True, env=env(), check=False, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(filter(None, result.stdout.split("\n")))


def test_bash_completion_loads_and_completes(tmp_path: Path) -> None:
    loaded = subprocess.run(
        [require("bash"), "-c", f"source <({' '.join(SYNCD)} completion bash); complete -p syncd"],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
        timeout=60,
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "complete -F _syncd syncd", loaded.stderr
    generate = f"{' '.join(SYNCD)} completion bash"
    (tmp_path / "a dir").mkdir()
    (tmp_path / "inet6.yaml").write_text("")
    assert complete(["syncd", ""], tmp_path, generate) == sorted(
        [c.name for c in PROGRAM.commands] + ["-h", "--help", "--version"]
    )
    assert complete(["syncd", "st"], tmp_path, generate) == ["status"]
    assert complete(["syncd", "check", "--format", ""], tmp_path, generate) == ["github", "json", "text"]
    assert complete(["syncd", "check", ""], tmp_path, generate) == ["a dir"]
    assert complete(["syncd", "sync", "-c", "in"], tmp_path, generate) == ["inet6.yaml"]
    assert complete(["syncd", "completion", ""], tmp_path, generate) == ["bash", "zsh"]
    for command in PROGRAM.commands:
        flags = sorted(flag for option in command.options for flag in option.flags)
        assert complete(["syncd", command.name, "-"], tmp_path, generate) == flags, command.name
    assert complete(["syncd", "add-node", "--net", ""], tmp_path, generate, f"SYNCD_CONFIG_DIR={tmp_path}") == ["inet6"]


def test_zsh_completion_loads(tmp_path: Path) -> None:
    zsh = require("zsh")
    completion = tmp_path / "_syncd"
    completion.write_text(run_syncd("completion", "zsh"))
    syntax = subprocess.run([zsh, "-n", str(completion)], capture_output=True, text=True, check=False, timeout=60)
    assert syntax.returncode == 0, syntax.stderr
    # sourced after compinit (as `source <(syncd completion zsh)` in .zshrc) and
    # autoloaded from $fpath (as installed): either way _syncd completes syncd
    compinit = "autoload -Uz compinit && compinit -u -D"
    for program in (f"{compinit}; source {completion}", f"fpath=({tmp_path} $fpath); {compinit}"):
        program += "; print -r -- $_comps[syncd]"
        result = subprocess.run(
            [zsh, "-f", "-c", program], capture_output=True, text=True, check=False, timeout=60, env=env()
        )
        assert result.returncode == 0 and result.stdout.strip() == "_syncd", result.stdout + result.stderr


def test_completion_of_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 2
    assert "invalid choice: 'fish'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no completion for shell 'fish'"):
        script(Program("syncd", "", "", (), ()), "fish")


# An interactive zsh on a pseudo-terminal (zpty), with the completion
# installed in $fpath: TAB after the words, and compadd reports what the
# completion offered as <<a|b|c>>.
ZSH_TAB = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z "zstyle ':completion:*' list-grouped false; zstyle ':completion:*' insert-tab false"
zpty -w z 'compadd () { local -a hits; builtin compadd -O hits "$@";
  (( $#hits )) && print -rn -- "<<${(j:|:)hits}>>" >/dev/tty; builtin compadd -Q "$@" >/dev/null 2>&1; }'
zpty -w z 'print -n READY'
while zpty -r z line; do [[ $line == *READY* ]] && break; done
zpty -w -n z "$2"$'\t'
# the line editor handles its input in order: once DONE is printed, the
# completion of the TAB before it is complete
zpty -w z $'\C-uprint -n DO""NE'
zpty -r z out '*DONE'
zpty -d z
print -r -- $out
"""


def zsh_offers(fpath: Path, line: str, attempts: int = 3) -> list[str]:
    """What zsh offers at TAB.  The pseudo-terminal dance can lose the race
    on a loaded machine (nothing is read at all): tried again, at most
    ``attempts`` times; a wrong answer is never retried."""
    for _ in range(attempts):
        result = subprocess.run(
            [require("zsh"), "-f", "-c", ZSH_TAB, "zsh", str(fpath), line],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        groups = re.findall(r"<<([^>]*)>>", result.stdout)
        if groups:
            return sorted(word for group in groups for word in group.split("|"))
    raise AssertionError(f"zsh offered nothing for {line!r}: {result.stdout}{result.stderr}")


def test_zsh_completes_commands_options_and_choices(tmp_path: Path) -> None:
    (tmp_path / "_syncd").write_text(run_syncd("completion", "zsh"))
    assert zsh_offers(tmp_path, "syncd ") == sorted(c.name for c in PROGRAM.commands)
    assert zsh_offers(tmp_path, "syncd sta") == ["status"]
    assert zsh_offers(tmp_path, "syncd check --format ") == ["github", "json", "text"]
    assert zsh_offers(tmp_path, "syncd completion ") == ["bash", "zsh"]
    assert zsh_offers(tmp_path, "syncd run -") == ["--config", "--help", "-c", "-h"]
    assert zsh_offers(tmp_path, "syncd add-node --c") == ["--connect-to"]
