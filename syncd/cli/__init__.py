"""The command line: argparse, output formats, the man page and shell
completion, and one module per command that needs more than a few lines."""
