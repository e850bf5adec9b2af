"""The vendors' own client libraries, each in a virtualenv of its own, and a way to run a probe
script inside one.

- A client's virtualenv is built once per machine and reused: it lives under the cache directory
  (`PORTAL_CLIENT_VENVS`, default `~/.cache/portal-client-venvs`), outside the repository, named by
  the exact pinned requirement and the interpreter's version, so a new pin or a new Python builds a
  new one and nothing ever installs a client into the project's own environment.
- Two test runs on one machine (two worktrees, CI next to a developer) may want the same venv at
  once: a file lock per venv makes the second wait for the first and then reuse its work. A venv
  counts as built only once its marker file is written, after pip succeeded, so an interrupted
  build is redone rather than trusted.
- No network means no client, and that FAILS the test with pip's own words: a client test that
  skips is a promise nobody checks.
- A probe is a small script of tests/clients/probes/, run with the client venv's interpreter. It
  takes one JSON argument and prints one JSON document: what it called, whether the answer parsed
  into the client's own models, and the parsed values. The pytest side asserts on that.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROBES = Path(__file__).resolve().parent / "probes"
PIP_TIMEOUT_SECONDS = 900
PROBE_TIMEOUT_SECONDS = 120
_READY = "portal-client-ready.json"


@dataclass(frozen=True)
class ClientPackage:
    """One vendor client, pinned: the version is the promise the tests check."""

    name: str  # the distribution on PyPI
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


WEAVE = ClientPackage("weave", "0.54.0")
VENICE_PY = ClientPackage("venice-py", "2.9.0")
PYVENICE = ClientPackage("pyvenice", "0.3.1")


def cache_root() -> Path:
    return Path(os.environ.get("PORTAL_CLIENT_VENVS") or Path.home() / ".cache" / "portal-client-venvs")


def venv_dir(package: ClientPackage) -> Path:
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache_root() / f"{package.name}-{package.version}-{python}"


def _size_of(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())


def ensure_venv(package: ClientPackage) -> Path:
    """The client's interpreter, building its venv first if this machine has none yet."""
    venv = venv_dir(package)
    python = venv / "bin" / "python"
    ready = venv / _READY
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if ready.exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)  # half-built by an interrupted run: start again
        started = time.monotonic()
        steps = (
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
             package.requirement],
        )
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.fail(f"Installing {package.requirement} into {venv} took over {PIP_TIMEOUT_SECONDS} s.",
                            pytrace=False)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.fail(
                    f"Could not install the client {package.requirement} into its own venv {venv}: "
                    f"`{' '.join(step)}` exited {done.returncode}. These tests need PyPI (or a local index) "
                    f"once per machine; afterwards the venv is reused.\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False,
                )
        seconds = time.monotonic() - started
        ready.write_text(json.dumps({"requirement": package.requirement, "python": sys.version,
                                     "install_seconds": round(seconds, 1), "bytes": _size_of(venv)}))
        print(f"\nbuilt {venv} for {package.requirement} in {seconds:.1f} s")
        return python


def install_record(package: ClientPackage) -> dict[str, Any]:
    """How long this machine's first install of the client took and how big its venv is."""
    return json.loads((venv_dir(package) / _READY).read_text())


def run_probe(package: ClientPackage, probe: str, argument: dict[str, Any]) -> dict[str, Any]:
    """Run probes/<probe>.py in the client's venv with `argument`; its JSON answer."""
    python = ensure_venv(package)
    # Only what a client needs: no DJANGO_SETTINGS_MODULE, no project on the path.
    environment = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    # The live server is on this machine: no proxy, whatever the environment says.
    environment.update({"NO_PROXY": "*", "no_proxy": "*"})
    done = subprocess.run(
        [str(python), "-I", str(PROBES / f"{probe}.py"), json.dumps(argument)],
        capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, env=environment, cwd=PROBES,
    )
    if done.returncode != 0:
        pytest.fail(f"The {package.requirement} probe {probe}.py crashed ({done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}", pytrace=False)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"The {probe}.py probe printed no JSON:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}",
                    pytrace=False)
