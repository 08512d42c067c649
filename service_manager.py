#!/usr/bin/env python3
"""Start, stop and watch mcp-orchestrator without systemd (DESIGN §12). Standard library only.

    service_manager.py start|stop|restart|status|logs NAME
    service_manager.py status                  (every service, one line each)
    service_manager.py start-monitor NAME | stop-monitor | monitor-status

NAME is `mcp-orchestrator` (`mcp-server` is accepted). Files live under
SERVICE_MANAGER_HOME (default ~/.service_manager): NAME.pid, logs/NAME.log (with
logs/mcp-server.log linked to it), monitor.pid, monitor.json. The service inherits this
process's environment (PORT, DATA_DIR, ...). `status NAME` exits 0 only when the process
runs and /health answers; `status` alone exits 0 when every service that runs is healthy.
The monitor polls health
every MONITOR_INTERVAL seconds (30) and restarts a dead or unhealthy service after
MONITOR_BACKOFF x 2^n seconds (10), at most 5 times in a row; an hour healthy resets the count.
Exit codes: 0 success, 1 failure (not running, unhealthy, start timed out), 2 usage."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NAMES = {"mcp-orchestrator": "mcp-orchestrator", "mcp-server": "mcp-orchestrator"}
START_TIMEOUT = 20.0
MAX_RESTARTS = 5
HEALTHY_RESET = 3600.0


def home() -> Path:
    return Path(os.environ.get("SERVICE_MANAGER_HOME", Path.home() / ".service_manager"))


def pid_file(name: str) -> Path:
    return home() / f"{name}.pid"


def log_file(name: str) -> Path:
    return home() / "logs" / f"{name}.log"


def health_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('PORT', '5060')}/health"


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def running_pid(name: str) -> int | None:
    """The service's pid, when the pid file names a live process that is still the one we
    started (a pid reused by another process has another start time: stale, not trusted)."""
    try:
        pid_text, started = pid_file(name).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if start_time(pid) == started else None


def healthy(timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(health_url(), timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def start(name: str) -> int:
    if running_pid(name):
        print(f"{name} is already running (pid {running_pid(name)})")
        return 0
    log_file(name).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file(name), "ab") as log:
        # design: on a fresh host start.sh first builds the venv, a minute or more that the
        # start timeout (meant for gunicorn's boot) must not cover: that part runs to its end first.
        prepared = subprocess.run([str(ROOT / "start.sh"), "--prepare"], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if prepared.returncode != 0:
            print(f"{name} could not be set up (start.sh --prepare exited with {prepared.returncode}); "
                  f"see {log_file(name)}", file=sys.stderr)
            return 1
        proc = subprocess.Popen([str(ROOT / "start.sh")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file(name).write_text(f"{proc.pid} {start_time(proc.pid)}\n")
    deadline = time.monotonic() + float(os.environ.get("START_TIMEOUT", START_TIMEOUT))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"{name} exited with {proc.returncode}; see {log_file(name)}", file=sys.stderr)
            return 1
        if healthy(1.0):
            print(f"{name} started (pid {proc.pid})")
            return 0
        time.sleep(0.25)
    print(f"{name} did not become healthy in time; see {log_file(name)}", file=sys.stderr)
    return 1


def stop(name: str) -> int:
    pid = running_pid(name)
    if pid is None:
        pid_file(name).unlink(missing_ok=True)
        print(f"{name} is not running")
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + float(os.environ.get("GRACEFUL_TIMEOUT", "30")) + 5
    while time.monotonic() < deadline and running_pid(name):
        time.sleep(0.2)
    if running_pid(name):
        os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)
    print(f"{name} stopped")
    return 0


def aliases(name: str) -> list[str]:
    return [alias for alias, target in NAMES.items() if target == name and alias != name]


def link_alias_logs(name: str) -> None:
    """logs/<alias>.log -> logs/NAME.log, so `tail -f logs/mcp-server.log` follows the service."""
    log_file(name).touch()
    for alias in aliases(name):
        link = log_file(alias)
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(log_file(name).name)


def status_all() -> int:
    """One line per known service: name (aliases), state, pid, uptime, health."""
    code = 0
    for name in dict.fromkeys(NAMES.values()):
        label = f"{name} ({', '.join(aliases(name))})" if aliases(name) else name
        pid = running_pid(name)
        if pid is None:
            print(f"{label}: stopped")
            continue
        uptime = int(time.time() - pid_file(name).stat().st_mtime)
        health = "healthy" if healthy() else "unhealthy"
        code = code if health == "healthy" else 1
        print(f"{label}: running, pid {pid}, up {uptime // 3600}h{uptime // 60 % 60:02d}m{uptime % 60:02d}s, {health}")
    return code


def status(name: str) -> int:
    pid = running_pid(name)
    if pid is None:
        print(f"{name}: not running")
        return 1
    if not healthy():
        print(f"{name}: running (pid {pid}) but {health_url()} does not answer 200")
        return 1
    print(f"{name}: running (pid {pid}), healthy")
    return 0


def logs(name: str, lines: int) -> int:
    try:
        print("".join(log_file(name).read_text(errors="replace").splitlines(keepends=True)[-lines:]), end="")
    except OSError:
        print(f"no log at {log_file(name)}", file=sys.stderr)
        return 1
    return 0


# -- the monitor --------------------------------------------------------------------------

def monitor_state() -> dict:
    try:
        return json.loads((home() / "monitor.json").read_text())
    except (OSError, ValueError):
        return {"name": None, "restarts": [], "consecutive": 0, "gave_up": False}


def save_state(state: dict) -> None:
    (home() / "monitor.json").write_text(json.dumps(state, indent=1))


def monitor(name: str) -> int:
    interval = float(os.environ.get("MONITOR_INTERVAL", "30"))
    backoff = float(os.environ.get("MONITOR_BACKOFF", "10"))
    state = {**monitor_state(), "name": name, "consecutive": 0, "gave_up": False, "pid": os.getpid()}
    save_state(state)
    healthy_since = time.monotonic()
    while True:
        time.sleep(interval)
        _reap()
        if running_pid(name) and healthy():
            if time.monotonic() - healthy_since >= HEALTHY_RESET and state["consecutive"]:
                state["consecutive"] = 0
                save_state(state)
            continue
        reason = "process not running" if running_pid(name) is None else "health check failed"
        if state["consecutive"] >= MAX_RESTARTS:
            state["gave_up"] = True
            save_state(state)
            continue
        time.sleep(backoff * 2 ** state["consecutive"])
        if running_pid(name) and healthy():
            continue  # it recovered by itself while we waited
        stop(name)
        code = start(name)
        state["consecutive"] += 1
        state["restarts"].append({"time": time.time(), "reason": reason, "started": code == 0})
        save_state(state)
        healthy_since = time.monotonic()


def _reap() -> None:
    """Collect services this monitor started that have since died (no zombies)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def start_monitor(name: str) -> int:
    pid = monitor_pid()
    if pid:
        print(f"monitor already running (pid {pid})")
        return 0
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "logs" / "monitor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_monitor", name], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (home() / "monitor.pid").write_text(f"{proc.pid} {start_time(proc.pid)}\n")
    print(f"monitor started (pid {proc.pid})")
    return 0


