"""``python -m automation replace``: flags, bad input, and runs through the real adapters
against a moto server (AWS) and kmock (Kubernetes), both over HTTP."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest

from tests._aws_env import use_dummy_aws_credentials

from automation.cli import main as automation_main
from automation.rollout.kube import format_micro_time
from automation.rollout.model import TAG_CLUSTER
from tests._kube_emulator import LEASES, NODES, PODS

REGION = "us-east-2"


def run(argv: list[str]) -> int:
    try:
        return automation_main(["replace", *argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture
def kubeconfig(tmp_path, kube_server):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{kube_server.url}'}}}}]\n"
        "users: [{name: tester, user: {token: not-a-secret}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: tester}}]\n"
        "current-context: kmock\n")
    return str(path)


@pytest.fixture(autouse=True)
def env(monkeypatch, moto_url, kube_server):
    use_dummy_aws_credentials(monkeypatch, "AWS_DEFAULT_REGION", "AWS_REGION", "KUBECONFIG")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_REGION", REGION)

    kube_server.reset()


@pytest.fixture(scope="module")
def network(moto_url):
    """VPC, subnet and a two-version launch template, made once (moto's EC2 start-up is slow)."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    ec2 = session.client("ec2", endpoint_url=moto_url)
    asg = session.client("autoscaling", endpoint_url=moto_url)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    template = ec2.create_launch_template(LaunchTemplateName=f"kiln-gpu-{uuid.uuid4().hex[:8]}",
                                          LaunchTemplateData={"ImageId": "ami-12c6146b"})["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData={"ImageId": "ami-1234abcd"})
    return asg, subnet, template


class Fleet:
    """One ASG of two instances tagged for a cluster of its own, with a Ready node per instance."""

    def __init__(self, network, kube_server, *, current: bool) -> None:
        self.asg, subnet, template = network
        n = uuid.uuid4().hex[:8]   # moto's state is per process, shared with every other test module
        self.cluster, self.group = f"kiln-{n}", f"kiln-{n}-gpu-a"
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.group, MinSize=0, MaxSize=4, DesiredCapacity=2, VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "1"},
            Tags=[{"Key": TAG_CLUSTER, "Value": self.cluster, "PropagateAtLaunch": True}])
        if not current:   # the group moves on to v2; its instances still run v1
            self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group,
                                               LaunchTemplate={"LaunchTemplateId": template, "Version": "2"})
        self.ids = [i["InstanceId"] for i in self.describe()["Instances"]]
        for k, instance in enumerate(self.ids):
            kube_server.put(NODES, None, {
                "metadata": {"name": f"node-{k}", "labels": {"kiln.dev/node-group": "gpu-a", "kiln.dev/model-version": "m1"}},
                "spec": {"providerID": f"aws:///{REGION}a/{instance}"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        kube_server.put(PODS, "ml", {
            "metadata": {"name": "train-1", "ownerReferences": [{"kind": "Job", "name": "train", "controller": True}]},
            "spec": {"nodeName": "node-0"}, "status": {"phase": "Running"}})
        kube_server.clear_requests()

    def describe(self) -> dict:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]


def writes(kube_server) -> list:
    return kube_server.requests(lambda r: r.method in ("POST", "PATCH", "PUT", "DELETE"))


# ---- flags --------------------------------------------------------------------------------

def test_help_lists_the_flags_and_exits_zero(capsys):
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--cluster", "--region", "--kubeconfig", "--context", "--surge", "--deadline", "--ready-timeout",
                 "--boot-timeout", "--launch-failure-timeout", "--pause-autoscaler", "--strategy", "--dry-run",
                 "--json"):
        assert flag in text
    # Every outcome and its exit code is explained.
    for outcome in ("completed (0)", "dry_run (0)", "rolled_back (1)", "blocked (1)", "failed (1)", "bad input (2)"):
        assert outcome in text
    assert "PodDisruptionBudget" in text and "proven first" in text


def test_the_timeouts_reach_the_options():
    options = parse_options(["--boot-timeout", "5m", "--launch-failure-timeout", "20m", "--ready-timeout", "1h"])
    assert (options.boot_timeout_seconds, options.launch_failure_timeout_seconds, options.ready_timeout_seconds) == (
        300.0, 1200.0, 3600.0)
    defaults = parse_options([])
    assert (defaults.boot_timeout_seconds, defaults.launch_failure_timeout_seconds) == (600.0, 900.0)


@pytest.mark.parametrize("argv, flag", [
    ([], "--cluster"),
    (["--cluster", "kiln", "--surge", "lots"], "--surge"),
    (["--cluster", "kiln", "--surge", "0"], "--surge"),
    (["--cluster", "kiln", "--surge", "150%"], "--surge"),
    (["--cluster", "kiln", "--deadline", "soon"], "--deadline"),
    (["--cluster", "kiln", "--deadline", "0"], "--deadline"),
    (["--cluster", "kiln", "--ready-timeout", "-5m"], "--ready-timeout"),
    (["--cluster", "kiln", "--boot-timeout", "0"], "--boot-timeout"),
    (["--cluster", "kiln", "--launch-failure-timeout", "nan"], "--launch-failure-timeout"),
    (["--cluster", "kiln", "--strategy", "yolo"], "--strategy"),
    (["--cluster", "kiln", "--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig"),
    (["--cluster", " "], "--cluster"),
])
def test_bad_input_exits_2_naming_the_flag(argv, flag, capsys):
    assert run(argv) == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--job-kinds", ""], ["--job-kinds", "Job,,TFJob"], ["--job-kinds", "pytorchjob"], ["--job-kinds", "Py Torch"],
    ["--also-job-kinds", "ray-cluster"], ["--also-job-kinds", "DaemonSet"], ["--job-kinds", " , "],
])
def test_bad_job_kinds_exit_2_naming_the_flag(argv, capsys):
    assert run(["--cluster", "kiln", *argv]) == 2
    assert argv[0] in capsys.readouterr().err


