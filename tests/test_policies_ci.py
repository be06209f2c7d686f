"""The CI templates in ci/: parsed as YAML, their key steps asserted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from policies.program import PROJECT_DIR

CI = PROJECT_DIR / "ci"


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads GitHub's `on:` as the boolean True
        doc["on"] = doc.pop(True)
    return doc


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def assumes_role_by_oidc(job: dict, role: str = "AWS_DEPLOY_ROLE_ARN") -> bool:
    creds = [s for s in steps(job) if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
    return len(creds) == 1 and creds[0]["with"]["role-to-assume"] == f"${{{{ secrets.{role} }}}}" \
        and "aws-access-key-id" not in creds[0]["with"]


def test_github_workflow_previews_on_pull_requests_and_ups_on_main():
    doc = load(CI / "github" / "kiln.yml")
    assert set(doc["on"]) == {"pull_request", "push"} and doc["on"]["push"]["branches"] == ["main"]
    jobs = doc["jobs"]
    preview, up = jobs["preview"], jobs["up"]
    for job in (preview, up):
        assert job["permissions"]["id-token"] == "write"
        assert job["env"]["PULUMI_BACKEND_URL"] == "${{ secrets.PULUMI_BACKEND_URL }}"
        assert job["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"
    assert "pull_request" in preview["if"] and "refs/heads/main" in up["if"]
    assert re.search(r"^pulumi preview .*--policy-pack policies", runs(preview), re.M)
    assert re.search(r"^pulumi up .*--policy-pack policies .*--yes", runs(up), re.M)
    assert assumes_role_by_oidc(preview, "AWS_PREVIEW_ROLE_ARN") and assumes_role_by_oidc(up)
    # The offline pack runs first and needs no cloud access at all.
    assert preview["needs"] == up["needs"] == "policy-offline"
    assert "python -m policies check --stack" in runs(jobs["policy-offline"])
    assert not any("configure-aws-credentials" in str(s.get("uses")) for s in steps(jobs["policy-offline"]))


def test_github_rotation_is_manual_and_runs_rotate():
    doc = load(CI / "github" / "rotate.yml")
    assert list(doc["on"]) == ["workflow_dispatch"]
    assert {"stack", "model-version"} <= set(doc["on"]["workflow_dispatch"]["inputs"])
    job = doc["jobs"]["rotate"]
    assert job["permissions"]["id-token"] == "write"
    assert assumes_role_by_oidc(job, "AWS_ROTATION_ROLE_ARN")
    command = runs(job)
    assert re.search(r"python -m automation rotate --stack \"\$STACK\" --model-version \"\$MODEL_VERSION\"", command)
    assert "--yes" in command


# ---- issue 11: a rotation reaches git, and an ordinary deploy can neither race nor revert it --------------


def _render(expression: str, **values: str) -> str:
    """A GitHub Actions expression with the given contexts filled in (enough for the group names)."""
    def repl(match: re.Match) -> str:
        expr = match.group(1).strip()
        for alternative in (a.strip() for a in expr.split("||")):
            if alternative.startswith("'") and alternative.endswith("'"):
                return alternative.strip("'")
            if values.get(alternative):
                return values[alternative]
        return ""
    return re.sub(r"\$\{\{(.*?)\}\}", repl, expression)


def _group(job_or_doc: dict) -> dict:
    return job_or_doc.get("concurrency") or {}


def _step_index(job: dict, predicate) -> int:
    matches = [i for i, s in enumerate(steps(job)) if predicate(s)]
    assert len(matches) == 1, matches
    return matches[0]


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_github_deploy_and_rotation_share_one_concurrency_group_per_stack(stack):
    deploy, rotate = load(CI / "github" / "kiln.yml"), load(CI / "github" / "rotate.yml")
    up_group, rot_group = _group(deploy["jobs"]["up"]), _group(rotate)
    assert up_group["cancel-in-progress"] is False and rot_group["cancel-in-progress"] is False
    # The deploy's stack comes from vars.KILN_STACK (default prod), the rotation's from its input.
    deploy_name = _render(up_group["group"], **({"vars.KILN_STACK": stack} if stack != "prod" else {}))
    rotate_name = _render(rot_group["group"], **{"inputs.stack": stack})
    assert deploy_name == rotate_name == f"kiln-stack-{stack}"
    assert _render(up_group["group"], **{"vars.KILN_STACK": "other"}) != rotate_name
    # No workflow-level group that would serialise unrelated runs, or hold a PR preview behind a rotation.
    assert "concurrency" not in deploy and _group(deploy["jobs"]["preview"])["group"].startswith("kiln-preview-")


def test_github_deploy_checks_out_the_tip_and_runs_the_guard_before_up():
    up = load(CI / "github" / "kiln.yml")["jobs"]["up"]
    checkout = _step_index(up, lambda s: str(s.get("uses", "")).startswith("actions/checkout@"))
    assert steps(up)[checkout]["with"]["ref"] == "main"
    guard = _step_index(up, lambda s: "python -m automation guard --stack \"$STACK\"" in s.get("run", ""))
    apply = _step_index(up, lambda s: s.get("run", "").startswith("pulumi up"))
    creds = _step_index(up, lambda s: str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"))
    assert checkout < creds < guard < apply


def test_github_rotation_persists_the_stack_file_to_main():
    doc = load(CI / "github" / "rotate.yml")
    job = doc["jobs"]["rotate"]
    assert job["permissions"]["contents"] == "write" and doc["permissions"] == {"contents": "read"}
    checkout = steps(job)[_step_index(job, lambda s: str(s.get("uses", "")).startswith("actions/checkout@"))]
    assert checkout["with"]["fetch-depth"] == 0 and checkout["with"]["ref"] == "main"
    assert "KILN_GIT_PUSH_TOKEN" in checkout["with"]["token"]
    command = runs(job)
    assert re.search(r"python -m automation rotate .*--git-push origin/main", command.replace("\\\n", " "), re.S)
    assert "git config user.email" in command
    assert "pulumi up" not in command         # the rotation applies only through its gate


def test_gitlab_deploy_and_rotation_share_one_resource_group_and_persist():
    doc = load(CI / "gitlab" / ".gitlab-ci.yml")
    up, rotate = doc["up"], doc["rotate"]
    assert up["resource_group"] == rotate["resource_group"] == "kiln-stack-$KILN_STACK"
    script = [str(line) for line in up["script"]]
    guard = next(i for i, line in enumerate(script) if "python -m automation guard --stack" in line)
    apply = next(i for i, line in enumerate(script) if line.startswith("pulumi up"))
    tip = next(i for i, line in enumerate(script) if "git checkout -q FETCH_HEAD" in line)
    assert tip < guard < apply
    rot = " ".join(str(line) for line in rotate["script"])
    assert '--git-push "origin/$CI_DEFAULT_BRANCH"' in rot and "KILN_GIT_PUSH_TOKEN" in rot
    # The rotation starts from the tip too, not the (maybe older) commit its pipeline was created on.
    rot_script = [str(line) for line in rotate["script"]]
    tip = next(i for i, line in enumerate(rot_script) if "git checkout -q FETCH_HEAD" in line)
    run = next(i for i, line in enumerate(rot_script) if "python -m automation rotate" in line)
    assert tip < run and 'git fetch -q origin "$CI_DEFAULT_BRANCH"' in rot_script[tip]
    assert rotate["variables"]["GIT_DEPTH"] == 0 and "KILN_GIT_PUSH_TOKEN" not in doc["variables"]


def test_every_pulumi_up_in_the_templates_is_guarded():
    """Nothing reverts a rotation: each job that runs `pulumi up` runs the guard first."""
    jobs = []
    for path in (CI / "github").glob("*.yml"):
        jobs += [(f"{path.name}:{name}", [s.get("run", "") for s in steps(job)])
                 for name, job in load(path)["jobs"].items()]
    gitlab = load(CI / "gitlab" / ".gitlab-ci.yml")
    jobs += [(f"gitlab:{name}", [str(x) for x in job.get("script", [])])
             for name, job in gitlab.items() if isinstance(job, dict) and "script" in job]
    ups = [(name, lines) for name, lines in jobs if any(re.search(r"(^|\s)pulumi up\b", line) for line in lines)]
    assert ups
    for name, lines in ups:
        first_up = next(i for i, line in enumerate(lines) if re.search(r"(^|\s)pulumi up\b", line))
        assert any("automation guard" in line for line in lines[:first_up]), name


def environments(node, trail=()):
    """Every ``env`` (GitHub: workflow, job, step) and ``variables`` (GitLab: global, job, template) mapping
    in a CI document, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("env", "variables") and isinstance(value, dict):
                yield trail + (key,), value
            yield from environments(value, trail + (key,))
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from environments(value, trail + (n,))


