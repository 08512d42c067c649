"""Shared fixtures (CONVENTIONS 10): `settings`, `app`, `client` for in-process tests;
`service_factory` / `service` for a real gunicorn with several workers started the way
start.sh starts it; `fake_llm` for a local OpenAI-compatible server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.openai_server import FakeServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import app as app_module  # noqa: E402
from mcp.settings import Settings  # noqa: E402
from tests.parallel import (  # noqa: E402, F401
    pytest_collection_modifyitems, pytest_runtest_protocol, pytest_xdist_make_scheduler)

_runtimes: list[weakref.ref] = []  # of every app a test builds in process
_create_app = app_module.create_app


def create_app(*args: Any, **kwargs: Any) -> Any:
    """`app.create_app`, kept track of: a test that builds an app in process and does not
    stop its runtime leaves its loops running for the rest of the run, and one on Redis
    logs connection errors into closed streams once the Redis of the run is gone. (A
    running runtime is kept alive by its own loop, so a weak reference finds it.)"""
    application = _create_app(*args, **kwargs)
    _runtimes.append(weakref.ref(application.extensions["mcp_orchestrator"].runtime))
    return application


app_module.create_app = create_app  # test modules import it after this conftest


def stop_leftover_runtimes() -> None:
    while _runtimes:
        runtime = _runtimes.pop()()
        if runtime is not None:
            runtime.stop()


@pytest.fixture(scope="session", autouse=True)
def _leftover_runtimes_stopped() -> Iterator[None]:
    yield
    stop_leftover_runtimes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, data_dir=str(tmp_path / "data"), docs_dir=str(ROOT / "docs"), log_format="text",
                             lease_ttl=3.0, task_scan_interval=0.5)


@pytest.fixture
def app(settings: Settings):
    application = create_app(settings)
    yield application
    application.extensions["mcp_orchestrator"].runtime.stop()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free loopback port, with AOF so restarts keep data."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url
    stop_leftover_runtimes()  # before their Redis goes away under them
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def fake_llm() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


class Service:
    """A real gunicorn master + workers, started through start.sh."""

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "DATA_DIR": str(data_dir),
            "DOCS_DIR": str(ROOT / "docs"),
            "VENV_DIR": sys.prefix,
            "SKIP_PIP_INSTALL": "1",
            "WORKERS": "4",
            "LOG_FORMAT": "text",
            "LEASE_TTL": "3",
            "TASK_SCAN_INTERVAL": "0.5",
            "GRACEFUL_TIMEOUT": "10",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Service:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(ROOT / "start.sh")], cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200 and len(self.worker_pids()) >= int(
                        self.env["WORKERS"]):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"service did not become healthy: {self.log_path.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request on a fresh connection, so consecutive calls spread over workers."""
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def wait_status(self, task_id: str, statuses: set[str], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.get(f"/tasks/{task_id}").json()
            if doc["status"] in statuses:
                return doc
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} never reached {statuses}: {doc}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None) -> Service:
        n = len(started)
        service = Service(data_dir or tmp_path / f"data{n}", env or {}, tmp_path / f"service{n}.log")
        started.append(service.start())
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def service(service_factory) -> Service:
    return service_factory()
