"""Hostile servers for fault tests.

* ``hostile_git(repo, mode, **opts)``: a git:// server that is honest,
  stalls, drips, sends incomplete or substituted packs, advertises phantom
  tips, floods or sends garbage (``gitserver``);
* ``stalling_http()`` and ``stalling_ssh_command(tmp)``: smart HTTP and ssh
  that never answer (``stalls``);
* ``reencode_signature(repo, sha, how)``: a copy of a signed commit with a
  re-encoded signature that still verifies (``forge``).

Everything runs on 127.0.0.1, in threads of the test's process; every
thread, socket and subprocess a server starts is stopped when its context
exits, and a connection is never held longer than ``LIFETIME`` seconds.
"""

from tests.hostile.forge import REENCODINGS, reencode_signature
from tests.hostile.gitserver import MODES, OMIT_KINDS, PHANTOM_TIP, HostileGitServer, hostile_git
from tests.hostile.stalls import StallingHTTPServer, stalled_ssh_pids, stalling_http, stalling_ssh_command
from tests.hostile.wire import LIFETIME, Connection, HostileURL

__all__ = [
    "LIFETIME",
    "MODES",
    "OMIT_KINDS",
    "PHANTOM_TIP",
    "REENCODINGS",
    "Connection",
    "HostileGitServer",
    "HostileURL",
    "StallingHTTPServer",
    "hostile_git",
    "reencode_signature",
    "stalled_ssh_pids",
    "stalling_http",
    "stalling_ssh_command",
]
