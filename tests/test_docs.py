"""The docs say what the code does: every variable mcp/settings.py reads is in
docs/configuration.md and the README table with the same default, and the command blocks of
docs/deployment.md and docs/troubleshooting.md that can run on one host are run here."""

from __future__ import annotations

import re

import pytest

from mcp.settings import env_table
from tests.conftest import ROOT

# Settings whose field is empty and whose effective default the code derives (from DATA_DIR,
# the provider, a built-in table): the docs name the derived value, the same in both places.
DERIVED = {"STORE_URL", "BRAVE_API_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "PROMETHEUS_MULTIPROC_DIR",
           "LLM_MODEL", "PLANNER_MODEL", "WORKER_MODEL", "SYNTHESIS_MODEL", "MODEL_PRICES_FILE"}


def table_defaults(text: str) -> dict[str, str]:
    """`VARIABLE` -> its default cell, from every `| `VAR` | default | meaning |` row."""
    rows = {}
    for match in re.finditer(r"^\| `([A-Z][A-Z0-9_]+)` \|([^|]*)\|", text, re.M):
        rows.setdefault(match.group(1), match.group(2))
    return rows


def normal(cell: str) -> str:
    cell = cell.strip().replace("`", "").strip()
    cell = re.sub(r"^empty( \(disabled\))?$", "", cell)
    return cell


def canonical(default) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def same_value(doc: str, default) -> bool:
    if isinstance(default, float) and doc:
        try:
            return float(doc) == default
        except ValueError:
            return False
    return doc == canonical(default)


def test_every_setting_is_documented_with_the_same_default_in_both_places():
    config = table_defaults((ROOT / "docs" / "configuration.md").read_text())
    readme = table_defaults((ROOT / "README.md").read_text())
    wrong = []
    for env, default, _ in env_table():
        for where, rows in (("docs/configuration.md", config), ("README.md", readme)):
            if env not in rows:
                wrong.append(f"{env}: missing from {where}")
            elif env not in DERIVED and not same_value(normal(rows[env]), default):
                wrong.append(f"{env}: {where} says {rows[env].strip()!r}, the code {canonical(default)!r}")
        if env in DERIVED and env in config and env in readme and normal(config[env]) != normal(readme[env]):
            wrong.append(f"{env}: README says {readme[env].strip()!r}, configuration.md {config[env].strip()!r}")
    assert not wrong, "\n".join(wrong)


# -- the command blocks of docs/deployment.md and docs/troubleshooting.md ----------------------

DOCS = ("deployment.md", "troubleshooting.md")


def bash_blocks(name: str) -> list[str]:
    text = (ROOT / "docs" / name).read_text()
    return [m.group(1) for m in re.finditer(r"^```bash\n(.*?)^```", text, re.M | re.S)]


