"""Fixtures of the operations tests: a wheelhouse, so that the first-run paths (deploy.sh,
start.sh, bench/run.sh) really create their venvs and really run pip, offline and fast."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.parallel import shared_tmp


@pytest.fixture(scope="session")
def wheelhouse(pytestconfig) -> Path:
    """Wheels of every pinned dependency (runtime, tests and bench), built once per run from
    the package registry: by the first process of the run that needs them, the others wait."""
    shared = shared_tmp(pytestconfig)
    house = shared / "wheelhouse"
    with open(shared / "wheelhouse.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (house / ".built").exists():
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                                    "--wheel-dir", str(house), "-r", str(ROOT / "requirements-dev.txt")],
                                   capture_output=True, text=True, timeout=900)
            assert built.returncode == 0, built.stderr[-3000:]
            (house / ".built").touch()
    return house


def seed_release_venv(deploy_root: Path, repo: Path) -> Path:
    """The venv deploy.sh keeps for `repo`'s requirements.txt, made of links to the test's own
    venv and marked complete, for the tests about something other than that install
    (test_deploy.py and test_first_run.py install it for real)."""
    digest = hashlib.sha256((repo / "requirements.txt").read_bytes()).hexdigest()
    venv = deploy_root / "venvs" / digest[:16]
    venv.mkdir(parents=True)
    for entry in Path(sys.prefix).iterdir():
        (venv / entry.name).symlink_to(entry)
    # design: without the marker deploy.sh takes the venv for one a killed deploy left, removes
    # it and installs anew (what once made test_deploy_config.py install from the registry)
    (venv / ".complete").write_text(f"{digest}\n")
    return venv


@pytest.fixture
def offline_pip(wheelhouse) -> dict[str, str]:
    """Environment under which every `pip install` installs from the wheelhouse only."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
