"""What the README shows a new user is what the project has: the example
network's policy as it is, every policy key in it, and the durations it
promises."""

from __future__ import annotations

import re

from syncd.policy import parse_policy
from syncd.units import parse_duration
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
