"""How many forks made this process, for objects that must not be used across a fork.

design: a process-wide count kept by an at-fork hook, read where a getpid call on every use
(every SQLite statement, every rate-limit count) was measurable (issue 19). An object notes
`generation()` when it opens what a fork must not share, and opens it again when the count
has moved on.
"""

from __future__ import annotations

import os

_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


def generation() -> int:
    """0 in the first process; one more in each child than in its parent."""
    return _forks
