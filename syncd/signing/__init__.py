"""SSH signatures (pure): SSHSIG, git's allowed_signers as OpenSSH reads it,
and a signed commit split as git splits it.  Imports only ``syncd.errors``."""
