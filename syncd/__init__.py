"""syncd: keep a tinc VPN's host files in sync from a signed git repository."""

__version__ = "0.1.0"