def monitor_pid() -> int | None:
    try:
        pid_text, started = (home() / "monitor.pid").read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if start_time(pid) == started else None


def stop_monitor() -> int:
    pid = monitor_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
    (home() / "monitor.pid").unlink(missing_ok=True)
    print("monitor stopped" if pid else "monitor was not running")
    return 0


def monitor_status() -> int:
    state = monitor_state()
    state["running"] = monitor_pid() is not None
    print(json.dumps(state, indent=1))
    return 0 if state["running"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "restart", "status", "logs", "start-monitor",
                                            "stop-monitor", "monitor-status", "_monitor"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("-n", "--lines", type=int, default=100, help="lines of log to show")
    args = parser.parse_args(argv)
    if args.command in ("stop-monitor", "monitor-status"):
        return stop_monitor() if args.command == "stop-monitor" else monitor_status()
    if args.command == "status" and args.name is None:
        return status_all()
    if args.name not in NAMES:
        parser.print_usage(sys.stderr)
        print(f"unknown service {args.name!r}; use one of {', '.join(NAMES)}", file=sys.stderr)
        return 2
    name = NAMES[args.name]
    (home() / "logs").mkdir(parents=True, exist_ok=True)
    link_alias_logs(name)
    if args.command == "restart":
        stop(name)
        return start(name)
    handlers = {"start": start, "stop": stop, "status": status, "start-monitor": start_monitor,
                "_monitor": monitor}
    if args.command == "logs":
        return logs(name, args.lines)
    return handlers[args.command](name)


if __name__ == "__main__":
    sys.exit(main())
