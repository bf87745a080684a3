"""Real git repositories with real SSH-signed commits, for tests.

Everything goes through the `git` and `ssh-keygen` programs, as an admin
would do it: `git -c gpg.format=ssh -c user.signingkey=KEY commit -S`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "admin",
    "GIT_AUTHOR_EMAIL": "admin@example.org",
    "GIT_COMMITTER_NAME": "admin",
    "GIT_COMMITTER_EMAIL": "admin@example.org",
    "LC_ALL": "C",
}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, **extra}


@dataclass(frozen=True)
class SshKey:
    private: Path
    principal: str

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")

    def public_line(self) -> str:
        """``keytype base64`` (no comment), as allowed_signers wants it."""
        kind, blob, *_ = self.public.read_text().split()
        return f"{kind} {blob}"


def make_key(directory: Path, name: str, kind: str = "ed25519", bits: int | None = None) -> SshKey:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@example.org", "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)
    return SshKey(path, f"{name}@example.org")


def allowed_signers(path: Path, *entries: tuple[SshKey, str]) -> Path:
    """Write an allowed_signers file; each entry is (key, options)."""
    lines = [f"{key.principal} {options + ' ' if options else ''}{key.public_line()}" for key, options in entries]
    path.write_text("\n".join(lines) + "\n")
    return path


def git(repo: Path, *args: str, extra_env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=env(**(extra_env or {})),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def commit(
    repo: Path,
    message: str,
    key: SshKey | None,
    *,
    date: str | None = None,
    allow_empty: bool = False,
) -> str:
    """Commit everything in the work tree, signed with ``key`` (or unsigned)."""
    git(repo, "add", "-A")
    args = ["-c", "gpg.format=ssh"]
    if key is not None:
        args += ["-c", f"user.signingkey={key.private}"]
    args += ["commit", "-q", "-m", message]
    if allow_empty:
        args.append("--allow-empty")
    args.append("-S" if key is not None else "--no-gpg-sign")
    extra = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else None
    git(repo, *args, extra_env=extra)
    return git(repo, "rev-parse", "HEAD")


def merge(repo: Path, branch: str, message: str, key: SshKey) -> str:
    """Merge ``branch`` into the checked-out branch with a merge commit
    (even when a fast-forward would do), signed with ``key``."""
    args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}"]
    git(repo, *args, "merge", "-q", "--no-ff", "-S", "-m", message, branch)
    return git(repo, "rev-parse", "HEAD")


def fingerprint_of(key: SshKey) -> str:
    """``ssh-keygen -l``'s SHA256 fingerprint of ``key``, to check syncd's own."""
    result = subprocess.run(["ssh-keygen", "-l", "-f", str(key.public)], check=True, capture_output=True, text=True)
    return result.stdout.split()[1]


def verify_with_git(repo: Path, rev: str, signers_file: Path) -> bool:
    """What real `git verify-commit` says, to cross-check syncd's verdicts."""
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", f"gpg.ssh.allowedSignersFile={signers_file}", "verify-commit", rev],
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0
