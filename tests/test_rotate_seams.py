"""The rotation's seams to the outside: the Automation API, git, and AWS checks before any change.

``PulumiStack`` is exercised against autospecs of the installed SDK's own
classes (pulumi 3.272.0: a call or an argument name that does not exist there
raises TypeError), with its real ``ConfigValue``/``CommandError``/``OutputValue``
types; the SDK's real event channel (its gRPC ``Events`` servicer) is fed a
malformed engine event to show the drop is caught. Git persistence runs the
real ``git`` against a bare remote. The pre-change AWS checks run against a
moto server over HTTP.
"""

from __future__ import annotations

import datetime
import json
import subprocess

import yaml
from pathlib import Path
from unittest import mock

import pytest

from automation.gate import EventRecorder
from automation.rotate.persist import GitPersist, PersistError
from automation.rotate.pipeline import BadInput
from automation.stack import UPSERT_ENV, ConfigReadError, capture_dropped_events

OLD_AMI, NEW_AMI, GPU_AMI = "ami-0000000000000aaaa", "ami-0000000000000bbbb", "ami-0000000000000cccc"


# ------------------------------------------------------------------------------ PulumiStack over the SDK


def _autospec_stack(monkeypatch):
    from pulumi import automation as auto

    stack = mock.create_autospec(auto.Stack, instance=True)
    stack.workspace = mock.create_autospec(auto.LocalWorkspace, instance=True)
    stack.workspace.env_vars = {}
    select = mock.create_autospec(auto.select_stack, return_value=stack)
    monkeypatch.setattr(auto, "select_stack", select)
    return auto, select, stack


def _command_error(stderr: str):
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    return auto.CommandError(CommandResult(stdout="", stderr=stderr, code=255))


def test_pulumi_stack_selects_fully_qualified_names_and_names_its_stack_file(monkeypatch, tmp_path):
    from automation.stack import PulumiStack

    auto, select, api = _autospec_stack(monkeypatch)
    stack = PulumiStack("acme/kiln/prod", tmp_path)
    select.assert_called_once_with(stack_name="acme/kiln/prod", work_dir=str(tmp_path))
    assert stack.stack_file == tmp_path / "Pulumi.prod.yaml" and stack.policy_packs == ("kiln",)


def test_config_reads_tell_not_set_from_cannot_read(monkeypatch, tmp_path):
    from automation.stack import PulumiStack

    auto, _, api = _autospec_stack(monkeypatch)
    stack = PulumiStack("prod", tmp_path)
    api.get_all_config.return_value = {"kiln:nodeAmi": auto.ConfigValue(value=OLD_AMI),
                                       "kiln:modelVersion": auto.ConfigValue(value="v5")}
    assert stack.get_config("kiln:nodeAmi") == OLD_AMI
    assert stack.get_config("kiln:missing") is None                         # not set
    api.get_all_config.side_effect = _command_error(
        "error: could not decrypt configuration value: incorrect passphrase\n  please set PULUMI_CONFIG_PASSPHRASE")
    with pytest.raises(ConfigReadError, match="kiln:nodeAmi: .*incorrect passphrase"):
        stack.get_config("kiln:nodeAmi")                                    # an error, naming the key
    with pytest.raises(ConfigReadError):
        stack.all_config()