def parse_options(argv: list[str]):
    import argparse

    from automation.rollout.cli import configure, options_from_args
    parser = argparse.ArgumentParser()
    configure(parser)
    return options_from_args(parser.parse_args(["--cluster", "kiln", *argv]))


def test_job_kinds_default_replace_and_add():
    from automation.rollout.engine import DEFAULT_JOB_OWNER_KINDS
    assert parse_options([]).job_owner_kinds == DEFAULT_JOB_OWNER_KINDS
    assert "PyTorchJob" in DEFAULT_JOB_OWNER_KINDS and "RayCluster" not in DEFAULT_JOB_OWNER_KINDS
    assert parse_options(["--job-kinds", "Job, PyTorchJob"]).job_owner_kinds == {"Job", "PyTorchJob"}
    assert parse_options(["--also-job-kinds", "RayCluster"]).job_owner_kinds == DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    assert parse_options(["--job-kinds", "Job", "--also-job-kinds", "RayCluster", "--also-job-kinds", "MyTrainJob,Foo"]
                         ).job_owner_kinds == {"Job", "RayCluster", "MyTrainJob", "Foo"}
    for options in (parse_options([]), parse_options(["--also-job-kinds", "RayCluster"])):
        options.validate()


def test_help_explains_the_job_kind_flags(capsys):
    assert run(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--job-kinds KIND[,KIND...]" in text and "--also-job-kinds KIND[,KIND...]" in text
    assert "PyTorchJob" in text and "RayCluster" in text


def test_unknown_context_names_the_context_flag(kubeconfig, capsys):
    assert run(["--cluster", "kiln", "--kubeconfig", kubeconfig, "--context", "prod"]) == 2
    assert "--context" in capsys.readouterr().err


def test_missing_region_names_the_region_flag(kubeconfig, monkeypatch, capsys):
    monkeypatch.delenv("AWS_REGION")
    assert run(["--cluster", "kiln", "--kubeconfig", kubeconfig]) == 2
    assert "--region" in capsys.readouterr().err


def test_durations_accept_seconds_minutes_and_hours():
    from automation.rollout.cli import parse_duration
    assert [parse_duration(t) for t in ("7200", "90s", "90m", "2h", "1h30m")] == [7200, 90, 5400, 7200, 5400]


# ---- runs through the real adapters ------------------------------------------------------

def test_dry_run_plans_from_the_real_world_and_changes_nothing(network, kube_server, kubeconfig, capsys):
    fleet = Fleet(network, kube_server, current=False)

    code = run(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--dry-run", "--json"])

    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0 and report["outcome"] == "dry_run"
    assert report["old_nodes_at_start"] == 2 and report["plan"]
    assert any(json.loads(line).get("event") == "plan" for line in lines[:-1])
    assert writes(kube_server) == []
    assert kube_server.get(LEASES, "kube-system", "kiln-rollout") is None
    group = fleet.describe()
    assert group["DesiredCapacity"] == 2 and group["MaxSize"] == 4
    assert sorted(i["InstanceId"] for i in group["Instances"]) == sorted(fleet.ids)
    assert {t["Key"] for t in group["Tags"]} == {TAG_CLUSTER}


def test_up_to_date_fleet_completes_taking_and_releasing_the_lease(network, kube_server, kubeconfig, capsys):
    fleet = Fleet(network, kube_server, current=True)

    code = run(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--json", "--holder", "test-run"])

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["outcome"] == "completed" and report["old_nodes_remaining"] == 0
    lease = kube_server.get(LEASES, "kube-system", "kiln-rollout")
    assert lease is not None and "holderIdentity" not in lease["spec"]       # taken, then released
    assert kube_server.requests(lambda r: r.resource == LEASES and r.method == "POST")
    assert not kube_server.requests(lambda r: r.resource == NODES and r.method == "PATCH")


def test_a_live_lease_of_another_rollout_stops_the_run(network, kube_server, kubeconfig, capsys):
    fleet = Fleet(network, kube_server, current=False)
    kube_server.put(LEASES, "kube-system", {
        "metadata": {"name": "kiln-rollout"},
        "spec": {"holderIdentity": "other-rollout", "leaseDurationSeconds": 3600,
                 "renewTime": format_micro_time(time.time())}})
    kube_server.clear_requests()

    code = run(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--json"])

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and report["outcome"] == "failed" and "lock" in report["reason"]
    assert kube_server.get(LEASES, "kube-system", "kiln-rollout")["spec"]["holderIdentity"] == "other-rollout"
    assert not kube_server.requests(lambda r: r.resource == NODES and r.method == "PATCH")
    assert fleet.describe()["DesiredCapacity"] == 2


def test_human_output_prints_the_report(network, kube_server, kubeconfig, capsys):
    fleet = Fleet(network, kube_server, current=False)
    assert run(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--dry-run"]) == 0
    assert "rollout dry_run" in capsys.readouterr().out


def test_an_api_error_is_one_line_and_exit_1_never_a_traceback(network, tmp_path, capsys):
    import kmock

    from tests._kube_emulator import KubeEmulator
    broken = KubeEmulator()
    try:
        fleet = Fleet(network, broken, current=False)
        error = kmock.KubernetesError(status=500, reason="InternalError", message="etcdserver: request timed out\n"
                                      "(a second line)", details={})
        broken.call(lambda: broken.emulator[kmock.action.LIST, NODES] ** 100 << error)
        path = tmp_path / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: b, cluster: {{server: '{broken.url}'}}}}]\n"
            "users: [{name: t, user: {token: not-a-secret}}]\n"
            "contexts: [{name: b, context: {cluster: b, user: t}}]\ncurrent-context: b\n")
        assert run(["--cluster", fleet.cluster, "--kubeconfig", str(path)]) == 1
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        [line] = [l for l in captured.err.splitlines() if l.startswith("python -m automation replace")]
        assert "failed" in line and "500 Internal Server Error: etcdserver: request timed out (a second line)" in line
        assert fleet.describe()["DesiredCapacity"] == 2          # nothing was changed
    finally:
        broken.close()


@pytest.mark.parametrize("content", [b"this: [is: not: yaml\n", b"\x00\x01\x02", b"- a list\n- not a config\n", None])
def test_a_kubeconfig_that_cannot_be_read_exits_2_naming_the_flag(tmp_path, capsys, content):
    path = tmp_path / "kubeconfig"
    if content is None:
        path.mkdir()                     # a directory where a file should be
    else:
        path.write_bytes(content)
    assert run(["--cluster", "kiln", "--kubeconfig", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--kubeconfig" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
