"""What the README shows a new user is what the project has: the example
network's policy as it is, every policy key in it, and the durations it
promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from syncd.rules.policy import parse_policy
from syncd.rules.units import parse_duration
from tests.conftest import EXAMPLE_REPO, ROOT

README = (ROOT / "README.md").read_text()
POLICY = (EXAMPLE_REPO / "syncd.yaml").read_text()


def test_the_readme_shows_the_example_policy_as_it_is() -> None:
    block = re.search(r"`syncd\.yaml` \(`examples/repo/syncd\.yaml`\):\n\n```yaml\n(.*?)^```$", README, re.M | re.S)
    assert block is not None, "README: the example network's syncd.yaml block"
    assert block[1] == POLICY


def test_the_example_policy_names_every_key_and_each_is_valid() -> None:
    _, findings = parse_policy(b"no_such_key: 1\n")
    known = re.search(r"\(known: (.*)\)", findings[0].message)
    assert known is not None
    # the commented keys are the defaults: uncommented, the policy is still valid
    uncommented = re.sub(r"^# (\w+:)", r"\1", POLICY, flags=re.M)
    policy, findings = parse_policy(uncommented.encode())
    assert findings == []
    keys = set(re.findall(r"^(\w+):", uncommented, re.M))
    assert keys == set(known[1].split(", "))
    assert policy.join == "admins" and policy.max_files == 100_000 and not policy.legacy_rsa and policy.shared == ()


def test_every_duration_spelling_the_readme_gives_is_accepted() -> None:
    sentence = re.search(r"Durations are seconds or a number with .*?\(([^)]*)\)", README, re.S)
    assert sentence is not None
    examples = re.findall(r"`([^`]+)`", sentence[1])
    assert len(examples) >= 4 and "1.5h" in examples
    for text in examples:
        assert parse_duration(text) > 0


def test_a_run_without_the_corpora_says_so_in_one_line(tmp_path: Path) -> None:
    """README, "Try it": without the corpora their tests skip, said once;
    with CI=true each of them fails instead."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["SYNCD_CORPORA"] = str(tmp_path / "none")
    tests = [str(ROOT / "tests" / name) for name in ("test_corpora.py", "test_names.py")]  # and others that run
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout
    said = [line for line in run.stdout.splitlines() if "corpora" in line and "SKIPPED" in line]
    assert len(said) == 1 and "`make corpora` fetches them, or set SYNCD_CORPORA" in said[0], run.stdout
    failed = subprocess.run(
        command, cwd=ROOT, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=120, check=False
    )
    assert failed.returncode == 1 and "6 errors" in failed.stdout, failed.stdout
