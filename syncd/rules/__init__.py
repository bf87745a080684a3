"""The repository's rules (pure): its policy, owner lines, a tree and its
validation, who may change what, the plan, free subnets.  Imports ``tinc``,
``signing`` and the root only."""
