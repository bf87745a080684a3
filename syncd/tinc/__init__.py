"""What tincd reads (pure): node names, host files line by line, public
keys, subnets, and what tincd 1.1 appends.  Imports ``signing`` and the
root's ``errors`` and ``findings`` only."""
