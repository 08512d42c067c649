"""Benchmarks of mcp-orchestrator, each against a reference measured in the same run.

Run through bench/run.sh, which installs wrk. Every load is bounded in time; every server
listens on 127.0.0.1. Prints one table and writes bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Service, free_port  # noqa: E402
from tests.fakes.openai_server import FakeServer  # noqa: E402

BARE_FLASK = '''
from flask import Flask, request, jsonify
app = Flask("bare")

@app.post("/mcp")
def rpc():
    body = request.get_json()
    return jsonify({"jsonrpc": "2.0", "id": body.get("id"), "result": {"content": [], "isError": False}})

@app.get("/health/live")
def live():
    return jsonify({"status": "alive"})
'''
WRK_POST = '''
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_orchestrator_patterns","arguments":{}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Mcp-Session-Id"] = "%s"
'''


def wrk(url: str, seconds: int, script: str | None = None) -> dict[str, float]:
    """Requests/s and p99 latency (ms) from wrk, 16 connections on 2 threads."""
    args = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        if script:
            lua.write(script)
            args[1:1] = ["-s", lua.name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "errors": int(non2xx.group(1)) if non2xx else 0}


def bare_flask(tmp: Path) -> subprocess.Popen:
    app_dir = tmp / "bare"
    app_dir.mkdir()
    (app_dir / "bare.py").write_text(BARE_FLASK)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "4",
                             "--threads", "16", "--bind", f"127.0.0.1:{port}", "--no-control-socket", "bare:app"],
                            cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(f"{proc.url}/health/live", timeout=1)
            return proc
        except requests.RequestException:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        out.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
    return out


def research_wall(service: Service, agents: int) -> float:
    started = time.monotonic()
    result = service.post("/tools/orchestrate_research", json={
        "query": "How does the orchestrator recover tasks after a crash?", "num_agents": agents,
        "drummer_group_size": 5, "wait": True, "wait_seconds": 600}, timeout=700).json()
    assert result["status"] == "completed", result.get("error")
    return time.monotonic() - started


def store_throughput(url: str, seconds: float = 3.0) -> float:
    from mcp.store import TaskRecord, open_store

    store = open_store(url)
    task_id = f"bench_{time.time_ns()}"
    store.create_task(TaskRecord(task_id, "research", "q", None, {"query": "q"}, created_at=time.time()))
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.append_event(task_id, "agent_progress", {"chars": n})
        n += 1
    return n / seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    seconds = 5 if args.quick else 15
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    results: dict[str, dict] = {}

    started = time.monotonic()
    service = Service(tmp / "data", {"RATE_LIMIT_ENABLED": "0", "LOG_LEVEL": "warning"}, tmp / "service.log")
    service.start()
    results["start_to_healthy_s"] = {"value": round(time.monotonic() - started, 2), "target": "<= 5"}
    bare = bare_flask(tmp)
    try:
        init = requests.post(f"{service.url}/mcp", timeout=10, headers={"Accept": "application/json"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}})
        session = init.headers["Mcp-Session-Id"]
        ours = wrk(f"{service.url}/mcp", seconds, WRK_POST % session)
        limit = wrk(f"{bare.url}/mcp", seconds, WRK_POST % session)
        results["mcp_tools_call"] = {**ours, "limit_rps": limit["rps"], "ratio_to_limit": round(ours["rps"] / limit["rps"], 3),
                                     "target": ">= 0.5 x bare Flask"}
        ours = wrk(f"{service.url}/health/live", seconds)
        limit = wrk(f"{bare.url}/health/live", seconds)
        results["rest_health_live"] = {**ours, "limit_rps": limit["rps"], "ratio_to_limit": round(ours["rps"] / limit["rps"], 3),
                                       "target": ">= 0.6 x bare Flask"}
        results["rss_per_worker_idle_mb"] = {"value": [round(v, 1) for v in rss_mb(service.worker_pids())]}
        for i in range(20 if args.quick else 100):
            service.post("/tools/orchestrate_search", json={"query": f"bench query {i}", "num_agents": 2, "wait": True})
        results["rss_per_worker_after_tasks_mb"] = {"value": [round(v, 1) for v in rss_mb(service.worker_pids())]}
    finally:
        service.stop()
        bare.terminate()

    fake = FakeServer(latency=0.5).start()
    llm = Service(tmp / "data-llm", {"RATE_LIMIT_ENABLED": "0", "LOG_LEVEL": "warning", "LLM_PROVIDER": "openai",
                                     "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "x"}, tmp / "llm.log")
    llm.start()
    try:
        for agents in (8, 20):
            wall = research_wall(llm, agents)
            # planner + one worker agent + the mid-tier level + the final synthesizer, 0.5 s each
            critical = 0.5 * 4
            results[f"research_{agents}_agents"] = {"wall_s": round(wall, 2), "critical_path_s": critical,
                                                    "ratio": round(wall / critical, 3), "target": "<= 1.15"}
    finally:
        llm.stop()
        fake.stop()

    results["store_events_per_s_sqlite"] = {"value": round(store_throughput(f"sqlite:///{tmp}/bench.db"))}
    if args.redis_url:
        results["store_events_per_s_redis"] = {"value": round(store_throughput(args.redis_url))}

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1))
    print(f"{'benchmark':32} result")
    for name, row in results.items():
        print(f"{name:32} {json.dumps(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
