"""One .env reader for start.sh, preflight.sh, service_manager.py and Settings: the syntax it
reads, what it refuses, and settings errors that name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcp.envfile import EnvFileError, parse
from mcp.settings import Settings, SettingsError
from tests.conftest import ROOT


def test_quotes_comments_export_and_spaces_are_read_as_python_dotenv_reads_them():
    text = """
# a comment
PORT="6105"   # the port
export WORKERS=3
LOG_LEVEL = debug
API_KEYS='ops:a#b c'
SENTRY_ENVIRONMENT=staging # trailing comment
WEBHOOK_SECRET="line\\nbreak \\"quoted\\""
EMPTY=
URLISH=http://host:1/x#frag
"""
    assert parse(text) == {"PORT": "6105", "WORKERS": "3", "LOG_LEVEL": "debug", "API_KEYS": "ops:a#b c",
                           "SENTRY_ENVIRONMENT": "staging", "WEBHOOK_SECRET": 'line\nbreak "quoted"', "EMPTY": "",
                           "URLISH": "http://host:1/x#frag"}


@pytest.mark.parametrize("line, reason", [
    ("PORT 6105", "not a KEY=value assignment"),
    ('PORT="6105', "unterminated double quote"),
    ("PORT='6105", "unterminated single quote"),
    ('PORT="6105" extra', "text after the closing quote"),
    ("DATA_DIR=${HOME}/data", "${...} is not expanded"),
    ("1PORT=5", "not a KEY=value assignment"),
])
def test_lines_it_does_not_understand_are_refused_with_their_number(line, reason):
    with pytest.raises(EnvFileError) as refused:
        parse(f"# first\n{line}\n", "/srv/.env")
    assert str(refused.value).startswith("/srv/.env:2:") and reason in str(refused.value)


def test_settings_errors_name_the_variable_and_booleans_are_strict():
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"PORT": "abc", "WORKERS": "zero", "RATE_LIMIT_ENABLED": "maybe"})
    message = str(bad.value)
    assert "PORT='abc'" in message and "WORKERS='zero'" in message and "RATE_LIMIT_ENABLED='maybe'" in message
    assert Settings.from_env({"SKIP_PIP_INSTALL": "true", "METRICS_ENABLED": "off"}).skip_pip_install is True
    assert Settings.from_env({"WORKERS": "0", "PORT": "70000"}).problems() == [
        "PORT=70000: must be between 1 and 65535", "WORKERS=0: must be at least 1"]


def test_settings_read_the_env_file_beneath_the_environment(tmp_path):
    (tmp_path / ".env").write_text('PORT="6105"  # from the file\nWORKERS=2\n')
    s = Settings.from_env({"WORKERS": "5"}, env_file=tmp_path / ".env")
    assert (s.port, s.workers) == (6105, 5)


def test_the_reader_runs_with_the_system_python_and_prints_shell_exports(tmp_path):
    (tmp_path / ".env").write_text("export NAME='it''s'\nQUOTED=\"a b\"\n")
    out = subprocess.run(["python3", str(ROOT / "mcp" / "envfile.py"), str(tmp_path / ".env")], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and ".env:1: NAME: text after the closing quote" in out.stderr
    (tmp_path / ".env").write_text("QUOTED=\"a b; rm -rf x\"\n")
    out = subprocess.run([sys.executable, str(ROOT / "mcp" / "envfile.py"), str(tmp_path / ".env")],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout == "export QUOTED='a b; rm -rf x'\n"
