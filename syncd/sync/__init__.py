"""One pass against ports (``ports``): the history and content checks, the
pass itself, the agent that wires the real ports, and ``syncd run``.
Imports every package below it, never ``cli``."""
