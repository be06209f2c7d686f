"""The termination handler's image, structurally (Docker cannot run here): pinned base, hashed packages
that are exactly the handler's dependency closure at constraints.txt's versions, the copied modules enough to
run the entrypoint. The CI jobs that build and push it: tests/test_policies_ci.py."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from importlib.metadata import files
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = ROOT / "images" / "termination-handler"
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()
sys.path.insert(0, str(IMAGE_DIR))
import lock  # noqa: E402  (images/termination-handler/lock.py)


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def requirements() -> dict[str, tuple[str, list[str]]]:
    text = re.sub(r"\\\n\s*", " ", (IMAGE_DIR / "requirements.txt").read_text())
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, *hashes = line.split()
        name, version = spec.split("==")
        out[name] = (version, [h.removeprefix("--hash=sha256:") for h in hashes])
    return out


def test_the_base_image_is_pinned_by_digest():
    [base] = [rest for word, rest in instructions() if word == "FROM"]
    assert re.fullmatch(r"[a-z0-9.-]+(/[a-z0-9._-]+)+:[\w.-]+@sha256:[0-9a-f]{64}", base), base
    assert "python:3.11" in base       # the project's Python (requirements' compiled wheels are cp311)


def test_packages_install_only_from_the_hashed_list_without_resolution():
    [install] = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "-r /tmp/requirements.txt"):
        assert flag in install, flag
    copied = [rest for word, rest in instructions() if word == "COPY" and "requirements.txt" in rest]
    assert copied == ["images/termination-handler/requirements.txt /tmp/requirements.txt"]


def test_requirements_are_the_handlers_closure_at_the_projects_pins_every_wheel_hashed():
    reqs = requirements()
    pins = lock.pins()
    assert sorted(reqs) == lock.closure() and {"boto3", "kubernetes", "botocore", "urllib3"} <= set(reqs)
    for name, (version, hashes) in reqs.items():
        assert pins[name] == version, name
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
        compiled = any(str(f).endswith(".so") for f in files(name) or [])
        assert len(hashes) >= (2 if compiled else 1), f"{name}: a compiled package needs amd64 and arm64 wheels"


def test_the_closure_follows_the_installed_metadata():
    # kubernetes 36 needs aiohttp (its asyncio client), which pulls its own dependencies in.
    assert {"aiohttp", "multidict", "yarl", "requests-oauthlib", "websocket-client"} <= set(lock.closure())
    assert "google-auth" not in lock.closure()          # an extra, not a dependency


def test_the_copied_modules_run_the_entrypoint_in_isolation(tmp_path):
    copies = [rest.split() for word, rest in instructions() if word == "COPY" and "requirements" not in rest]
    for parts in copies:
        *sources, dest = parts
        for source in sources:
            target = tmp_path / dest if dest.endswith("/") else tmp_path / dest
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, tmp_path / dest, dirs_exist_ok=True)
            else:
                target = (tmp_path / dest / src.name) if dest.endswith("/") else tmp_path / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target)
    [entrypoint] = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["python", "-m", "automation.termination"]
    # -I: no PYTHONPATH, no current directory on the path, no user site: only the copied tree (WORKDIR /app).
    probe = ("import sys; sys.path.insert(0, '.'); import runpy; sys.argv = ['handler', '--help']; "
             "runpy.run_module('automation.termination', run_name='__main__')")
    run = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--queue-url" in run.stdout, run.stderr[-2000:]
    modules = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, '.'); "
                              "import automation.termination.handler, automation.termination.cli; "
                              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('automation', 'infra', 'policies')))"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert modules.returncode == 0, modules.stderr[-2000:]
    loaded = set(ast.literal_eval(modules.stdout.strip()))
    # Of infra/, only the standard-library modules holding the names kiln's parts agree on; no policies.
    assert {m for m in loaded if m.split(".")[0] in ("infra", "policies")} == {"infra", "infra.labels",
                                                                               "infra.lifecycle"}, loaded
    assert "automation.termination.handler" in loaded


def test_it_runs_as_nobody():
    [user] = [rest for word, rest in instructions() if word == "USER"]
    assert user == "65534:65534"
    assert ("WORKDIR", "/app") in instructions()


@pytest.mark.parametrize("missing", ["automation/rollout/kube.py", "automation/rollout/pods.py", "infra/labels.py",
                                     "infra/lifecycle.py"])
def test_the_isolation_check_would_catch_a_missing_copy(tmp_path, missing):
    """The check above can fail: drop one COPY source and the entrypoint no longer imports."""
    global DOCKERFILE
    saved = DOCKERFILE
    try:
        DOCKERFILE = DOCKERFILE.replace(f" {missing}", " ") if missing.endswith(".py") else "\n".join(
            line for line in DOCKERFILE.splitlines() if missing not in line)
        with pytest.raises(AssertionError):
            test_the_copied_modules_run_the_entrypoint_in_isolation(tmp_path)
    finally:
        DOCKERFILE = saved
