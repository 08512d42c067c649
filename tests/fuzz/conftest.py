"""The fuzz suite's settings and its service.

Hypothesis profiles: `fuzz` (the default: a few hundred examples in all, derandomized so a
CI run is repeatable) and `long` (HYPOTHESIS_PROFILE=long, for a nightly run: many more
examples, fresh randomness each run). Every request the suite sends is tallied by the
route or method it fuzzed, and the tally is printed at the end of the run."""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import Service

KEY = "fuzz-secret"
settings.register_profile("fuzz", max_examples=10, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("long", max_examples=400, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))
# Examples that each run a whole task (the fuzz of what comes back from outside) cost seconds
# apiece: fewer of them, in either profile.
TASK_EXAMPLES = settings(max_examples=max(6, settings.default.max_examples // 5))

TALLY: collections.Counter[str] = collections.Counter()
# Log lines that mean a request or a task met a bug rather than a refusal.
BUG_LINES = re.compile(r"unhandled error|MCP method .* failed|Traceback \(most recent call last\)")


def tally(target: str) -> None:
    TALLY[target] += 1


def bugs_logged(log: Path, since: int = 0) -> list[str]:
    """The log's lines after byte `since` that show an exception escaped somewhere."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return [line for line in text.splitlines() if BUG_LINES.search(line)]


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory) -> Any:
    """A real gunicorn with four workers and an API key; rate limits off so the fuzz measures
    input handling; two tasks per worker at most so the tasks fuzzing starts stay cheap;
    short keep-alives so the streams it opens and drops free their threads soon."""
    tmp = tmp_path_factory.mktemp("fuzz")
    service = Service(tmp / "data", {"API_KEYS": f"fuzzer:{KEY}", "RATE_LIMIT_ENABLED": "0",
                                     "MAX_CONCURRENT_TASKS": "2", "LLM_PROVIDER": "extractive",
                                     # dropped streams are noticed at the next keep-alive write
                                     "STREAM_KEEPALIVE": "2"}, tmp / "service.log").start()
    yield service
    service.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    terminalreporter.section(f"fuzz: {sum(TALLY.values())} requests "
                             f"(profile {settings.get_current_profile_name()})")
    for target, count in sorted(TALLY.items()):
        terminalreporter.write_line(f"{count:6d}  {target}")
