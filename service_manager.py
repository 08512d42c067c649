#!/usr/bin/env python3
"""Start, stop and watch mcp-orchestrator without systemd (DESIGN §12). Standard library only.

    service_manager.py start|stop|restart|status NAME
    service_manager.py status                  (every service, one line each)
    service_manager.py logs NAME [-n LINES] [-f]
    service_manager.py backup NAME [DEST]
    service_manager.py start-monitor NAME | stop-monitor | monitor-status

NAME is `mcp-orchestrator` (`mcp-server` is accepted). Files live under
SERVICE_MANAGER_HOME (default ~/.service_manager): NAME.pid, NAME.env (the environment the
service was started with, mode 0600), logs/NAME.log (with logs/mcp-server.log linked to it), monitor.pid, monitor.json,
logs/monitor.log.
`start` gives the service this process's environment plus the .env beside this script (the
environment wins) and records it: `status`, `restart`, `backup` and the monitor use the recorded
one, so they follow the service's PORT, not the caller's. `start` refuses a port that another
process holds, and succeeds only when every worker of its own gunicorn has booted and /health answers. `stop` is not undone by
the monitor. `status NAME` exits 0 only when the process runs and /health answers; `status`
alone exits 0 when every service that runs is healthy.
The monitor polls health every MONITOR_INTERVAL seconds (30) and restarts a dead or unhealthy
service after MONITOR_BACKOFF x 2^n seconds (10), at most 5 times in a row; an hour healthy
resets the count. After giving up it waits: once the service is healthy again (you fixed it and
ran `start`) it watches again. `backup` copies the running service's SQLite store online.
Exit codes: 0 success, 1 failure (not running, unhealthy, port taken, start timed out, nothing
to back up), 2 usage."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from mcp.envfile import EnvFileError, merged  # noqa: E402 - standard library only, like this script

NAMES = {"mcp-orchestrator": "mcp-orchestrator", "mcp-server": "mcp-orchestrator"}
START_TIMEOUT = 20.0
MAX_RESTARTS = 5
HEALTHY_RESET = 3600.0
LOG_ROTATE_BYTES = 10 * 1024 * 1024  # a log past this size is rotated at the next start
LOG_KEEP = 3
PORT_WAIT = 5.0  # how long `start` waits for a taken port to be let go before refusing


def home() -> Path:
    return Path(os.environ.get("SERVICE_MANAGER_HOME", Path.home() / ".service_manager"))


def pid_file(name: str) -> Path:
    return home() / f"{name}.pid"


def write_whole(path: Path, text: str, mode: int = 0o666) -> None:
    """Write `path` beside it and rename it over, with `mode` (less the umask) from the start.

    design: `status`, `monitor-status` and the monitor read these files while `start` or the
    monitor writes them; a file truncated and then written was read half written (monitor.json
    as no restarts at all while the monitor's `start` still waited for the workers)."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as out:
        out.write(text)
    temporary.replace(path)


def log_file(name: str) -> Path:
    return home() / "logs" / f"{name}.log"


def env_file(name: str) -> Path:
    return home() / f"{name}.env"


def stop_marker(name: str) -> Path:
    return home() / f"{name}.stopped"


MONITORING = False  # set in the monitor's process: its log lines get timestamps


def say(message: str, stream=None) -> None:
    """A line of output; the monitor's log gets a timestamp on each."""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds") + " " if MONITORING else ""
    print(f"{stamp}{message}", file=stream or sys.stdout, flush=True)


def caller_env() -> dict[str, str]:
    """This process's environment plus the .env beside this script, as start.sh sees them."""
    return merged(ROOT / ".env", os.environ)


def service_env(name: str) -> dict[str, str]:
    """The environment the service was started with (recorded by `start`), else the caller's."""
    try:
        return json.loads(env_file(name).read_text())
    except (OSError, ValueError):
        return caller_env()


def port_of(env: dict[str, str]) -> int:
    return int(env.get("PORT") or 5060)


def health_url(port: int, path: str = "/health") -> str:
    return f"http://127.0.0.1:{port}{path}"


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


def healthy(port: int, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(health_url(port), timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def holds(pid: int, inodes: set[str]) -> bool:
    """Whether process `pid` has one of these sockets open (gunicorn's master holds its listener)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def port_holder(port: int) -> str | None:
    """Who holds `port`, in words, or None when it is free."""
    if not listening_inodes(port):
        return None
    try:
        with urllib.request.urlopen(health_url(port, "/health/live"), timeout=2) as response:
            if json.loads(response.read()).get("service") == "mcp-orchestrator":
                return "an mcp-orchestrator this manager did not start (systemd, ./start.sh or a stale pid file)"
    except (OSError, ValueError):
        pass
    return "another program"


def rotate(path: Path) -> None:
    """Keep LOG_KEEP old logs: NAME.log.1 is the newest."""
    try:
        if path.stat().st_size < LOG_ROTATE_BYTES:
            return
    except OSError:
        return
    for n in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))


def start(name: str, env: dict[str, str] | None = None) -> int:
    if running_pid(name):
        say(f"{name} is already running (pid {running_pid(name)})")
        stop_marker(name).unlink(missing_ok=True)
        return 0
    env = caller_env() if env is None else env
    port = port_of(env)
    holder = port_holder(port)
    deadline = time.monotonic() + PORT_WAIT
    while holder and time.monotonic() < deadline:
        time.sleep(0.25)  # the workers of a service that just died may still be letting go of it
        holder = port_holder(port)
    if holder:
        say(f"{name} not started: port {port} is already in use by {holder}; stop that one, or start with "
            f"another PORT (`ss -ltnp 'sport = :{port}'` names the process)", sys.stderr)
        return 1
    log_file(name).parent.mkdir(parents=True, exist_ok=True)
    rotate(log_file(name))
    with open(log_file(name), "ab") as log:
        # design: on a fresh host start.sh first builds the venv, a minute or more that the
        # start timeout (meant for gunicorn's boot) must not cover: that part runs to its end first.
        prepared = subprocess.run([str(ROOT / "start.sh"), "--prepare"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if prepared.returncode != 0:
            print(f"{name} could not be set up (start.sh --prepare exited with {prepared.returncode}); "
                  f"see {log_file(name)}", file=sys.stderr)
            return 1
        ready = ReadyListener(home() / f"{name}.notify")
        proc = subprocess.Popen([str(ROOT / "start.sh")], cwd=ROOT, env=ready.child_env(env), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    write_whole(pid_file(name), f"{proc.pid} {start_time(proc.pid)}\n")
    write_whole(env_file(name), json.dumps(env), mode=0o600)  # it may hold keys
    stop_marker(name).unlink(missing_ok=True)
    deadline = time.monotonic() + float(env.get("START_TIMEOUT", START_TIMEOUT))
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                say(f"{name} exited with {proc.returncode}; see {log_file(name)}", sys.stderr)
                return 1
            # design: healthy is not enough: the answer must come from our gunicorn, the one that
            # holds the listening socket, not from another service that was already on the port;
            # and one booted worker answering is not all of them: gunicorn says READY=1 (as it
            # does to systemd) once every worker has loaded the app and warmed up.
            if not ready.wait(0.25):
                continue
            if healthy(port, 1.0) and holds(proc.pid, listening_inodes(port)):
                say(f"{name} started (pid {proc.pid}, port {port})")
                return 0
            time.sleep(0.25)
        say(f"{name} did not become healthy in time; see {log_file(name)}", sys.stderr)
        return 1
    finally:
        ready.close()


class ReadyListener:
    """The sd_notify socket `start` hands to gunicorn, so it learns, as systemd would, when every
    worker has booted. Where the socket cannot be made (a path too long for AF_UNIX), `start`
    falls back to /health alone."""

    def __init__(self, path: Path):
        self.path, self.sock, self.seen = path, None, False
        path.unlink(missing_ok=True)
        try:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
        except OSError:
            self.close()

    def child_env(self, env: dict[str, str]) -> dict[str, str]:
        child = {k: v for k, v in env.items() if k != "NOTIFY_SOCKET"}
        if self.sock is not None:
            child["NOTIFY_SOCKET"] = str(self.path)
        return child

    def wait(self, timeout: float) -> bool:
        """True once READY=1 has come (at once when there is no socket to hear it on)."""
        if self.sock is None or self.seen:
            return True
        self.sock.settimeout(timeout)
        try:
            self.seen = b"READY=1" in self.sock.recv(4096)
        except OSError:
            pass
        return self.seen

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.path.unlink(missing_ok=True)


def stop(name: str, on_purpose: bool = True) -> int:
    """Stop the service. `on_purpose` (an operator's stop) tells the monitor to leave it stopped."""
    if on_purpose:
        home().mkdir(parents=True, exist_ok=True)
        stop_marker(name).touch()
    pid = running_pid(name)
    if pid is None:
        pid_file(name).unlink(missing_ok=True)
        say(f"{name} is not running")
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + float(service_env(name).get("GRACEFUL_TIMEOUT", "30")) + 5
    while time.monotonic() < deadline and running_pid(name):
        time.sleep(0.2)
    if running_pid(name):
        os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)
    say(f"{name} stopped")
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
        health = "healthy" if healthy(port_of(service_env(name))) else "unhealthy"
        code = code if health == "healthy" else 1
        print(f"{label}: running, pid {pid}, up {uptime // 3600}h{uptime // 60 % 60:02d}m{uptime % 60:02d}s, {health}")
    return code


def restart(name: str) -> int:
    """Stop, then start with the environment recorded at the last start (the caller's when none)."""
    env = service_env(name)
    stop(name)
    return start(name, env)


def status(name: str) -> int:
    pid = running_pid(name)
    port = port_of(service_env(name))
    if pid is None:
        holder = port_holder(port)
        say(f"{name}: not running" + (f" (port {port} is held by {holder})" if holder else ""))
        return 1
    if not healthy(port):
        say(f"{name}: running (pid {pid}) but {health_url(port)} does not answer 200")
        return 1
    say(f"{name}: running (pid {pid}), healthy on port {port}")
    return 0


def logs(name: str, lines: int, follow: bool = False) -> int:
    path = log_file(name)
    try:
        print("".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]), end="", flush=True)
    except OSError:
        say(f"no log at {path}", sys.stderr)
        return 1
    if not follow:
        return 0
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            while True:
                chunk = log.read()
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                elif path.exists() and path.stat().st_size < log.tell():
                    log.seek(0)  # rotated or truncated: read the new file from its start
                else:
                    time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def store_of(name: str) -> str:
    """The STORE_URL of the service: the one this manager runs, else (under systemd) the unit's
    main process's, else the environment recorded at the last start, else the caller's."""
    env, cwd = service_env(name), ROOT
    main_pid = ""
    if running_pid(name) is None and _has("systemctl"):
        main_pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", f"{name}.service"],
                                  capture_output=True, text=True).stdout.strip()
    if main_pid and main_pid != "0":
        try:
            raw = Path(f"/proc/{main_pid}/environ").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            cwd = Path(os.readlink(f"/proc/{main_pid}/cwd"))
        except OSError as exc:
            raise SystemExit(f"cannot read the environment of {name} (pid {main_pid}): {exc}; run as root") from exc
    if env.get("STORE_URL"):
        return env["STORE_URL"]
    data_dir = Path(env.get("DATA_DIR") or "./data")
    return f"sqlite:///{(cwd / data_dir).resolve() / 'orchestrator.db'}"


