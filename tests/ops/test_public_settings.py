"""Settings that serve remote clients are refused without API keys, naming the variables, by
preflight.sh, start.sh and deploy.sh (which runs preflight.sh on the new release)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.ops.conftest import seed_release_venv
from tests.fakes.oauth_issuer import FakeIssuer
from tests.ops.test_deploy import deploy, deployment  # noqa: F401 - the fixture
from tests.ops.test_service_manager import env, run  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

PUBLIC_WITHOUT_KEYS = [
    ({"TRUSTED_PROXIES": "1"}, ["TRUSTED_PROXIES"]),
    ({"ALLOWED_HOSTS": "orchestrator.example.org"}, ["ALLOWED_HOSTS"]),
    ({"PUBLIC_BASE_PATH": "/mcp"}, ["PUBLIC_BASE_PATH"]),
    ({"CORS_ORIGINS": "http://localhost:3000,https://app.example.org"}, ["CORS_ORIGINS"]),
    ({"BIND_ADDRESS": "0.0.0.0"}, ["BIND_ADDRESS"]),
    ({"TRUSTED_PROXIES": "1", "ALLOWED_HOSTS": "orchestrator.example.org", "PUBLIC_BASE_PATH": "/mcp"},
     ["TRUSTED_PROXIES", "ALLOWED_HOSTS", "PUBLIC_BASE_PATH"]),
]
CLEAN = {"API_KEYS": "", "API_KEYS_FILE": "", "OAUTH_ISSUER": "", "OAUTH_BUILTIN": "", "TRUSTED_PROXIES": "", "ALLOWED_HOSTS": "", "PUBLIC_BASE_PATH": "",
         "CORS_ORIGINS": "", "BIND_ADDRESS": "127.0.0.1"}


@pytest.mark.parametrize("settings, named", PUBLIC_WITHOUT_KEYS)
def test_preflight_and_start_refuse_public_settings_without_keys(env, settings, named):  # noqa: F811
    env = {**env, **CLEAN, **settings}
    preflight = run([str(ROOT / "preflight.sh")], env)
    assert preflight.returncode == 1
    config = next(line for line in preflight.stdout.splitlines() if line.startswith("FAIL  config"))
    assert all(name in config for name in named) and "API_KEYS" in config, config
    start = run([str(ROOT / "start.sh")], env, timeout=20)
    assert start.returncode == 1 and all(name in start.stderr for name in named), start.stderr


def test_preflight_accepts_them_with_keys_and_local_cors(env):  # noqa: F811
    keyed = {**env, **CLEAN, "API_KEYS": "ops:ops-secret", "TRUSTED_PROXIES": "1", "PUBLIC_BASE_PATH": "/mcp",
             "ALLOWED_HOSTS": "orchestrator.example.org", "CORS_ORIGINS": "https://app.example.org"}
    assert run([str(ROOT / "preflight.sh")], keyed).returncode == 0
    local_cors = {**env, **CLEAN, "CORS_ORIGINS": "http://localhost:3000,http://127.0.0.1:8080,http://[::1]:3000"}
    assert run([str(ROOT / "preflight.sh")], local_cors).returncode == 0


def test_an_external_issuer_stands_in_for_keys_and_preflight_reads_it(env):  # noqa: F811
    issuer = FakeIssuer().start()
    try:
        settings = {**env, **CLEAN, "OAUTH_ISSUER": issuer.url, "TRUSTED_PROXIES": "1"}
        checked = run([str(ROOT / "preflight.sh")], settings)
        assert checked.returncode == 0, checked.stdout
        assert f"ok    oauth          {issuer.url}: metadata and JWKS read (1 keys)" in checked.stdout
    finally:
        issuer.stop()
    down = run([str(ROOT / "preflight.sh")], settings)
    assert down.returncode == 1 and "FAIL  oauth" in down.stdout and "metadata could not be read" in down.stdout
    # the built-in server needs keys: the operator approves each client with one
    builtin = run([str(ROOT / "preflight.sh")], {**env, **CLEAN, "OAUTH_BUILTIN": "1"})
    assert builtin.returncode == 1 and "nobody could approve a client" in builtin.stdout


def test_deploy_refuses_a_proxy_setup_without_keys(deployment):  # noqa: F811
    repo, root, env = deployment
    seed_release_venv(root, repo)  # the refusal is the point here; test_deploy.py installs for real
    refused = deploy(repo, {**env, **CLEAN, "TRUSTED_PROXIES": "1"})
    assert refused.returncode != 0
    assert "TRUSTED_PROXIES" in refused.stderr and "nothing changed" in refused.stderr
    assert not (root / "current").exists()