def test_config_writes_keep_a_family_map_a_map(monkeypatch, tmp_path):
    from automation.stack import PulumiStack

    auto, _, api = _autospec_stack(monkeypatch)
    stack = PulumiStack("prod", tmp_path)
    api.get_all_config.return_value = {"kiln:nodeAmi": auto.ConfigValue(value='{"standard": "%s"}' % OLD_AMI)}
    stack.set_config({"kiln:nodeAmi": {"standard": NEW_AMI, "nvidia": GPU_AMI}, "kiln:modelVersion": "v6"})
    calls = api.set_all_config.call_args_list
    scalars, = [c for c in calls if not c.kwargs.get("path")]
    paths, = [c for c in calls if c.kwargs.get("path")]
    assert {k: v.value for k, v in scalars.args[0].items()} == {"kiln:modelVersion": "v6"}
    assert {k: v.value for k, v in paths.args[0].items()} == {"kiln:nodeAmi.nvidia": GPU_AMI,
                                                             "kiln:nodeAmi.standard": NEW_AMI}
    assert all(isinstance(v, auto.ConfigValue) and not v.secret for c in calls for v in c.args[0].values())
    api.remove_config.assert_not_called()                                  # same shape: nothing removed
    # Going from a map to a single id (or back) replaces the key instead of nesting into it.
    api.set_all_config.reset_mock()
    stack.set_config({"kiln:nodeAmi": OLD_AMI})
    api.remove_config.assert_called_once_with("kiln:nodeAmi")
    (call,) = api.set_all_config.call_args_list
    assert {k: v.value for k, v in call.args[0].items()} == {"kiln:nodeAmi": OLD_AMI} and not call.kwargs.get("path")
    # A map that loses a family (a rollback to before a GPU group was added) replaces the key too: setting the
    # remaining families by path would leave the stale nvidia AMI in the stack file.
    api.set_all_config.reset_mock()
    api.remove_config.reset_mock()
    api.get_all_config.return_value = {
        "kiln:nodeAmi": auto.ConfigValue(value='{"nvidia": "%s", "standard": "%s"}' % (GPU_AMI, NEW_AMI))}
    stack.set_config({"kiln:nodeAmi": {"standard": OLD_AMI}})
    api.remove_config.assert_called_once_with("kiln:nodeAmi")
    (call,) = api.set_all_config.call_args_list
    assert {k: v.value for k, v in call.args[0].items()} == {"kiln:nodeAmi.standard": OLD_AMI} and call.kwargs["path"]


def test_preview_and_up_run_the_policy_pack_and_the_plan_and_adopt_only_when_asked(monkeypatch, tmp_path):
    from automation.stack import PulumiStack

    auto, _, api = _autospec_stack(monkeypatch)
    lines = []
    stack = PulumiStack("prod", tmp_path, on_output=lines.append)
    seen_env = []
    api.preview.side_effect = lambda **kw: seen_env.append(dict(api.workspace.env_vars))
    recorder = EventRecorder()
    assert stack.preview(recorder, refresh=True, plan="/tmp/p.json", adopt_model_volume=True) == []
    api.preview.assert_called_once_with(on_event=recorder, diff=True, refresh=True, on_output=lines.append,
                                        policy_packs=[str(tmp_path / "policies")], plan="/tmp/p.json")
    assert seen_env == [{UPSERT_ENV: "true"}] and api.workspace.env_vars == {}   # only for that command

    outputs = {"clusterName": auto.OutputValue(value="kiln", secret=False),
               "kubeconfig": auto.OutputValue(value={"apiVersion": "v1", "clusters": []}, secret=True)}
    summary = auto.UpdateSummary(kind="update", start_time=datetime.datetime.now(), message="", environment={},
                                 config={}, result="succeeded")
    api.up.return_value = auto.UpResult(stdout="", stderr="", summary=summary, outputs=outputs)
    api.workspace.env_vars = {UPSERT_ENV: "false"}                     # the user's own setting is put back
    assert stack.up(plan="/tmp/p.json") == {"clusterName": "kiln", "kubeconfig": {"apiVersion": "v1", "clusters": []}}
    api.up.assert_called_once_with(refresh=False, on_output=lines.append, policy_packs=[str(tmp_path / "policies")],
                                   plan="/tmp/p.json")
    assert api.workspace.env_vars == {UPSERT_ENV: "false"}
    api.outputs.return_value = outputs
    assert stack.outputs()["clusterName"] == "kiln"


def test_an_event_the_sdk_drops_on_its_real_channel_is_caught():
    import grpc
    from pulumi.automation._stack import Stack, _cleanup
    from pulumi.runtime.proto import events_pb2, events_pb2_grpc

    recorder = EventRecorder()
    good = {"sequence": 1, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "same", "urn": "urn:pulumi:prod::kiln::aws:iam/role:Role::r", "type": "aws:iam/role:Role",
        "provider": ""}}}
    bad = {"sequence": 2, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "replace-with-a-new-op", "urn": "urn:pulumi:prod::kiln::aws:eks/cluster:Cluster::kiln",
        "type": "aws:eks/cluster:Cluster", "provider": ""}}}
    with capture_dropped_events() as dropped:
        address, thread, stop, tmp, server = Stack._setup_event_log(None, "preview", recorder, "3.272.0")
        try:
            with grpc.insecure_channel(address.removeprefix("tcp://")) as channel:
                events_pb2_grpc.EventsStub(channel).StreamEvents(iter(
                    [events_pb2.EventRequest(event=json.dumps(e)) for e in (good, bad)]))
        finally:
            _cleanup(tmp, thread, stop, None, server)
    assert len(recorder.events) == 1                         # the SDK passed the good one on ...
    assert len(dropped) == 1 and "replace-with-a-new-op" in dropped[0]   # ... and only warned about the other
    recorder.dropped.extend(dropped)
    from automation.gate import Expected

    assert not recorder.result(Expected(to_model="v6", to_amis=frozenset())).allowed


