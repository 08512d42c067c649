"""A worker gives the heap of finished research back to the OS (issue 19: RSS per worker)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from mcp import heap

FRAGMENTED_HEAP = textwrap.dedent("""
    import re, sys
    sys.path.insert(0, sys.argv[1])
    from mcp import heap

    def rss_mb():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

    blocks = [b"x" * 100_000 for _ in range(600)]  # 60 MB written, below the mmap threshold: on the heap
    blocks = blocks[::10]  # freeing nine in ten, with every tenth alive: glibc cannot just cut the top
    before = rss_mb()
    released = heap.trim()
    print(released, round(before - rss_mb(), 1))
""")


def test_trim_gives_a_fragmented_heap_back_to_the_os():
    # its own process: what the test measures is that process's RSS, not pytest's
    out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP, str(heap.__file__).rsplit("/mcp/", 1)[0]],
                         capture_output=True, text=True, timeout=60)
    released, dropped_mb = out.stdout.split()
    assert released == "True" and float(dropped_mb) > 30, out.stdout + out.stderr


def test_a_worker_trims_its_heap_when_its_last_task_ends(client, monkeypatch):
    trims = []
    monkeypatch.setattr(heap, "trim", lambda: trims.append(1) or True)
    done = client.post("/tools/orchestrate_search", json={"query": "crash recovery", "wait": True}).get_json()
    assert done["status"] == "completed"
    runtime = client.application.extensions["mcp_orchestrator"].runtime
    deadline = time.monotonic() + 5
    while not trims and time.monotonic() < deadline:
        time.sleep(0.02)
    assert trims == [1] and runtime.info()["running_tasks"] == 0
