"""The CI templates in ci/: parsed as YAML, their key steps asserted."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from policies.program import PROJECT_DIR

CI = PROJECT_DIR / "ci"
STATIC_KEY = re.compile(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)\s*:|secrets\.AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY)")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads GitHub's `on:` as the boolean True
        doc["on"] = doc.pop(True)
    return doc


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def assumes_role_by_oidc(job: dict) -> bool:
    creds = [s for s in steps(job) if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
    return len(creds) == 1 and creds[0]["with"]["role-to-assume"] == "${{ secrets.AWS_DEPLOY_ROLE_ARN }}" \
        and "aws-access-key-id" not in creds[0]["with"]


def test_github_workflow_previews_on_pull_requests_and_ups_on_main():
    doc = load(CI / "github" / "kiln.yml")
    assert set(doc["on"]) == {"pull_request", "push"} and doc["on"]["push"]["branches"] == ["main"]
    assert doc["permissions"]["id-token"] == "write"
    assert doc["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert doc["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    jobs = doc["jobs"]
    preview, up = jobs["preview"], jobs["up"]
    assert "pull_request" in preview["if"] and "refs/heads/main" in up["if"]
    assert re.search(r"^pulumi preview .*--policy-pack policies", runs(preview), re.M)
    assert re.search(r"^pulumi up .*--policy-pack policies .*--yes", runs(up), re.M)
    assert assumes_role_by_oidc(preview) and assumes_role_by_oidc(up)
    # The offline pack runs first and needs no cloud access at all.
    assert preview["needs"] == up["needs"] == "policy-offline"
    assert "python -m policies check --stack" in runs(jobs["policy-offline"])
    assert not assumes_role_by_oidc(jobs["policy-offline"])


def test_github_rotation_is_manual_and_runs_rotate():
    doc = load(CI / "github" / "rotate.yml")
    assert list(doc["on"]) == ["workflow_dispatch"]
    assert {"stack", "model-version"} <= set(doc["on"]["workflow_dispatch"]["inputs"])
    assert doc["permissions"]["id-token"] == "write"
    job = doc["jobs"]["rotate"]
    assert assumes_role_by_oidc(job)
    command = runs(job)
    assert re.search(r"python -m automation rotate --stack \"\$STACK\" --model-version \"\$MODEL_VERSION\"", command)
    assert "--yes" in command


def test_no_static_aws_keys_anywhere():
    for path in [*(CI / "github").glob("*.yml"), CI / "gitlab" / ".gitlab-ci.yml"]:
        text = path.read_text()
        assert "aws-access-key-id" not in text and "secrets.AWS_" not in text.replace("secrets.AWS_DEPLOY_ROLE_ARN", "")
        doc = load(path)
        assert not any(STATIC_KEY.match(f"{k}:") for k in (doc.get("variables") or doc.get("env") or {})), path


def test_gitlab_pipeline_equivalent():
    doc = load(CI / "gitlab" / ".gitlab-ci.yml")
    oidc = doc[".aws_oidc"]
    assert oidc["id_tokens"]["AWS_ID_TOKEN"]["aud"] == "sts.amazonaws.com"
    exchange = " ".join(str(line) for line in oidc["before_script"])
    assert "assume-role-with-web-identity" in exchange and '--web-identity-token "$AWS_ID_TOKEN"' in exchange
    preview, up, rotate = doc["preview"], doc["up"], doc["rotate"]
    assert all(job["extends"] == ".aws_oidc" for job in (preview, up, rotate))
    assert any("merge_request_event" in r.get("if", "") for r in preview["rules"])
    assert any("CI_DEFAULT_BRANCH" in r.get("if", "") for r in up["rules"])
    assert "--policy-pack policies" in " ".join(preview["script"]) and "--policy-pack policies" in " ".join(up["script"])
    assert any(r.get("when") == "manual" for r in rotate["rules"])
    assert "python -m automation rotate --stack" in " ".join(rotate["script"]) and "--yes" in " ".join(rotate["script"])
    assert "python -m policies check" in " ".join(doc["policy-offline"]["script"])
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "AWS_DEPLOY_ROLE_ARN"):
        assert name not in doc["variables"]  # CI/CD variables (masked), never in the file
