"""CPU time per request, ours against the bare Flask app of bench.py: a measure that the load
other processes put on the machine distorts far less than requests per second (issue 19).

    venv/bin/python bench/cpu_per_request.py [--gunicorn] [--repeats 7] [--requests 1000]

In process (default): each app behind Flask's test client, `time.process_time` over
`--requests` calls, the cases interleaved `--repeats` times, the median kept. The test
client's own work is in both figures. With `--gunicorn`: each app under gunicorn (4 workers,
as bench.py starts them), loaded with wrk (16 connections) for `--seconds`, the workers'
user + system CPU from /proc divided by the requests served. Ours runs as bench.py runs it
(rate limits on, far above the load; SQLite store; Prometheus multiprocess mode)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402  (bench/ is this script's directory)

HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": "2025-11-25"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}}


def in_process_cases(tmp: Path) -> dict[str, Callable[[], None]]:
    # prometheus_client chooses its multiprocess mode at import, as under gunicorn.conf.py
    (tmp / "prometheus").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "prometheus")
    from app import create_app
    from mcp.settings import Settings

    settings = Settings.from_env({**bench.BASE_ENV, "DATA_DIR": str(tmp / "data"), "DOCS_DIR": str(ROOT / "docs"),
                                  "LOG_FORMAT": "text"})
    namespace: dict = {}
    exec(bench.BARE_FLASK, namespace)  # noqa: S102 - the reference app's own source, from bench.py
    ours, bare = create_app(settings).test_client(), namespace["app"].test_client()
    local = {"REMOTE_ADDR": "127.0.0.1"}
    session = ours.post("/mcp", json=INITIALIZE, headers={"Accept": "application/json"},
                        environ_base=local).headers["Mcp-Session-Id"]

    def call(client, headers: dict[str, str], path: str, method: str = "POST") -> Callable[[], None]:
        def run() -> None:
            response = client.open(path, method=method, data=bench.CALL if method == "POST" else None,
                                   headers=headers, environ_base=local)
            assert response.status_code == 200, response.data[:200]
        return run

    return {"ours_mcp": call(ours, {**HEADERS, "Mcp-Session-Id": session}, "/mcp"),
            "bare_mcp": call(bare, HEADERS, "/mcp"),
            "ours_live": call(ours, {}, "/health/live", "GET"),
            "bare_live": call(bare, {}, "/health/live", "GET")}


def measure_in_process(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    cases = in_process_cases(tmp)
    for run in cases.values():
        for _ in range(200):
            run()
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, run in cases.items():
            started = time.process_time()
            for _ in range(args.requests):
                run()
            out[name].append((time.process_time() - started) / args.requests * 1e6)
    return out


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def served(url: str, seconds: int, script: str | None) -> int:
    cmd = ["wrk", "-t2", "-c16", f"-d{seconds}s", url]
    if script:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(script)
        cmd[1:1] = ["-s", lua.name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def measure_gunicorn(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    # no recycling while it is measured: a worker replaced mid-load takes its CPU count with it
    service, _ = bench.start_service(tmp, "cpu", {"MAX_REQUESTS": "0"})
    bare = bench.bare_flask(tmp)
    try:
        time.sleep(2)
        bare_workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(bare.pid)], capture_output=True,
                                                        text=True).stdout.split()]
        script = bench.wrk_script({**HEADERS, "Mcp-Session-Id": bench.initialize(service)})
        targets = {"ours_mcp": (f"{service.url}/mcp", script, service.worker_pids()),
                   "bare_mcp": (f"{bare.url}/mcp", bench.wrk_script(HEADERS), bare_workers),
                   "ours_live": (f"{service.url}/health/live", None, service.worker_pids()),
                   "bare_live": (f"{bare.url}/health/live", None, bare_workers)}
        out: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.repeats):
            for name, (url, lua, pids) in targets.items():
                before = cpu_seconds(pids)
                count = served(url, args.seconds, lua)
                out[name].append((cpu_seconds(pids) - before) / count * 1e6)
        return out
    finally:
        service.stop()
        bare.terminate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gunicorn", action="store_true", help="under gunicorn and wrk instead of in process")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000, help="calls per repeat, in process")
    parser.add_argument("--seconds", type=int, default=4, help="wrk load per repeat, under gunicorn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = (measure_gunicorn if args.gunicorn else measure_in_process)(args, Path(tmp))
    median = {name: statistics.median(values) for name, values in runs.items()}
    print(f"load average {os.getloadavg()[0]:.1f}; CPU µs per request, median of {args.repeats}")
    for name, values in runs.items():
        print(f"  {name:9s} {median[name]:7.0f}   runs {[round(v) for v in values]}")
    print(f"bare ÷ ours: MCP tools/call {median['bare_mcp'] / median['ours_mcp']:.2f}, "
          f"/health/live {median['bare_live'] / median['ours_live']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