STATIC_KEY_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def static_keys(doc: dict) -> list[str]:
    return [".".join(map(str, trail)) + "." + name for trail, env in environments(doc) for name in env
            if str(name).upper() in STATIC_KEY_NAMES]


def test_no_static_aws_keys_anywhere():
    templates = [*(CI / "github").glob("*.yml"), CI / "gitlab" / ".gitlab-ci.yml"]
    assert len(templates) == 3
    for path in templates:
        text = path.read_text()
        for role in ("AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "AWS_ROTATION_ROLE_ARN"):
            text = text.replace(f"secrets.{role}", "")
        assert "aws-access-key-id" not in text and "secrets.AWS_" not in text
        doc = load(path)
        # At every level (workflow, job, step; GitLab's global, template and job variables), not only the top.
        assert static_keys(doc) == [], path


def test_a_static_key_in_a_job_or_step_env_is_found():
    """The check above looks where a key could be added, not only at the top of the file."""
    doc = load(CI / "github" / "rotate.yml")
    doc["jobs"]["rotate"]["env"] = {"AWS_ACCESS_KEY_ID": "${{ vars.KEY_ID }}"}
    doc["jobs"]["rotate"]["steps"][0]["env"] = {"aws_secret_access_key": "${{ vars.KEY }}"}
    assert sorted(static_keys(doc)) == ["jobs.rotate.env.AWS_ACCESS_KEY_ID",
                                        "jobs.rotate.steps.0.env.aws_secret_access_key"]
    gitlab = load(CI / "gitlab" / ".gitlab-ci.yml")
    gitlab["rotate"]["variables"] = {**(gitlab["rotate"].get("variables") or {}), "AWS_SESSION_TOKEN": "$TOKEN"}
    assert static_keys(gitlab) == ["rotate.variables.AWS_SESSION_TOKEN"]


def test_gitlab_pipeline_equivalent():
    doc = load(CI / "gitlab" / ".gitlab-ci.yml")
    preview, up, rotate = doc["preview"], doc["up"], doc["rotate"]
    assert all(job["extends"] == ".pulumi_job" for job in (preview, up, rotate))
    web_identity = " ".join(flat(doc[".pulumi_job"]["before_script"]))
    assert 'printf \'%s\' "$KILN_ID_TOKEN" > "$AWS_WEB_IDENTITY_TOKEN_FILE"' in web_identity
    assert {job["variables"]["AWS_ROLE_ARN"] for job in (preview, up, rotate)} == {
        "$AWS_PREVIEW_ROLE_ARN", "$AWS_DEPLOY_ROLE_ARN", "$AWS_ROTATION_ROLE_ARN"}
    assert any("merge_request_event" in r.get("if", "") for r in preview["rules"])
    assert any("CI_DEFAULT_BRANCH" in r.get("if", "") for r in up["rules"])
    assert "--policy-pack policies" in " ".join(preview["script"]) and "--policy-pack policies" in " ".join(up["script"])
    assert any(r.get("when") == "manual" for r in rotate["rules"])
    assert "python -m automation rotate --stack" in " ".join(rotate["script"]) and "--yes" in " ".join(rotate["script"])
    assert "python -m policies check" in " ".join(doc["policy-offline"]["script"])
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "AWS_DEPLOY_ROLE_ARN"):
        assert name not in doc["variables"]  # CI/CD variables (masked), never in the file


