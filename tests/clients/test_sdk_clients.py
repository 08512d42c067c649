"""The official MCP Python SDK client against 4 real gunicorn workers, over every transport:
Streamable HTTP, legacy HTTP+SSE, stdio in process, and the stdio bridge to HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sdk_client.py")
SDK_PYTHON = os.environ.get("MCP_SDK_PYTHON",
                            str(Path.home() / ".cache" / "mcp-orchestrator" / "sdk-venv" / "bin" / "python"))
EXPECTED_TOOLS = {"orchestrate_research", "orchestrate_search", "get_orchestration_status", "get_orchestration_result",
                  "cancel_orchestration", "list_orchestrations", "list_orchestrator_patterns", "fetch_url",
                  *(f"{source}_search" for source in ("local", "wikipedia", "arxiv", "web", "github", "hackernews",
                                                       "semantic_scholar"))}

if not Path(SDK_PYTHON).exists():
    pytest.skip("the MCP SDK venv is missing: run ./test.sh, which installs it", allow_module_level=True)


def run_client(*args: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([SDK_PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_full_session(seen: dict) -> None:
    assert seen["server"] == "mcp-orchestrator" and seen["protocol"] == "2025-11-25"
    assert set(seen["tools"]) == EXPECTED_TOOLS
    assert seen["patterns_error"] is False
    assert seen["search_status"] == seen["research_status"] == "completed" and seen["research_cites"]
    assert seen["progress_notifications"] > 0
    info = [r for r in seen["resources"] if r.endswith("/info")]
    reports = [r for r in seen["resources"] if "/report." in r]
    assert info == ["orchestrator://research/info", "orchestrator://search/info"]
    assert set(seen["resources"]) == {*info, *reports, "orchestrator://dead-letter"}
    # each finished task of the key (at least this session's two, at most ten), every format
    assert 8 <= len(reports) <= 40 and len(reports) % 4 == 0
    assert {r.rsplit(".", 1)[1] for r in reports} == {"md", "html", "pdf", "docx"}
    assert seen["report_pdf"] == {"kind": "blob", "mime": "application/pdf", "head": "%PDF-"}
    assert seen["report_md"] == {"kind": "text", "mime": "text/markdown", "head": "# "}
    assert seen["result_docx"]["kind"] == "blob" and seen["result_docx"]["head"].startswith("PK")
    assert seen["info_tool"] == "orchestrate_research" and seen["prompt_mentions_tool"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from tests.conftest import Service

    tmp = tmp_path_factory.mktemp("sdk")
    env = {"RATE_LIMIT_ORCHESTRATE": "100 per minute"}
    open_service = Service(tmp / "open", env, tmp / "open.log").start()
    keyed_service = Service(tmp / "keyed", {**env, "API_KEYS": "sdk:sdk-secret"}, tmp / "keyed.log").start()
    yield open_service, keyed_service
    open_service.stop()
    keyed_service.stop()


def test_streamable_http(services):
    assert_full_session(run_client("http", f"{services[0].url}/mcp"))


def test_streamable_http_with_an_api_key(services):
    keyed = services[1]
    assert_full_session(run_client("http", f"{keyed.url}/mcp", "--api-key", "sdk-secret"))
    refused = subprocess.run([SDK_PYTHON, str(SCRIPT), "http", f"{keyed.url}/mcp"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "MCPError" in refused.stderr


def test_legacy_sse(services):
    assert_full_session(run_client("sse", f"{services[0].url}/sse"))


def test_stdio_in_process(tmp_path):
    command = [sys.executable, "-m", "mcp.stdio"]
    # The SDK passes the server only a safe subset of the environment, so the data directory
    # comes from the working directory: ./data under a scratch copy of the docs.
    workdir = tmp_path / "stdio"
    workdir.mkdir()
    (workdir / "docs").symlink_to(ROOT / "docs")
    (workdir / "mcp").symlink_to(ROOT / "mcp")
    (workdir / "orchestration").symlink_to(ROOT / "orchestration")
    (workdir / "app.py").symlink_to(ROOT / "app.py")
    assert_full_session(run_client("--cwd", str(workdir), "stdio", "--", *command))
    assert (workdir / "data" / "orchestrator.db").exists()


def test_stdio_bridge_to_http(services):
    keyed = services[1]
    command = [sys.executable, "-m", "mcp.stdio", "--url", f"{keyed.url}/mcp", "--api-key", "sdk-secret"]
    assert_full_session(run_client("--cwd", str(ROOT), "stdio", "--", *command))