# Every bash block, by its first line: run here (the scenario below), or why it cannot run on
# one host without root. A new block must be added here, so it is either run or excused.
NOT_ON_ONE_HOST = {
    "sudo apt-get update": "installs packages and clones from the network; its ./preflight.sh is run below",
    "sudo useradd --system": "needs root and systemd",
    "sudo cp deploy/Caddyfile /etc/caddy/Caddyfile": "needs root and a public host name",
    "./deploy.sh                 # current branch head": "deploys are run by tests/ops/test_deploy.py",
    "./deploy.sh --status": "deploys are run by tests/ops/test_deploy.py",
    "# on every service host": "several hosts",
    'UPSTREAM="10.0.0.11:5060 10.0.0.12:5060"': "several hosts (tests/test_caddy.py runs two upstreams)",
    "redis-cli -a STRONG_PASSWORD": "a Redis host with a password (the Redis store is tested in tests/mcp/test_store.py)",
    "sudo systemctl stop mcp-orchestrator": "needs root and systemd",
    "journalctl -u mcp-orchestrator | grep": "systemd's journal",
    "claude mcp list": "Claude Code",
    "API_KEYS_FILE=/etc/mcp-orchestrator/keys": "a production .env; the keyed service behind Caddy runs below",
    "SITE_ADDRESS=https://127.0.0.1:8443 CADDY_HTTP_PORT=8080": "Caddy's internal TLS is run by tests/test_proxy_security.py",
}
RUN = [
    ("deployment.md", "python3 service_manager.py start mcp-orchestrator"),
    ("deployment.md", "curl -s http://127.0.0.1:5060/health/live"),
    ("troubleshooting.md", "./preflight.sh"),
    ("troubleshooting.md", "ss -ltnp 'sport = :5060'"),
    ("deployment.md", "SITE_ADDRESS=:8080 CADDY_ADMIN=localhost:2999 caddy run"),
    ("deployment.md", "KEY=...   # an API key"),
    ("troubleshooting.md", 'curl -N -H "X-API-Key: $KEY"'),
    ("troubleshooting.md", 'curl -s -H "X-API-Key: $KEY" http://127.0.0.1:5060/stats'),
    ("troubleshooting.md", "curl -s -H 'X-Request-ID: deploy-check-42'"),
    ("troubleshooting.md", "journalctl -u mcp-orchestrator -o cat -f"),
    ("deployment.md", "python3 service_manager.py start-monitor"),
    ("deployment.md", "python3 service_manager.py backup"),
    ("deployment.md", "DB=/var/lib/mcp-orchestrator/orchestrator.db"),
]


def test_every_command_block_is_run_or_excused():
    unclassified = []
    for name in DOCS:
        for block in bash_blocks(name):
            first = block.splitlines()[0]
            if not any(first.startswith(p) for p in NOT_ON_ONE_HOST) and not any(
                    n == name and first.startswith(p) for n, p in RUN):
                unclassified.append(f"{name}: {first}")
    assert not unclassified, unclassified


