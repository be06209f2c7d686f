"""The CI templates in ci/ as a security reviewer reads them (issue 14 part 3), parsed with PyYAML:

* one role per purpose, each job's role the one its purpose needs, and the subject (and, on GitLab, audience) each
  job's token carries — computed from the CI system's documented claim format — trusted by that role alone, for the
  example configs (Pulumi.example.yaml for GitHub, the GitLab block in docs/rotation.md);
* every action pinned by a commit SHA with its tag in a comment; the Pulumi CLI and the AWS CLI installed pinned and
  checked (ci/install-pulumi.sh run here against a fake download);
* secrets and OIDC tokens only in the jobs that need them;
* credentials that outlive each job (GitHub: role-duration-seconds >= the job's timeout, within the role's maximum;
  GitLab: a web-identity token file the SDKs re-assume with before expiry — botocore shown doing so against moto);
* pip caches, a timeout on every job, rotation only from the protected branch, deploy behind an environment.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from infra import ci_oidc, ci_roles, roles
from infra.config import load_stack_file, parse
from policies.program import PROJECT_DIR

CI = PROJECT_DIR / "ci"
GITHUB = {"kiln.yml": CI / "github" / "kiln.yml", "rotate.yml": CI / "github" / "rotate.yml"}
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
REPO = "example-org/ml-platform"          # Pulumi.example.yaml's repository
PROJECT = "example-group/ml-platform"     # the GitLab example's project (docs/rotation.md)

# Which role each job holds: the whole list, so a job added without a decision fails here.
GITHUB_ROLES = {
    ("kiln.yml", "policy-offline"): None,
    ("kiln.yml", "preview"): "preview",
    ("kiln.yml", "up"): "deploy",
    ("kiln.yml", "handler-image"): "deploy",
    ("rotate.yml", "rotate"): "rotation",
}
GITLAB_ROLES = {"policy-offline": None, "preview": "preview", "up": "deploy", "handler-image": "deploy",
                "rotate": "rotation"}
ROLE_SECRET = {"preview": "AWS_PREVIEW_ROLE_ARN", "deploy": "AWS_DEPLOY_ROLE_ARN", "rotation": "AWS_ROTATION_ROLE_ARN"}
# The longest session each role allows (infra/ci_roles.py, infra/roles.py: the rotation role is the rollout role).
MAX_SESSION = {"preview": ci_roles.PREVIEW_SESSION_SECONDS, "deploy": roles.MAX_SESSION_SECONDS,
               "rotation": roles.MAX_SESSION_SECONDS}
# Secrets each job may read; anything else (or these anywhere else) fails.
GITHUB_SECRETS = {
    ("kiln.yml", "policy-offline"): set(),
    ("kiln.yml", "preview"): {"AWS_PREVIEW_ROLE_ARN", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"},
    ("kiln.yml", "up"): {"AWS_DEPLOY_ROLE_ARN", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"},
    ("kiln.yml", "handler-image"): {"AWS_DEPLOY_ROLE_ARN"},
    ("rotate.yml", "rotate"): {"AWS_ROTATION_ROLE_ARN", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE",
                               "KILN_GIT_PUSH_TOKEN"},
}
SHA_PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # (?P<tag>v\d+(\.\d+){1,2})\s*$")
SECRET = re.compile(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads GitHub's `on:` as the boolean True
        doc["on"] = doc.pop(True)
    return doc


def github_jobs():
    for file, path in GITHUB.items():
        for name, job in load(path)["jobs"].items():
            yield (file, name), job


def gitlab_jobs(doc=None):
    doc = doc or load(GITLAB)
    return {name: job for name, job in doc.items()
            if isinstance(job, dict) and not name.startswith(".") and ("script" in job or "extends" in job)}


def gitlab_resolved(name: str, doc=None) -> dict:
    """A GitLab job with `extends` merged as GitLab does (hashes deep-merged, the job's own keys win)."""
    doc = doc or load(GITLAB)
    job = doc[name]
    base = gitlab_resolved(job["extends"], doc) if "extends" in job else {}

    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
        return out
    return merge(base, {k: v for k, v in job.items() if k != "extends"})


def flat(lines) -> list[str]:
    out: list[str] = []
    for line in lines or []:
        out += flat(line) if isinstance(line, list) else [str(line)]
    return out


def credentials_step(job: dict):
    found = [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
    assert len(found) <= 1
    return found[0] if found else None


def github_role(job: dict):
    step = credentials_step(job)
    if step is None:
        return None
    [role] = [r for r, secret in ROLE_SECRET.items() if step["with"]["role-to-assume"] == f"${{{{ secrets.{secret} }}}}"]
    return role


# ---- pinning ---------------------------------------------------------------------------------------------------


def test_every_action_is_pinned_by_commit_sha_with_its_tag():
    pins: dict[str, set] = {}
    for path in GITHUB.values():
        lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
        parsed = [s["uses"] for _, job in github_jobs() for s in job.get("steps", []) if "uses" in s]
        assert lines, path
        for line in lines:
            match = SHA_PINNED.match(line)
            assert match, f"{path.name}: not pinned by commit SHA with its tag: {line.strip()}"
            pins.setdefault(match["action"], set()).add((match["sha"], match["tag"]))
        assert all(re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", u) for u in parsed)
    # One reviewed version of each action across both workflows.
    assert {a: len(p) for a, p in pins.items()} == {a: 1 for a in pins}, pins
    assert len(pins) == 7


def _requirements_pin(name: str) -> str:
    [line] = [line for line in (PROJECT_DIR / "requirements.txt").read_text().splitlines() if line.startswith(f"{name}==")]
    return line.split("==", 1)[1].strip()


def test_the_pulumi_cli_is_installed_pinned_and_verified_never_piped_to_a_shell():
    version = _requirements_pin("pulumi")
    texts = {p.name: p.read_text() for p in [*GITHUB.values(), GITLAB]}
    for name, text in texts.items():
        assert not re.search(r"curl[^\n|]*\|\s*(ba)?sh", text), name
        assert "get.pulumi.com" not in text and "pulumi/actions" not in text, name
    assert load(GITHUB["kiln.yml"])["env"]["PULUMI_VERSION"] == version
    assert load(GITHUB["rotate.yml"])["env"]["PULUMI_VERSION"] == version
    assert load(GITLAB)["variables"]["PULUMI_VERSION"] == version
    # Every job that runs pulumi installs it with the checked script first.
    for key, job in github_jobs():
        runs = [s.get("run", "") for s in job.get("steps", [])]
        uses_pulumi = [i for i, r in enumerate(runs) if re.search(r"(^|\s)pulumi |automation (rotate|guard)", r)]
        if uses_pulumi:
            install = [i for i, r in enumerate(runs) if r.startswith("ci/install-pulumi.sh ")]
            assert install and install[0] < uses_pulumi[0], key
    before = flat(gitlab_resolved("up")["before_script"])
    assert any(line.startswith('PULUMI_BIN="$(ci/install-pulumi.sh ') for line in before)
    # The committed checksums name exactly the tarballs of that version.
    sums = [line.split() for line in (CI / "pulumi-cli.sha256").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(name for _, name in sums) == [f"pulumi-v{version}-linux-arm64.tar.gz", f"pulumi-v{version}-linux-x64.tar.gz"]


def test_the_aws_cli_and_python_packages_are_installed_pinned():
    requirements = [line for line in (CI / "awscli-requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert any(line.startswith("awscli==") for line in requirements)
    for line in requirements:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.]+( --hash=sha256:[0-9a-f]{64})+", line), line
    script = (CI / "install-awscli.sh").read_text()
    assert "--require-hashes --no-deps -r" in script
    for path in [*GITHUB.values(), GITLAB]:
        for line in path.read_text().splitlines():
            if "pip install" in line:
                assert re.search(r"pip install (-q )?-r requirements\.txt -c constraints\.txt$", line.strip()), line
            assert "awscli" not in line or "install-awscli.sh" in line, line


# ---- ci/install-pulumi.sh, run ---------------------------------------------------------------------------------


def _fake_release(tmp_path: Path, version: str, reports: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = f"#!/bin/sh\necho {reports}\n".encode()
        info = tarfile.TarInfo("pulumi/pulumi")
        info.size, info.mode = len(body), 0o755
        tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _install(tmp_path: Path, tarball: bytes, sums_line: str, version="3.272.0"):
    """ci/install-pulumi.sh beside a checksum file of the test's, with `curl` replaced by a copy of ``tarball``
    (the fake records its arguments)."""
    ci = tmp_path / "ci"
    ci.mkdir(exist_ok=True)
    (ci / "install-pulumi.sh").write_text((CI / "install-pulumi.sh").read_text())
    (ci / "install-pulumi.sh").chmod(0o755)
    (ci / "pulumi-cli.sha256").write_text(sums_line + "\n")
    (tmp_path / "release.tgz").write_bytes(tarball)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "curl").write_text('#!/bin/sh\necho "$@" > "$CURL_LOG"\nwhile [ $# -gt 0 ]; do\n'
                                  '  if [ "$1" = -o ]; then cp "$RELEASE" "$2"; shift; fi; shift\ndone\n')
    (bin_dir / "curl").chmod(0o755)
    (bin_dir / "uname").write_text("#!/bin/sh\necho x86_64\n")
    (bin_dir / "uname").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PULUMI_VERSION": version,
           "RELEASE": str(tmp_path / "release.tgz"), "CURL_LOG": str(tmp_path / "curl.log")}
    dest = tmp_path / "dest"
    done = subprocess.run([str(ci / "install-pulumi.sh"), str(dest)], env=env, capture_output=True, text=True, timeout=60)
    return done, dest


def test_install_pulumi_installs_a_tarball_whose_sha256_matches(tmp_path):
    tarball = _fake_release(tmp_path, "3.272.0", "v3.272.0")
    done, dest = _install(tmp_path, tarball, f"{hashlib.sha256(tarball).hexdigest()}  pulumi-v3.272.0-linux-x64.tar.gz")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{dest}/pulumi\n" and (dest / "pulumi" / "pulumi").exists()
    requested = (tmp_path / "curl.log").read_text().split()
    assert "https://get.pulumi.com/releases/sdk/pulumi-v3.272.0-linux-x64.tar.gz" in requested
    assert "--proto" in requested and "=https" in requested


@pytest.mark.parametrize("case", ["tampered", "unfilled", "other-file", "wrong-version"])
def test_install_pulumi_refuses_what_it_cannot_verify(tmp_path, case):
    tarball = _fake_release(tmp_path, "3.272.0", "v3.999.0" if case == "wrong-version" else "v3.272.0")
    good = hashlib.sha256(tarball).hexdigest()
    line = {"tampered": f"{hashlib.sha256(b'x').hexdigest()}  pulumi-v3.272.0-linux-x64.tar.gz",
            "unfilled": "UNVERIFIED  pulumi-v3.272.0-linux-x64.tar.gz",
            "other-file": f"{good}  pulumi-v3.271.0-linux-x64.tar.gz",
            "wrong-version": f"{good}  pulumi-v3.272.0-linux-x64.tar.gz"}[case]
    done, dest = _install(tmp_path, tarball, line)
    assert done.returncode != 0 and done.stdout == ""
    assert "install-pulumi:" in done.stderr
    if case in ("unfilled", "other-file"):     # said as what it is: no checksum to compare with
        assert "has no sha256 for pulumi-v3.272.0-linux-x64.tar.gz" in done.stderr
    if case != "wrong-version":          # nothing unpacked from an unverified download
        assert not dest.exists()


# ---- roles per job, and the subjects (and audiences) their tokens carry -----------------------------------------


def test_every_github_job_holds_the_role_of_its_purpose_and_only_jobs_with_a_role_mint_tokens():
    jobs = dict(github_jobs())
    assert set(jobs) == set(GITHUB_ROLES)
    for key, job in jobs.items():
        assert github_role(job) == GITHUB_ROLES[key], key
        wants_token = (job.get("permissions") or {}).get("id-token") == "write"
        assert wants_token == (GITHUB_ROLES[key] is not None), key
    for path in GITHUB.values():
        assert "id-token" not in (load(path).get("permissions") or {}), path.name   # never workflow-wide


def github_subject(file: str, job: dict) -> str:
    """The `sub` of the job's token, as GitHub documents it ("Example subject claims"): the environment when the job
    has one, else `pull_request` for pull-request events, else the ref."""
    if job.get("environment"):
        env = job["environment"]
        return f"repo:{REPO}:environment:{env['name'] if isinstance(env, dict) else env}"
    events = set(load(GITHUB[file])["on"])
    if "pull_request" in job.get("if", "") or events == {"pull_request"}:
        return f"repo:{REPO}:pull_request"
    return f"repo:{REPO}:ref:refs/heads/main"


def trusts(role, config) -> tuple[str, str]:
    """(audience, subject) a role trusts for a kiln:ciOidc config."""
    trust = {"deploy": config.deploy, "preview": config.preview, "rotation": config.rotation}[role]
    return trust.audience, trust.subject


def accepts(trust: tuple[str, str], token: tuple[str, str]) -> bool:
    """IAM's check of a kiln CI trust (infra/ci_oidc.web_identity_trust): StringEquals on aud, and on sub —
    StringLike when the subject is a pattern."""
    (aud, pattern), (token_aud, token_sub) = trust, token
    return aud == token_aud and ci_oidc._iam_like(token_sub, pattern) if any(c in pattern for c in "*?") \
        else (aud, pattern) == (token_aud, token_sub)


def test_github_jobs_send_the_subjects_the_example_config_trusts_and_no_other_roles():
    config = load_stack_file(str(PROJECT_DIR / "Pulumi.example.yaml")).ci_oidc
    assert config.provider_url == ci_oidc.GITHUB_ISSUER
    for key, job in github_dict().items():
        role = GITHUB_ROLES[key]
        if role is None:
            continue
        token = ("sts.amazonaws.com", github_subject(key[0], job))       # configure-aws-credentials' audience
        assert accepts(trusts(role, config), token), (key, token)
        for other in {"preview", "deploy", "rotation"} - {role}:
            assert not accepts(trusts(other, config), token), (key, other)
    # A pull request's token gets the preview role and nothing else, whatever its workflow says — short of an
    # environment, which only main may use (docs/rotation.md).
    pr = ("sts.amazonaws.com", f"repo:{REPO}:pull_request")
    assert [r for r in ("preview", "deploy", "rotation") if accepts(trusts(r, config), pr)] == ["preview"]


def github_dict():
    return dict(github_jobs())


def gitlab_example() -> dict:
    text = (PROJECT_DIR / "docs" / "rotation.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    [block] = [b for b in blocks if "providerUrl: https://gitlab.com" in b]
    return yaml.safe_load(block)["config"]["kiln:ciOidc"]


def test_gitlab_jobs_send_the_audience_and_subject_the_documented_config_trusts_and_no_other_roles():
    from test_config_validation import GOOD
    config = parse({**GOOD, "ciOidc": gitlab_example()}).ci_oidc      # accepted as documented
    assert config.provider_url == ci_oidc.GITLAB_ISSUER
    doc = load(GITLAB)
    assert set(gitlab_jobs(doc)) == set(GITLAB_ROLES)
    for name, role in GITLAB_ROLES.items():
        job = gitlab_resolved(name, doc)
        if role is None:
            assert "id_tokens" not in job and "AWS_ROLE_ARN" not in (job.get("variables") or {}), name
            continue
        assert job["variables"]["AWS_ROLE_ARN"] == f"${ROLE_SECRET[role]}", name
        [token] = job["id_tokens"].values()
        # GitLab's documented sub: project_path:{group}/{project}:ref_type:{type}:ref:{branch_name}; a merge request
        # pipeline's ref is its source branch, the others run on the default branch.
        branches = ["feature/x", "main"] if role == "preview" else ["main"]
        for branch in branches:
            sent = (token["aud"], f"project_path:{PROJECT}:ref_type:branch:ref:{branch}")
            assert accepts(trusts(role, config), sent), (name, sent)
            for other in {"preview", "deploy", "rotation"} - {role}:
                assert not accepts(trusts(other, config), sent), (name, other)
    # A token of any other branch asking for the deploy or rotation audience is refused by both.
    for aud in ("kiln-deploy", "kiln-rotation"):
        sent = (aud, f"project_path:{PROJECT}:ref_type:branch:ref:feature/x")
        assert not any(accepts(trusts(r, config), sent) for r in ("deploy", "rotation"))


# ---- protected branch, approval ---------------------------------------------------------------------------------


def test_deploy_and_rotation_run_only_from_main_in_their_environments():
    kiln, rotate = load(GITHUB["kiln.yml"]), load(GITHUB["rotate.yml"])
    for name in ("up", "handler-image"):
        job = kiln["jobs"][name]
        assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'", name
        assert job["environment"] == "production", name
    assert kiln["on"]["push"]["branches"] == ["main"]
    job = rotate["jobs"]["rotate"]
    assert list(rotate["on"]) == ["workflow_dispatch"] and job["if"] == "github.ref == 'refs/heads/main'"
    assert job["environment"] == "rotation"
    doc = load(GITLAB)
    for name in ("up", "handler-image", "rotate"):
        runs_on = [r["if"] for r in doc[name]["rules"] if r.get("when") != "never"]
        assert runs_on, name
        for condition in runs_on:
            assert "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" in condition, name
            assert '$CI_COMMIT_REF_PROTECTED == "true"' in condition, name
    assert doc["up"]["environment"]["name"] == "production"
    assert doc["rotate"]["environment"]["name"] == "rotation"
    assert doc["rotate"]["rules"][-1]["when"] == "manual"


# ---- secrets ----------------------------------------------------------------------------------------------------


def test_secrets_reach_only_the_jobs_that_need_them():
    for path in GITHUB.values():
        workflow = load(path)
        assert not SECRET.search(yaml.safe_dump(workflow.get("env") or {})), f"{path.name}: a workflow-wide secret"
    for key, job in github_jobs():
        found = set(SECRET.findall(yaml.safe_dump(job)))
        assert found == GITHUB_SECRETS[key], key
    offline = load(GITHUB["kiln.yml"])["jobs"]["policy-offline"]
    assert offline["permissions"] == {"contents": "read"}
    # GitLab: the Pulumi variables are CI/CD variables scoped to the environments of the jobs that run Pulumi.
    doc = load(GITLAB)
    assert not any(k.startswith(("PULUMI_BACKEND", "PULUMI_CONFIG", "AWS_", "KILN_GIT")) for k in doc["variables"]
                   if k != "AWS_REGION")
    environments = {name: (gitlab_resolved(name, doc).get("environment") or {}).get("name") for name in GITLAB_ROLES}
    assert environments == {"policy-offline": None, "preview": "preview", "up": "production",
                            "handler-image": None, "rotate": "rotation"}
    # Checkouts that push nothing keep no token on disk for the job's later (pull request) code.
    for key, job in github_jobs():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@") and key != ("rotate.yml", "rotate"):
                assert step["with"]["persist-credentials"] is False, key


# ---- credential lifetime ----------------------------------------------------------------------------------------


def test_github_credentials_outlive_each_job_within_the_roles_maximum():
    for key, job in github_jobs():
        role = GITHUB_ROLES[key]
        if role is None:
            continue
        duration = credentials_step(job)["with"]["role-duration-seconds"]
        assert job["timeout-minutes"] * 60 <= duration <= MAX_SESSION[role], key
    # The rotation may bake (about an hour) and then wait out the rollout's default deadline.
    rotate = load(GITHUB["rotate.yml"])["jobs"]["rotate"]
    assert rotate["timeout-minutes"] * 60 >= default_rollout_deadline() + 3600


def default_rollout_deadline() -> float:
    import argparse
    from automation.rotate.cli import add_common
    parser = argparse.ArgumentParser()
    add_common(parser)
    return parser.get_default("deadline")


def test_gitlab_jobs_use_refreshing_web_identity_credentials_for_their_whole_timeout():
    doc = load(GITLAB)
    text = GITLAB.read_text()
    assert "--duration-seconds" not in text and "assume-role-with-web-identity" not in text
    for name, role in GITLAB_ROLES.items():
        if role is None:
            continue
        job = gitlab_resolved(name, doc)
        before = flat(job["before_script"])
        assert 'printf \'%s\' "$KILN_ID_TOKEN" > "$AWS_WEB_IDENTITY_TOKEN_FILE"' in before, name
        assert any(line.startswith('export AWS_WEB_IDENTITY_TOKEN_FILE="$(mktemp)"') for line in before), name
        assert list(job["id_tokens"]) == ["KILN_ID_TOKEN"], name
    assert _hours(doc["rotate"]["timeout"]) * 3600 >= default_rollout_deadline() + 3600


def _hours(value: str) -> float:
    match = re.fullmatch(r"(\d+)h", value) or re.fullmatch(r"(\d+)m", value)
    assert match, value
    return int(match[1]) if value.endswith("h") else int(match[1]) / 60


def test_botocore_re_assumes_a_web_identity_role_before_its_session_expires(moto_url, tmp_path, monkeypatch):
    """What the GitLab template relies on: with AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE set, botocore assumes
    the role itself and, when the session nears expiry, assumes it again with the token file (moto's STS)."""
    import boto3
    import botocore.credentials
    from datetime import timedelta

    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJwcm9qZWN0X3BhdGg6ZyJ9.")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ci-rotation")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "kiln-rotate-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    session = boto3.Session()
    credentials = session.get_credentials()
    assert credentials.method == "assume-role-with-web-identity"
    first = credentials.get_frozen_credentials()
    # 58 minutes on, the 1-hour session is about to expire: the next use assumes the role again, without the job
    # doing anything (the clock botocore reads, moved on).
    now = botocore.credentials._local_now

    def later():
        return now() + timedelta(minutes=58)
    monkeypatch.setattr(botocore.credentials, "_local_now", later)
    credentials._time_fetcher = later
    second = credentials.get_frozen_credentials()
    assert second.access_key != first.access_key
    assert session.client("sts").get_caller_identity()["Arn"].endswith(":assumed-role/ci-rotation/kiln-rotate-1")


# ---- caching, timeouts ------------------------------------------------------------------------------------------


def test_every_job_has_a_timeout():
    for key, job in github_jobs():
        assert isinstance(job.get("timeout-minutes"), int) and 0 < job["timeout-minutes"] <= 360, key
    doc = load(GITLAB)
    for name in GITLAB_ROLES:
        assert re.fullmatch(r"\d+[hm]", str(doc[name].get("timeout", ""))), name
    assert doc["default"]["timeout"]


def test_pip_downloads_are_cached_keyed_on_the_pins():
    for key, job in github_jobs():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/setup-python@"):
                assert step["with"]["cache"] == "pip", key
                assert step["with"]["cache-dependency-path"].split() == ["requirements.txt", "constraints.txt"], key
    doc = load(GITLAB)
    assert doc["variables"]["PIP_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/pip"
    for name in GITLAB_ROLES:
        job = gitlab_resolved(name, doc)
        if any("pip install" in line for line in flat(job.get("before_script"))):
            assert job["cache"] == {"key": {"files": ["requirements.txt", "constraints.txt"]}, "paths": [".cache/pip"]}, name