def _has(command: str) -> bool:
    return any((Path(d) / command).exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def backup(name: str, dest: str | None) -> int:
    """Copy the service's SQLite store with SQLite's online backup (consistent while it writes),
    check the copy, and print its path. Refuses a store that does not exist."""
    url = store_of(name)
    if not url.startswith("sqlite:///"):
        say(f"{name} uses {url.split('://')[0]}: back it up with the store's own tools (docs/deployment.md, Redis)",
            sys.stderr)
        return 1
    db = Path(url[len("sqlite:///"):])
    if not db.is_file() or db.stat().st_size == 0:
        say(f"no database at {db}: nothing to back up (is this the service's DATA_DIR?)", sys.stderr)
        return 1
    target = Path(dest) if dest else home() / "backups"
    if target.is_dir() or not target.suffix:
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"orchestrator-{datetime.now():%Y-%m-%d-%H%M%S}.db"
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        check = copy.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        source.close()
        copy.close()
    if check != "ok":
        say(f"the copy {target} fails its integrity check: {check}", sys.stderr)
        return 1
    say(f"backed up {db} to {target}")
    return 0


# -- the monitor --------------------------------------------------------------------------

def monitor_state() -> dict:
    try:
        return json.loads((home() / "monitor.json").read_text())
    except (OSError, ValueError):
        return {"name": None, "restarts": [], "consecutive": 0, "gave_up": False}


def save_state(state: dict) -> None:
    write_whole(home() / "monitor.json", json.dumps(state, indent=1))


def monitor(name: str) -> int:
    global MONITORING
    MONITORING = True
    interval = float(os.environ.get("MONITOR_INTERVAL", "30"))
    backoff = float(os.environ.get("MONITOR_BACKOFF", "10"))
    state = {**monitor_state(), "name": name, "consecutive": 0, "gave_up": False, "pid": os.getpid()}
    save_state(state)
    say(f"monitor watching {name} on port {port_of(service_env(name))}")
    healthy_since = time.monotonic()
    left_stopped = False
    while True:
        time.sleep(interval)
        _reap()
        if stop_marker(name).exists():
            if not left_stopped:
                say(f"{name} was stopped on purpose; not restarting it until it is started again")
            left_stopped = True
            continue
        left_stopped = False
        port = port_of(service_env(name))
        if running_pid(name) and healthy(port):
            if state["gave_up"]:
                say(f"{name} is healthy again; watching it again")
                state.update(gave_up=False, consecutive=0)
                save_state(state)
                healthy_since = time.monotonic()
            elif time.monotonic() - healthy_since >= HEALTHY_RESET and state["consecutive"]:
                state["consecutive"] = 0
                save_state(state)
            continue
        reason = "process not running" if running_pid(name) is None else "health check failed"
        if state["gave_up"]:
            continue
        if state["consecutive"] >= MAX_RESTARTS:
            state["gave_up"] = True
            state["gave_up_at"] = time.time()
            save_state(state)
            say(f"gave up on {name} after {MAX_RESTARTS} restarts in a row ({reason}); fix the cause and "
                f"`start` it: this monitor watches it again once it is healthy")
            continue
        time.sleep(backoff * 2 ** state["consecutive"])
        if stop_marker(name).exists() or (running_pid(name) and healthy(port)):
            continue  # stopped on purpose, or it recovered by itself while we waited
        say(f"restarting {name} ({reason}, try {state['consecutive'] + 1} of {MAX_RESTARTS})")
        env = service_env(name)
        state["consecutive"] += 1
        state["restarts"].append({"time": time.time(), "reason": reason, "started": None})
        save_state(state)  # before the start, so monitor-status shows a restart under way
        stop(name, on_purpose=False)
        state["restarts"][-1]["started"] = start(name, env) == 0
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
    if pid and monitor_state().get("gave_up"):
        say(f"replacing the monitor that gave up (pid {pid})")
        stop_monitor()
    elif pid:
        say(f"monitor already running (pid {pid})")
        return 0
    home().mkdir(parents=True, exist_ok=True)
    rotate(home() / "logs" / "monitor.log")
    with open(home() / "logs" / "monitor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_monitor", name], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    write_whole(home() / "monitor.pid", f"{proc.pid} {start_time(proc.pid)}\n")
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
        deadline = time.monotonic() + 5
        while monitor_pid() and time.monotonic() < deadline:
            time.sleep(0.1)
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
    parser.add_argument("command", choices=("start", "stop", "restart", "status", "logs", "backup",
                                            "start-monitor", "stop-monitor", "monitor-status", "_monitor"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("dest", nargs="?", help="backup: a directory or file (default SERVICE_MANAGER_HOME/backups)")
    parser.add_argument("-n", "--lines", type=int, default=100, help="lines of log to show")
    parser.add_argument("-f", "--follow", action="store_true", help="logs: keep printing new lines")
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
    handlers = {"start": start, "stop": stop, "restart": restart, "status": status,
                "start-monitor": start_monitor, "_monitor": monitor}
    try:
        if args.command == "logs":
            return logs(name, args.lines, args.follow)
        if args.command == "backup":
            return backup(name, args.dest)
        return handlers[args.command](name)
    except EnvFileError as exc:
        print(f"refusing {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