# ---- issue 10: the termination handler's image, built beside the deploy and the rotation ------------------------


def flat(lines) -> list[str]:
    """A GitLab script with its YAML anchors expanded (GitLab flattens nested lists)."""
    out: list[str] = []
    for line in lines or []:
        out += flat(line) if isinstance(line, list) else [str(line)]
    return out


def test_ci_builds_both_architectures_and_prints_the_digest():
    github = load(CI / "github" / "kiln.yml")
    job = github["jobs"]["handler-image"]
    assert "push" in job["if"] and "refs/heads/main" in job["if"]
    [build] = [s for s in steps(job) if str(s.get("uses", "")).startswith("docker/build-push-action@")]
    assert build["with"]["file"] == "images/termination-handler/Dockerfile" and build["with"]["context"] == "."
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    assert "kiln-termination-handler" in build["with"]["tags"]
    [printed] = [s for s in steps(job) if "kiln:terminationHandlerImage" in s.get("run", "")]
    # The reference reaches the shell through the environment, never spliced into the script.
    assert printed["env"]["REFERENCE"].endswith("/kiln-termination-handler@${{ steps.build.outputs.digest }}")
    assert "$REFERENCE" in printed["run"] and "${{" not in printed["run"]
    assert assumes_role_by_oidc(job)
    gitlab = load(CI / "gitlab" / ".gitlab-ci.yml")
    script = " ".join(flat(gitlab["handler-image"]["script"]))
    assert "-f images/termination-handler/Dockerfile" in script and "linux/amd64,linux/arm64" in script
    assert "--push" in script and "kiln:terminationHandlerImage" in script and "containerimage.digest" in script
    assert gitlab["handler-image"]["id_tokens"]["KILN_ID_TOKEN"]["aud"] == "kiln-deploy"
    assert any("CI_DEFAULT_BRANCH" in r.get("if", "") for r in gitlab["handler-image"]["rules"])
    # kiln's ECR repositories have immutable tags (infra/registry.py): a re-run or retry must push a new tag,
    # never the last attempt's again (that push fails).
    assert build["with"]["tags"].endswith(":${{ github.sha }}-${{ github.run_id }}-${{ github.run_attempt }}")
    assert '-t "$REGISTRY/kiln-termination-handler:$CI_COMMIT_SHA-$CI_JOB_ID"' in script
    # Never in a rotation pipeline (GitLab runs the rotation as a pipeline of its own).
    assert gitlab["handler-image"]["rules"][0] == {"if": "$KILN_ROTATE_MODEL_VERSION", "when": "never"}