class Host:
    """One host as the docs assume it, with its own ports and directories: a copy of the
    checkout, the service under the service manager, Caddy in front."""

    def __init__(self, tmp_path):
        import os
        import sys

        from tests.conftest import free_port
        from tests.ops.test_lifecycle import copy_checkout

        self.tmp = tmp_path
        self.root = copy_checkout(tmp_path / "clone")
        self.port, self.caddy_port, self.admin_port = free_port(), free_port(), free_port()
        self.key = "docs-test-key-0123456789"
        self.data = tmp_path / "data"
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "DATA_DIR", "PORT")},
                    "PORT": str(self.port), "DATA_DIR": str(self.data), "VENV_DIR": sys.prefix,
                    "SKIP_PIP_INSTALL": "1", "WORKERS": "2", "GRACEFUL_TIMEOUT": "5", "API_KEYS": f"ops:{self.key}",
                    "SERVICE_MANAGER_HOME": str(tmp_path / "sm"), "UPSTREAM": f"127.0.0.1:{self.port}",
                    "KEY": self.key, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                    "XDG_CONFIG_HOME": str(tmp_path)}
        self.task_id = ""
        self.pid = ""
        self.background = []

    def substitute(self, block: str) -> str:
        journal = "python3 service_manager.py logs mcp-orchestrator -n 100000"
        lines = []
        for line in block.splitlines():
            if line.startswith(("sudo ", "systemctl stop", "kill ", "PORT=5070 ./start.sh")) or " -f |" in line:
                continue  # root, another supervisor, or a command that follows forever
            if line.startswith("python3 service_manager.py stop") and "# if the service manager owns it" in line:
                continue  # the alternatives for a port held by someone else
            lines.append(line)
        text = "\n".join(lines) + "\n"
        for old, new in (("journalctl -u mcp-orchestrator --since '15 min ago' -o cat", journal),
                         ("journalctl -u mcp-orchestrator -o cat", journal),
                         ("systemctl status mcp-orchestrator", "python3 service_manager.py status mcp-orchestrator"),
                         ("https://dr.eamer.dev/mcp", f"http://127.0.0.1:{self.caddy_port}/mcp"),
                         ("localhost:2999", f"localhost:{self.admin_port}"), ("8080", str(self.caddy_port)),
                         ("5060", str(self.port)), ("/var/backups/mcp-orchestrator", str(self.tmp / "backups")),
                         ("/var/lib/mcp-orchestrator", str(self.data)), ("KEY=...", f"KEY={self.key}"),
                         ("<task_id from the answer>", self.task_id), ("<task_id>", self.task_id),
                         ("research_5f2c…", self.task_id), ("3c1f…", "deploy-check-42"), ("<pid>", self.pid)):
            text = text.replace(old, new)
        return text

    def run(self, block: str, timeout: float = 120, pipefail: bool = True):
        import subprocess

        script = self.substitute(block)
        # design: pipefail shows a failing command before a pipe (a jq parse error); without it,
        # as in an operator's shell, `curl … | head -5` may end curl with "failure writing".
        done = subprocess.run(["bash", "-eu", *(["-o", "pipefail"] if pipefail else []), "-c", script], cwd=self.root, env={**self.env, "TASK": self.task_id},
                              capture_output=True, text=True, timeout=timeout)
        return done, script

    def start_caddy(self, block: str) -> None:
        import subprocess
        import time

        import requests

        first, rest = block.split("\n", 1)
        line = self.substitute(first).strip()
        log = open(self.tmp / "caddy.log", "wb")
        proc = subprocess.Popen(["bash", "-c", f"exec env {line}"], cwd=self.root, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.background.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{self.caddy_port}/mcp/health/live", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (self.tmp / "caddy.log").read_text()[-2000:]
            time.sleep(0.2)
        self.caddy_rest = rest

    def stop(self) -> None:
        import subprocess

        subprocess.run(["python3", "service_manager.py", "stop-monitor"], cwd=self.root, env=self.env,
                       capture_output=True, timeout=30)
        subprocess.run(["python3", "service_manager.py", "stop", "mcp-orchestrator"], cwd=self.root, env=self.env,
                       capture_output=True, timeout=60)
        for proc in self.background:
            proc.terminate()
            proc.wait(10)


def block(name: str, first: str) -> str:
    return next(b for b in bash_blocks(name) if b.startswith(first))


@pytest.mark.slow
def test_the_command_blocks_do_what_the_text_next_to_them_says(tmp_path):
    import json
    import time

    import requests

    host = Host(tmp_path)
    try:
        # "Running without systemd": each command succeeds; stop leaves it stopped
        done, script = host.run(block("deployment.md", "python3 service_manager.py start mcp-orchestrator"))
        assert done.returncode == 0, script + done.stdout + done.stderr
        assert "started" in done.stdout and "healthy" in done.stdout and "stopped" in done.stdout
        done, _ = host.run("python3 service_manager.py start mcp-orchestrator\n")
        assert done.returncode == 0, done.stdout + done.stderr
        host.pid = (tmp_path / "sm" / "mcp-orchestrator.pid").read_text().split()[0]
        # "First deploy", in another terminal: liveness, health, service info with the release
        done, script = host.run(block("deployment.md", "curl -s http://127.0.0.1:5060/health/live"))
        assert done.returncode == 0 and '"status":"alive"' in done.stdout and '"healthy"' in done.stdout
        assert '"release"' in done.stdout
        # "First checks for any problem": preflight passes beside the running service
        done, script = host.run(block("troubleshooting.md", "./preflight.sh"))
        assert done.returncode == 0, script + done.stdout + done.stderr
        assert "all checks passed" in done.stderr and "is held by mcp-orchestrator" in done.stdout
        # "Port already in use": ss and ps name the gunicorn master
        done, _ = host.run(block("troubleshooting.md", "ss -ltnp 'sport = :5060'"))
        assert done.returncode == 0 and f":{host.port}" in done.stdout and "gunicorn" in done.stdout
        # a task to look at
        answer = requests.post(f"http://127.0.0.1:{host.port}/tools/orchestrate_research",
                               headers={"X-API-Key": host.key, "X-Request-ID": "deploy-check-42"},
                               json={"query": "How does deploy.sh roll back?", "num_agents": 2, "wait": True},
                               timeout=120).json()
        host.task_id = answer["task_id"]
        # "Trying the Caddy setup locally": through Caddy, liveness and the task's stream
        caddy = block("deployment.md", "SITE_ADDRESS=:8080 CADDY_ADMIN=localhost:2999 caddy run")
        host.start_caddy(caddy)
        done, script = host.run(host.caddy_rest.replace("local-secret", host.key))
        assert done.returncode == 0 and '"status":"alive"' in done.stdout and "event: workflow_complete" in done.stdout
        # "Checking a deployment end to end": the answer's stream_url starts with /mcp
        done, script = host.run(block("deployment.md", "KEY=...   # an API key"))
        assert done.returncode == 0, script + done.stderr
        assert "orchestrate_research" in done.stdout and '"stream_url":"/mcp/stream/' in done.stdout.replace(" ", "")
        assert "event: workflow_complete" in done.stdout
        # SSE directly; stats; the runtime check
        done, _ = host.run(block("troubleshooting.md", 'curl -N -H "X-API-Key: $KEY"').splitlines()[0],
                           pipefail=False)
        assert done.returncode == 0 and "id: 1" in done.stdout
        done, _ = host.run(block("troubleshooting.md", 'curl -s -H "X-API-Key: $KEY" http://127.0.0.1:5060/stats'))
        assert done.returncode == 0 and "'live_workers': 2" in done.stdout and '"completed"' in done.stdout
        # "Reading the logs": jq reads every line, and the request id finds the access line
        for attempt in range(5):
            done, script = host.run(block("troubleshooting.md", "curl -s -H 'X-Request-ID: deploy-check-42'"))
            if '"request_id":"deploy-check-42"' in done.stdout:
                break
            time.sleep(0.5)
        assert done.returncode == 0, script + done.stderr
        # curl's answer has no final newline: the first log line follows it on the same line
        found = [json.loads(line[line.index('{"time"'):]) for line in done.stdout.splitlines() if '{"time"' in line]
        assert any(r["name"] == "mcp.access" and r["route"] == "/tasks" for r in found), done.stdout
        done, script = host.run(block("troubleshooting.md", "journalctl -u mcp-orchestrator -o cat -f"))
        assert done.returncode == 0, script + done.stderr  # jq parsed every line of the log
        assert '"request_id":"deploy-check-42"' in done.stdout
        # "The restart monitor"
        done, _ = host.run(block("deployment.md", "python3 service_manager.py start-monitor"))
        assert done.returncode == 0 and '"running": true' in done.stdout and "monitor stopped" in done.stdout
        # "Backing up": the service manager's backup, then the recipe by hand
        done, script = host.run(block("deployment.md", "python3 service_manager.py backup"))
        assert done.returncode == 0 and "backed up" in done.stdout, script + done.stderr
        done, script = host.run(block("deployment.md", "DB=/var/lib/mcp-orchestrator/orchestrator.db"))
        assert done.returncode == 0 and done.stdout.strip() == "ok" and not done.stderr, script + done.stderr
    finally:
        host.stop()


def test_the_caddyfile_in_the_docs_is_the_shipped_one():
    text = (ROOT / "docs" / "deployment.md").read_text()
    shown = re.search(r"^```caddyfile\n(.*?)^```", text, re.M | re.S).group(1)
    assert shown == (ROOT / "deploy" / "Caddyfile").read_text()


@pytest.mark.parametrize("script", ["start.sh", "preflight.sh", "deploy.sh"])
def test_help_is_the_header_and_unknown_arguments_are_refused(script):
    import subprocess

    shown = subprocess.run([str(ROOT / script), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "Usage:" in shown.stdout and "Exit codes" in shown.stdout
    assert "set -euo" not in shown.stdout
    if script == "start.sh":
        refused = subprocess.run([str(ROOT / script), "--port=5070"], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 2 and "unknown argument: --port=5070" in refused.stderr
