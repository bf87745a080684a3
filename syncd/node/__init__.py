"""This node's disk: its config, the installed hosts directory, the state,
the parse index, tincd's reload, metrics, sd_notify, private keys, atomic
files.  Imports ``rules``, ``tinc`` and the root only."""