def test_every_github_job_with_the_deploy_role_on_main_presents_one_oidc_subject():
    """The deploy role trusts exactly one subject (kiln:ciOidc.subject). A GitHub job's token says
    `environment:<name>` when the job has an environment, `ref:refs/heads/main` when not: the jobs on main that
    assume the deploy role (deploy, image build) must agree, or one of them can never get credentials. The rotation
    has a role of its own, in an environment of its own (tests/test_ci_templates.py)."""
    deploy, rotate = load(CI / "github" / "kiln.yml"), load(CI / "github" / "rotate.yml")
    on_main = [(name, job) for name, job in deploy["jobs"].items()
               if assumes_role_by_oidc(job) and "refs/heads/main" in job.get("if", "")]
    assert {name for name, _ in on_main} == {"up", "handler-image"}
    assert {job.get("environment") for _, job in on_main} == {"production"}
    assert not assumes_role_by_oidc(rotate["jobs"]["rotate"]) and rotate["jobs"]["rotate"]["environment"] == "rotation"


def test_the_image_build_holds_no_stack_lock_and_changes_no_stack():
    """A build touches no stack: it neither waits for nor delays a deploy or a rotation, and runs no pulumi or
    automation command (nothing it does needs the guard)."""
    job = load(CI / "github" / "kiln.yml")["jobs"]["handler-image"]
    assert "concurrency" not in job and "pulumi" not in runs(job) and "automation" not in runs(job)
    gitlab = load(CI / "gitlab" / ".gitlab-ci.yml")["handler-image"]
    lines = flat(gitlab.get("before_script")) + flat(gitlab["script"])
    assert "resource_group" not in gitlab
    assert not any("pulumi" in line or "python -m automation" in line for line in lines)


def test_gitlab_jobs_hand_their_token_to_the_sdks_in_one_place():
    """The preview/deploy/rotation jobs give the AWS SDKs their ID token with the same commands (a YAML anchor) and
    check the role before their script; the image build writes the token file the same way for the AWS CLI."""
    doc = load(CI / "gitlab" / ".gitlab-ci.yml")
    web_identity = flat(doc[".web_identity"])
    assert web_identity[0].startswith('export AWS_WEB_IDENTITY_TOKEN_FILE="$(mktemp)"')
    assert web_identity[1] == 'printf \'%s\' "$KILN_ID_TOKEN" > "$AWS_WEB_IDENTITY_TOKEN_FILE"'
    assert "get_caller_identity" in web_identity[2]
    before = flat(doc[".pulumi_job"]["before_script"])
    assert before[-len(web_identity):] == web_identity        # the last thing before the job's script
    image = flat(doc["handler-image"]["before_script"])
    assert image[-2:] == web_identity[:2]
    assert any("apk add" in line and "aws-cli" in line for line in image)
    # No job exchanges the token by hand for fixed-length credentials (they would expire mid-job).
    text = (CI / "gitlab" / ".gitlab-ci.yml").read_text()
    assert "assume-role-with-web-identity" not in text and "AWS_SESSION_TOKEN" not in text
