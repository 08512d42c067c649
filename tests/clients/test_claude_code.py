"""Claude Code (npm @anthropic-ai/claude-code, installed by ./test.sh) as an MCP client, run
with the service inside a network namespace this test creates (`unshare -n`, loopback
only): `claude mcp add --transport http` then `claude mcp list` shows Connected directly,
with an API key header, and through Caddy; without the key it does not connect."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
HOME = Path(os.environ.get("MCP_CLIENTS_DIR", Path.home() / ".cache" / "mcp-orchestrator")) / "claude-code"
CLAUDE = HOME / "node_modules" / ".bin" / "claude"
SCRIPT = Path(__file__).with_name("claude_code_netns.sh")

if not CLAUDE.exists():
    pytest.skip("Claude Code is missing: run ./test.sh, which installs it", allow_module_level=True)


def can_unshare_network() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by ./test.sh")
@pytest.mark.skipif(not can_unshare_network(), reason="needs root (or user namespaces) for unshare -n")
def test_claude_code_connects_directly_with_a_key_and_through_caddy_with_no_way_off_loopback(tmp_path):
    env = {**os.environ, "ROOT": str(ROOT), "PYTHON_PREFIX": sys.prefix, "WORK": str(tmp_path),
           "CLAUDE": str(CLAUDE), "API_KEY": secrets.token_hex(16)}
    # design: its own process group, so a timeout also ends the services the script started
    with subprocess.Popen(["unshare", "-n", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:] + logs
    listed = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+): .* - (.+)$", run.stdout, re.M)}
    assert set(listed) == {"direct", "keyed", "caddy", "keyless"}, run.stdout
    for name in ("direct", "keyed", "caddy"):
        assert "Connected" in listed[name], run.stdout + logs
    assert "Connected" not in listed["keyless"], run.stdout
    assert "isolated: yes" in run.stdout
