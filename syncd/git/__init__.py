"""The local store: fetch with deadlines and caps, integrity and repair,
objects read without trusting them.  The only importers of dulwich; they
import ``rules``, ``tinc``, ``signing`` and the root only."""