# ------------------------------------------------------------------------------ the stack file into git


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    # A CI runner: no global or system git identity (only the seed clone, "another developer", has one).
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    seed = tmp_path / "seed"
    _git("clone", "-q", str(remote), str(seed), cwd=tmp_path)
    for key, value in (("user.email", "dev@example.com"), ("user.name", "dev")):
        _git("config", key, value, cwd=seed)
    (seed / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-old\n  kiln:modelVersion: v5\n")
    (seed / "README.md").write_text("readme\n")
    _git("add", ".", cwd=seed)
    _git("commit", "-q", "-m", "seed", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)
    work = tmp_path / "work"
    _git("clone", "-q", "--depth", "1", f"file://{remote}", str(work), cwd=tmp_path)   # CI checkouts are shallow
    return {"remote": remote, "seed": seed, "work": work}


def _remote_file(repo, name="Pulumi.prod.yaml"):
    return _git("--git-dir", str(repo["remote"]), "show", f"main:{name}", cwd=repo["work"])


def test_the_stack_file_is_committed_and_pushed_alone(repo):
    work = repo["work"]
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-new\n  kiln:modelVersion: v6\n")
    (work / "README.md").write_text("a local edit that is not ours to push\n")
    said = GitPersist(work, remote="origin", branch="main")(work / "Pulumi.prod.yaml", "kiln: rotate prod to model v6")
    assert said == "Pulumi.prod.yaml pushed to origin/main"
    assert "ami-new" in _remote_file(repo) and _remote_file(repo, "README.md") == "readme"
    log = _git("--git-dir", str(repo["remote"]), "log", "-1", "--format=%an|%s", "main", cwd=work)
    assert log == "kiln rotate|kiln: rotate prod to model v6"    # no identity on the runner: kiln's own
    # Nothing changed: nothing to commit, and the push is a no-op.
    assert GitPersist(work, remote="origin", branch="main")(work / "Pulumi.prod.yaml", "again").endswith("origin/main")
    assert _git("--git-dir", str(repo["remote"]), "rev-list", "--count", "main", cwd=work) == "2"


def test_a_branch_that_moved_on_is_rebased_onto(repo):
    seed, work = repo["seed"], repo["work"]
    (seed / "README.md").write_text("someone merged a change meanwhile\n")
    _git("commit", "-q", "-am", "other change", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-new\n  kiln:modelVersion: v6\n")
    GitPersist(work, remote="origin", branch="main")(work / "Pulumi.prod.yaml", "kiln: rotate prod to model v6")
    assert "ami-new" in _remote_file(repo) and "someone merged" in _remote_file(repo, "README.md")


def test_a_conflicting_change_to_the_stack_file_stops_with_a_message(repo):
    seed, work = repo["seed"], repo["work"]
    (seed / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-other\n  kiln:modelVersion: v7\n")
    _git("commit", "-q", "-am", "a rotation elsewhere", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-new\n  kiln:modelVersion: v6\n")
    with pytest.raises(PersistError, match="changes conflict"):
        GitPersist(work, remote="origin", branch="main")(work / "Pulumi.prod.yaml", "kiln: rotate prod to model v6")
    assert "ami-other" in _remote_file(repo)
    assert not (work / ".git" / "rebase-merge").exists()           # the rebase was aborted, the checkout is usable


def test_a_protected_branch_is_reported_as_refused_not_retried_as_moved_on(repo):
    """A remote that declines the push (GitHub's protected branch, a pre-receive hook) says "[remote rejected]":
    fetching and rebasing cannot help, and "rerun to try again" would loop forever."""
    work, hook = repo["work"], repo["remote"] / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'GH006: Protected branch update failed for refs/heads/main.' >&2\nexit 1\n")
    hook.chmod(0o755)
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-new\n  kiln:modelVersion: v6\n")
    said = []
    with pytest.raises(PersistError) as caught:
        GitPersist(work, remote="origin", branch="main", log=said.append)(work / "Pulumi.prod.yaml", "kiln: rotate")
    text = str(caught.value)
    assert "refused the push" in text and "GH006" in text and "KILN_GIT_PUSH_TOKEN" in text, text
    assert not any("moved on" in line for line in said), said          # no rebase-and-retry loop
    assert "ami-old" in _remote_file(repo)


def test_a_detached_head_checkout_pushes_to_the_branch(repo):
    """GitLab checks out a detached HEAD; the rotation's commit still reaches the branch, rebased if it moved."""
    seed, work = repo["seed"], repo["work"]
    _git("checkout", "-q", "--detach", cwd=work)
    (seed / "README.md").write_text("moved on\n")
    _git("commit", "-q", "-am", "other change", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:nodeAmi: ami-new\n  kiln:modelVersion: v6\n")
    assert GitPersist(work, remote="origin", branch="main")(work / "Pulumi.prod.yaml", "kiln: rotate").endswith(
        "pushed to origin/main")
    assert "ami-new" in _remote_file(repo) and _remote_file(repo, "README.md") == "moved on"


def test_what_would_stop_the_push_is_found_before_the_rotation(repo, tmp_path):
    work = repo["work"]
    GitPersist(work, remote="origin", branch="main").check(work / "Pulumi.prod.yaml")
    with pytest.raises(PersistError, match="no git remote 'upstream'"):
        GitPersist(work, remote="upstream", branch="main").check(work / "Pulumi.prod.yaml")
    (work / ".gitignore").write_text("Pulumi.*.yaml\n")
    with pytest.raises(PersistError, match="ignored by git"):
        GitPersist(work).check(work / "Pulumi.staging.yaml")
    with pytest.raises(PersistError, match="not a git repository"):
        GitPersist(tmp_path / "nowhere").check(tmp_path / "nowhere" / "Pulumi.prod.yaml")


def test_persisting_outside_a_repository_is_an_error(tmp_path):
    (tmp_path / "Pulumi.prod.yaml").write_text("config: {}\n")
    with pytest.raises(PersistError, match="not a git repository"):
        GitPersist(tmp_path)(tmp_path / "Pulumi.prod.yaml", "m")


def test_commit_without_push(repo):
    work = repo["work"]
    (work / "Pulumi.prod.yaml").write_text("config:\n  kiln:modelVersion: v6\n")
    assert GitPersist(work)(work / "Pulumi.prod.yaml", "kiln: rotate") == "Pulumi.prod.yaml committed"
    assert "ami-old" in _remote_file(repo)


# ------------------------------------------------------------------------------ checks before any change (moto)


@pytest.fixture(scope="module")
def aws():
    from automation.localaws import LocalAws

    with LocalAws() as local:
        yield local


@pytest.fixture(scope="module")
def checks(aws):
    from automation.localaws import create_fleet, put_model
    from automation.rotate.wiring import AwsChecks
    from automation.stack import kiln_config

    session = aws.session()
    fleet = create_fleet(session, cluster="checks", nodes_per_zone=1)
    uri = put_model(session, "checks-models", "llm/v6", {"w": b"w"})
    cfg = kiln_config({"kiln:clusterName": "c", "kiln:kubernetesVersion": "1.33",
                       "kiln:availabilityZones": '["us-east-2a", "us-east-2b"]', "kiln:nodeAmi": fleet.base_ami,
                       "kiln:modelVersion": "v5", "kiln:modelVolumeSizeGiB": "100",
                       "kiln:nodeGroups": json.dumps([{"name": "g", "instanceTypes": ["m7i.xlarge"], "minSize": 0,
                                                       "maxSize": 1, "desiredSize": 1, "volumeSizeGiB": 20}])})
    return AwsChecks(session, cfg), fleet, uri, session


def test_model_uri_checks_bucket_and_manifest(checks):
    check, fleet, uri, session = checks
    check.model_uri(uri)
    with pytest.raises(BadInput, match="--model-uri .* bucket no-such-bucket-kiln does not exist"):
        check.model_uri("s3://no-such-bucket-kiln/llm/v6/")
    with pytest.raises(BadInput, match="MANIFEST.sha256 is missing"):
        check.model_uri(uri.replace("v6", "v9"))
    with pytest.raises(BadInput, match="--model-uri"):
        check.model_uri("s3://UPPER_case/x/")


def test_the_automation_validates_the_stack_config_as_the_program_does(monkeypatch):
    """rotate, bake --stack and guard parse the stack file with its aws:region, like the program: zones elsewhere
    are refused there too (one definition of the region: infra/config.py stack_region)."""
    from automation.stack import kiln_config, stack_region
    from infra.config import ConfigError

    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    config = {"kiln:clusterName": "c", "kiln:kubernetesVersion": "1.33",
              "kiln:availabilityZones": '["us-east-2a", "us-east-2b"]', "kiln:nodeAmi": "ami-0123456789abcdef0",
              "kiln:modelVersion": "v5", "kiln:nodeGroups": json.dumps([{"name": "g", "instanceTypes": ["m7i.xlarge"],
                                                                          "minSize": 0, "maxSize": 1, "desiredSize": 1}])}
    assert kiln_config({**config, "aws:region": "us-east-2"}).availability_zones == ("us-east-2a", "us-east-2b")
    with pytest.raises(ConfigError, match=r"kiln:availabilityZones\[0\] \(us-east-2a\) is not in the stack's region"):
        kiln_config({**config, "aws:region": "us-west-2"})
    assert stack_region(config) is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert stack_region(config) == "eu-west-1" and stack_region({**config, "aws:region": "us-east-2"}) == "us-east-2"


def test_model_uri_must_be_in_the_model_bucket_the_builder_reads(checks):
    import dataclasses

    check, fleet, uri, session = checks
    pinned = dataclasses.replace(check, cfg=dataclasses.replace(check.cfg, model_bucket="checks-models"))
    pinned.model_uri(uri)
    with pytest.raises(BadInput, match=r"bucket other-models is not kiln:modelBucket \(checks-models\)"):
        pinned.model_uri("s3://other-models/llm/v6/")


def test_amis_must_exist_be_available_and_fit_the_volumes(checks):
    check, fleet, uri, session = checks
    ec2 = session.client("ec2")
    check.amis({"standard": fleet.base_ami}, "--ami")     # moto's images have a 15 GiB root: fits 20 GiB
    with pytest.raises(BadInput, match="--ami: .*ami-0123456789abcdef0.* in us-east-2"):
        check.amis({"standard": "ami-0123456789abcdef0"}, "--ami")
    copy = ec2.copy_image(SourceImageId=fleet.base_ami, SourceRegion="us-east-2", Name="gone-image")["ImageId"]
    ec2.deregister_image(ImageId=copy)
    with pytest.raises(BadInput, match=copy):
        check.amis({"standard": copy}, "target AMI")
    import dataclasses

    small = dataclasses.replace(check.cfg, node_groups=tuple(dataclasses.replace(g, volume_size_gib=10)
                                                             for g in check.cfg.node_groups))
    check = dataclasses.replace(check, cfg=small)
    with pytest.raises(BadInput, match=r"15 GiB root volume, larger than kiln:nodeGroups \(g\).volumeSizeGiB = 10"):
        check.amis({"standard": fleet.base_ami}, "target AMI")


# ------------------------------------------------------------------------------ the real world, wired (stand-in)


def test_real_world_over_the_stand_in_takes_region_checks_and_state_from_the_stack(aws, tmp_path):
    import yaml

    from automation.localaws import create_fleet
    from automation.rotate.state import FileIntentStore
    from automation.rotate.wiring import real_world
    from automation.stack import StandInStack

    session = aws.session()
    fleet = create_fleet(session, cluster="wired", nodes_per_zone=1)
    (tmp_path / "Pulumi.w.yaml").write_text(yaml.safe_dump({"config": {
        "aws:region": "us-east-2", "kiln:clusterName": "wired", "kiln:kubernetesVersion": "1.33",
        "kiln:availabilityZones": fleet.zones, "kiln:nodeAmi": {"standard": fleet.base_ami, "nvidia": fleet.base_ami},
        "kiln:modelVersion": "v5",
        "kiln:nodeGroups": [{"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2,
                             "desiredSize": 1},
                            {"name": "gpu", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 4,
                             "desiredSize": 1, "gpu": True}]}}))
    lines = []
    stack = StandInStack("acme/kiln/w", tmp_path, session=session)
    real = real_world("acme/kiln/w", yes=True, log=lines.append, rollout_event=lambda e: None, rollout_options={},
                      project_dir=tmp_path, stack=stack, update_plans=False)
    assert isinstance(real.store, FileIntentStore) and any("stand-in" in line for line in lines)
    with pytest.raises(BadInput, match="--ami: ami-0123456789abcdef0 .*does not exist|--ami: .*not found"):
        from automation.rotate.state import RotationIntent

        real.world.validate(RotationIntent("rollback", "acme/kiln/w", "v4", None, fleet.base_ami, "v5",
                                           target_ami="ami-0123456789abcdef0"))
    real.world.check_amis({"standard": fleet.base_ami})
    # The stand-in has no cluster: found before the bake and the `up`, not after (which would apply and restore).
    with pytest.raises(BadInput, match="no kubeconfig output, so there is no cluster .* automation demo"):
        real.world.validate(RotationIntent("rotate", "acme/kiln/w", "v6", None, fleet.base_ami, "v5"))
    assert real.world.stack.outputs()["builderInstanceProfile"] == fleet.builder_instance_profile
    # A stack file kiln cannot parse is bad input naming the key, before anything happens.
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump({"config": {"aws:region": "us-east-2",
                                                                          "kiln:clusterName": "wired"}}))
    with pytest.raises(BadInput, match="kiln:kubernetesVersion is required"):
        real_world("bad", yes=True, log=lines.append, rollout_event=lambda e: None, rollout_options={},
                   project_dir=tmp_path, stack=StandInStack("bad", tmp_path, session=session))
    # --git-push/--git-commit that could not work are bad input before anything changes (not after the rotation).
    with pytest.raises(BadInput, match="--git-push origin/main: .*not a git repository"):
        real_world("acme/kiln/w", yes=True, log=lines.append, rollout_event=lambda e: None, rollout_options={},
                   project_dir=tmp_path, stack=stack, git_push="origin/main")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(BadInput, match="--git-push upstream/main: this checkout has no git remote 'upstream'"):
        real_world("acme/kiln/w", yes=True, log=lines.append, rollout_event=lambda e: None, rollout_options={},
                   project_dir=tmp_path, stack=stack, git_push="upstream/main")
    assert real_world("acme/kiln/w", yes=True, log=lines.append, rollout_event=lambda e: None, rollout_options={},
                      project_dir=tmp_path, stack=stack, git_commit=True).world.persist is not None


def test_guard_cli_refuses_in_one_line_per_reason(monkeypatch, capsys, tmp_path):
    import argparse

    from automation.rotate import guard
    from tests._fake_stack import FakeStack

    stack = FakeStack(tmp_path)
    monkeypatch.setattr("automation.stack.open_stack", lambda name, work_dir=None, **kw: stack)

    def run(*argv):
        parser = argparse.ArgumentParser()
        guard.configure(parser)
        return guard.main(parser.parse_args(list(argv)))

    # A deployed stack without a kubeconfig output: a rotation in flight cannot be ruled out. Fail closed.
    assert run("--stack", "prod") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("guard: refused: the stack has no kubeconfig output") and "--no-cluster-check" in line
    assert run("--stack", "prod", "--no-cluster-check") == 0
    err = capsys.readouterr().err
    assert "skipped (--no-cluster-check)" in err and "may be deployed: the stack file matches" in err
    assert "no rotation in flight" not in err                 # it was not checked, so it is not claimed
    stack.deployed["model"] = "v6"                   # a rotation ran; this checkout's stack file is stale
    assert run("--stack", "prod", "--no-cluster-check") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("guard: refused:")] == [
        next(line for line in err if "kiln:modelVersion in the stack file (v5) is not what the stack runs (v6)" in line)]
    # A cluster that cannot be read refuses (fail closed), one line, naming the way out.
    stack.deployed["model"] = "v5"
    dead = yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "k",
                           "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
                           "users": [{"name": "u", "user": {"token": "t"}}],
                           "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}]})
    monkeypatch.setattr(stack, "outputs", lambda real=stack.outputs: {**real(), "kubeconfig": dead})
    assert run("--stack", "prod") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("guard: refused: could not read the cluster for a rotation in flight") and "Traceback" \
        not in line
    assert run("--stack", "a/b/c/d") == 2
    stack.config_error = ConfigReadError("could not read the config of stack prod: error: incorrect passphrase")
    assert run("--stack", "prod") == 1
    assert "incorrect passphrase" in capsys.readouterr().err


def test_guard_cli_names_an_unknown_stack_as_bad_input(monkeypatch, capsys, tmp_path):
    import argparse

    from automation import stack as stack_module
    from automation.rotate import guard

    monkeypatch.setattr(stack_module, "PROJECT_DIR", tmp_path)
    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)      # the stand-in: no file, no stack
    parser = argparse.ArgumentParser()
    guard.configure(parser)
    assert guard.main(parser.parse_args(["--stack", "nosuch"])) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"bad input: --stack 'nosuch': no such Pulumi stack ({tmp_path / 'Pulumi.nosuch.yaml'} does not exist)"
