"""What the client scripts of the end-to-end tests share: counted checks that stop the script
at the first failure (exit status non-zero, the failure on stderr), and the `ok: N checks` line
the Rust side looks for."""

import sys

_count = 0


def check(condition, what):
    global _count
    if not condition:
        sys.exit(f"FAILED: {what}")
    _count += 1


def done():
    print(f"ok: {_count} checks")
