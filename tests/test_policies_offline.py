"""The offline runner: programs run under mocks, every registration goes through the pack's analyzer.

Programs here are small, purpose-built Pulumi programs (one good, one bad) so the
runner is tested independently of the project's own program; the project's
program and Pulumi.example.yaml are checked in test_policies_example.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

from policies import offline
from policies.program import KilnMocks, PROJECT_DIR, run_program

PYTHON = sys.executable

COMMON = '''
import json
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
'''

GOOD_PROGRAM = COMMON + '''
cfg = pulumi.Config("kiln")
zones = cfg.require_object("availabilityZones")
version = cfg.require("modelVersion")
key = aws.kms.Key("key")
repo = aws.ecr.Repository("trainer", name="trainer", image_tag_mutability="IMMUTABLE",
    image_scanning_configuration={"scan_on_push": True},
    encryption_configurations=[{"encryption_type": "KMS", "kms_key": key.arn}])
aws.ecr.LifecyclePolicy("trainer", repository=repo.name, policy=json.dumps({"rules": [
    {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
     "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}},
    {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 10},
     "action": {"type": "expire"}}]}))
lt = aws.ec2.LaunchTemplate("workers", image_id="ami-0123456789abcdef0",
    metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 2},
    block_device_mappings=[
        {"device_name": "/dev/xvda", "ebs": {"encrypted": "true", "volume_size": 50, "volume_type": "gp3"}},
        {"device_name": "/dev/xvdb", "ebs": {"encrypted": "true", "volume_initialization_rate": 300}}],
    network_interfaces=[{"associate_public_ip_address": "false"}])
for zone in zones:
    subnet = aws.ec2.Subnet(f"private-{zone}", vpc_id="vpc-0abc12345", cidr_block="10.0.0.0/20", availability_zone=zone)
    aws.autoscaling.Group(f"workers-{zone}", min_size=0, max_size=4, desired_capacity=1,
        vpc_zone_identifiers=[subnet.id],
        launch_template={"id": lt.id, "version": lt.latest_version.apply(str)},
        tags=[{"key": "k8s.io/cluster-autoscaler/enabled", "value": "true", "propagate_at_launch": False},
              {"key": "k8s.io/cluster-autoscaler/kiln", "value": "owned", "propagate_at_launch": False},
              {"key": "kiln.dev/node-group", "value": "workers", "propagate_at_launch": True}],
        opts=pulumi.ResourceOptions(ignore_changes=["desired_capacity"]))
aws.ec2.SecurityGroup("nodes", vpc_id="vpc-0abc12345",
    ingress=[{"from_port": 443, "to_port": 443, "protocol": "tcp", "cidr_blocks": ["10.0.0.0/16"]}],
    egress=[{"from_port": 0, "to_port": 0, "protocol": "-1", "cidr_blocks": ["0.0.0.0/0"]}])
issuer = "oidc.eks.us-east-2.amazonaws.com/id/EXAMPLE"
role = aws.iam.Role("autoscaler", assume_role_policy=doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
    "Principal": {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"},
    "Condition": {"StringEquals": {f"{issuer}:sub": "system:serviceaccount:kube-system:cluster-autoscaler"}}}))
aws.iam.RolePolicy("autoscaler", role=role.name, policy=doc({"Effect": "Allow",
    "Action": ["autoscaling:SetDesiredCapacity"], "Resource": "*",
    "Condition": {"StringEquals": {"aws:ResourceTag/kiln.dev/cluster": "kiln"}}}))
aws.eks.Cluster("eks", role_arn=role.arn, enabled_cluster_log_types=["api", "audit", "authenticator"],
    vpc_config={"subnet_ids": ["subnet-0aaa1111"], "endpoint_public_access": False},
    encryption_config={"resources": ["secrets"], "provider": {"key_arn": key.arn}},
    access_config={"authentication_mode": "API"})
k8s.core.v1.PersistentVolume("model", metadata={"name": f"model-{version}"}, spec={
    "access_modes": ["ReadOnlyMany"], "capacity": {"storage": "100Gi"}, "host_path": {"path": "/opt/models"},
    "node_affinity": {"required": {"node_selector_terms": [{"match_expressions": [
        {"key": "kiln.dev/model-version", "operator": "In", "values": [version]}]}]}}})
k8s.core.v1.PersistentVolumeClaim("model", metadata={"name": f"model-{version}", "namespace": "ml-jobs"},
    spec={"access_modes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "100Gi"}}})
k8s.batch.v1.Job("smoke", spec={"ttl_seconds_after_finished": 600, "backoff_limit": 1,
    "pod_failure_policy": {"rules": [{"action": "Ignore", "on_pod_conditions": [{"type": "DisruptionTarget"}]}]},
    "template": {"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}},
        "spec": {"restart_policy": "Never",
        "containers": [{"name": "smoke", "image": "busybox", "resources": {"requests": {"cpu": "100m"}},
                        "volume_mounts": [{"name": "model", "mount_path": "/model", "read_only": True}]}],
        "volumes": [{"name": "model", "host_path": {"path": "/opt/models"}}]}}})
'''

BAD_PROGRAM = COMMON + '''
repo = aws.ecr.Repository("server", name="server", image_tag_mutability="MUTABLE")
lt = aws.ec2.LaunchTemplate("lt", image_id="ami-0123456789abcdef0", key_name="ops",
    metadata_options={"http_tokens": "optional", "http_put_response_hop_limit": 3},
    block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {"volume_size": 20}}],
    network_interfaces=[{"associate_public_ip_address": "true"}])
aws.autoscaling.Group("asg", min_size=0, max_size=2, availability_zones=["us-east-2a", "us-east-2b"],
    launch_template={"id": lt.id, "version": "$Latest"})
aws.ec2.SecurityGroup("open", ingress=[{"from_port": 22, "to_port": 22, "protocol": "tcp", "cidr_blocks": ["0.0.0.0/0"]}])
aws.vpc.SecurityGroupIngressRule("open6", security_group_id="sg-1", cidr_ipv6="::/0", ip_protocol="-1")
aws.iam.Policy("star", policy=doc({"Effect": "Allow", "Action": "*", "Resource": "*"}))
role = aws.iam.Role("irsa", assume_role_policy=doc({"Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
    "Principal": {"Federated": "arn:aws:iam::1:oidc-provider/oidc.eks.us-east-2.amazonaws.com/id/X"},
    "Condition": {"StringLike": {"oidc.eks.us-east-2.amazonaws.com/id/X:sub": "system:serviceaccount:*"}}}))
aws.iam.RolePolicyAttachment("admin", role=role.name, policy_arn="arn:aws:iam::aws:policy/AdministratorAccess")
aws.eks.Cluster("eks", role_arn=role.arn, vpc_config={"subnet_ids": ["subnet-0aaa1111"],
    "public_access_cidrs": ["0.0.0.0/0"]}, access_config={"authentication_mode": "CONFIG_MAP"})
k8s.core.v1.PersistentVolume("pv", spec={"access_modes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
    "host_path": {"path": "/var/lib"}, "claim_ref": {"namespace": "default", "name": "model-v5"}})
k8s.batch.v1.Job("writer", spec={"template": {"spec": {"restart_policy": "Never",
    "containers": [{"name": "c", "image": "busybox", "volume_mounts": [{"name": "m", "mount_path": "/m"}]}],
    "volumes": [{"name": "m", "persistent_volume_claim": {"claim_name": "model-v5"}}]}}})
k8s.batch.v1.Job("job", spec={"template": {"spec": {"restart_policy": "Never",
    "containers": [{"name": "c", "image": "busybox", "volume_mounts": [{"name": "m", "mount_path": "/m"}]}],
    "volumes": [{"name": "m", "host_path": {"path": "/opt/models"}}]}}})
'''

EXPECTED_BAD = {
    "ecr-repository-has-lifecycle-policy", "ecr-immutable-tags", "ecr-scan-on-push", "ecr-kms-encryption",
    "compute-imdsv2-required", "compute-ebs-encrypted", "compute-no-public-ip", "compute-no-ssh-access",
    "lt-model-volume-init-rate",
    "asg-single-zone", "asg-autoscaler-discovery-tags", "asg-launch-template-version-pinned",
    "asg-desired-capacity-ignored", "eks-endpoint-not-public-to-world", "eks-secrets-encryption",
    "eks-control-plane-logging", "eks-api-authentication-mode", "sg-no-ingress-from-internet",
    "iam-no-star-on-star", "iam-no-administrator-access", "iam-irsa-trust-scoped",
    "k8s-hostpath-model-only-readonly", "k8s-job-requests-and-ttl", "k8s-job-pod-failure-policy",
    "k8s-model-claim-mounted-readonly", "k8s-job-safe-to-evict-false",
    "stack-asg-per-group-and-zone", "stack-model-volume-for-version",
}

STACK = {
    "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33",
    "kiln:availabilityZones": ["us-east-2a", "us-east-2b"], "kiln:nodeAmi": "ami-0123456789abcdef0",
    "kiln:modelVersion": "v5",
    # One untainted CPU group: a stack whose only group is tainted (nvidia.com/gpu) has nowhere to run CoreDNS
    # and cluster-autoscaler, and a GPU type needs gpu: true (infra/config.py and infra/validation.py refuse both).
    "kiln:nodeGroups": [{"name": "workers", "instanceTypes": ["m7i.2xlarge"], "minSize": 0, "maxSize": 4,
                         "desiredSize": 1}],
}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    tmp_path = tmp_path_factory.mktemp("programs")
    out = {}
    for name, source in (("good", GOOD_PROGRAM), ("bad", BAD_PROGRAM)):
        (tmp_path / name).mkdir()
        out[name] = tmp_path / name / "__main__.py"
        out[name].write_text(source)
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text(yaml.safe_dump({"config": STACK}))
    out["stack"] = stack
    return out


@pytest.fixture(scope="module")
def runs(programs):
    """Each program run once under mocks; the policies are evaluated on the recorded runs."""
    return {name: run_program(STACK, program=programs[name], stack="dev") for name in ("good", "bad")}


def test_good_program_passes_every_policy(runs):
    report = offline.evaluate(runs["good"], stack="dev")
    assert [(v.policy, v.message) for v in report.violations] == []
    assert report.not_applicable == [] and report.exit_code == 0
    assert report.resources == 15  # every resource of the program reached the analyzer


def test_bad_program_reports_each_rule(programs):
    report = offline.check(STACK, program=programs["bad"], stack="dev")
    assert {v.policy for v in report.violations} == EXPECTED_BAD
    assert report.exit_code == 1
    by_policy = {v.policy: v for v in report.violations}
    assert by_policy["iam-no-administrator-access"].name == "admin"
    assert by_policy["lt-model-volume-init-rate"].level == "advisory"
    assert by_policy["stack-model-volume-for-version"].type == ""  # a stack-level violation
    # ASG options reach the policy: the bad ASG has no ignore_changes.
    assert by_policy["asg-desired-capacity-ignored"].type == "aws:autoscaling/group:Group"
    # A writable mount of the claim bound to the hostPath PV, attributed to the Job that mounts it.
    assert by_policy["k8s-model-claim-mounted-readonly"].name == "writer"


def test_policy_config_sets_levels_and_thresholds(runs):
    # Everything advisory: violations are still reported, but nothing blocks.
    report = offline.evaluate(runs["bad"], policy_config={"all": "advisory"})
    assert report.violations and report.exit_code == 0
    # A threshold from the config schema: the good program keeps 10 images, cap them at 5.
    report = offline.evaluate(runs["good"], policy_config={"ecr-lifecycle-policy": {"maxImages": 5}})
    assert [(v.policy, v.message) for v in report.violations] == [
        ("ecr-lifecycle-policy", "keeps up to 10 tagged images; at most 5 allowed")]
    report = offline.evaluate(runs["bad"], policy_config={"compute-no-ssh-access": "disabled"})
    assert "compute-no-ssh-access" not in {v.policy for v in report.violations}


class PreviewMocks(KilnMocks):
    """A provider that, like a real one during preview, does not know a new template's version yet."""

    def new_resource(self, args):
        rid, state = super().new_resource(args)
        if args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            state.pop("latestVersion")
        return rid, state


def test_unknown_values_are_handled_as_the_sdk_does(programs):
    report = offline.check(STACK, program=programs["good"], preview=True, mocks=PreviewMocks())
    pinned = [v for v in report.violations if v.policy == "asg-launch-template-version-pinned"]
    assert len(pinned) == 2  # one per zone's ASG
    for v in pinned:
        assert v.level == "advisory"  # the SDK downgrades "can't know during preview" to advisory
        assert "string value at .launchTemplate.version can't be known during preview" in v.message
        assert v.type == "aws:autoscaling/group:Group"
    assert report.exit_code == 0
    # The same program with every value known (an update): nothing to report.
    assert offline.check(STACK, program=programs["good"]).violations == []


def test_a_preview_is_the_first_preview_of_a_new_stack(programs):
    """--preview: every output a provider computes is unknown, as in the engine's preview of creates; what the
    rules cannot know is reported as the SDK reports it (advisory), never taken for safe, and the stack rules
    reach new resources through the engine's property dependencies."""
    run = run_program(STACK, program=programs["good"], preview=True)
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    assert lt.id == "" and "latestVersion" not in lt.outputs and "arn" not in lt.outputs
    asg = run.of_type("aws:autoscaling/group:Group")[0]
    assert asg.property_dependencies["launchTemplate"] == (lt.urn,)
    report = offline.evaluate(run)
    assert report.mandatory == [] and report.violations
    assert all(v.level == "advisory" and "can't be known during preview" in v.message for v in report.violations)
    # The template's id is unknown, yet the stack rule matched the ASGs to it through their property dependency.
    assert "compute-launch-template-declared" not in {v.policy for v in report.violations}
    request = offline.analyze_stack_request(run)
    sent = next(r for r in request.resources if r.urn == asg.urn)
    assert list(sent.propertyDependencies["launchTemplate"].urns) == [lt.urn]
    # A bad program is still flagged during the preview, for everything known.
    bad = offline.check(STACK, program=programs["bad"], preview=True)
    assert bad.exit_code == 1 and bad.mandatory


def test_engine_view_of_wire_values():
    ids = {"urn:a": "i-123"}
    wire = {"role": {offline._SIG_KEY: offline._RESOURCE_SIG, "urn": "urn:a"},
            "comp": {offline._SIG_KEY: offline._RESOURCE_SIG, "urn": "urn:c"},
            "out": {offline._SIG_KEY: offline._OUTPUT_SIG},
            "sec": {offline._SIG_KEY: offline._OUTPUT_SIG, "value": "x", "secret": True}}
    view = offline._engine_value(wire, ids)
    assert view["role"] == "i-123" and view["comp"] == "urn:c"
    assert view["out"] == pulumi.runtime.rpc.UNKNOWN
    assert view["sec"] == {offline._SIG_KEY: offline._SECRET_SIG, "value": "x"}


# --------------------------------------------------------------------------- the command line


def run_cli(*args: str, cwd: Path = PROJECT_DIR, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run([PYTHON, "-m", "policies", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_exit_codes_and_json(programs):
    """`python -m policies check` as a process: exit 1 and machine-readable violations."""
    bad = run_cli("check", "--config", str(programs["stack"]), "--program", str(programs["bad"]), "--json")
    assert bad.returncode == 1, bad.stderr
    result = json.loads(bad.stdout.strip().splitlines()[-1])
    assert {v["policy"] for v in result["violations"]} == EXPECTED_BAD
    assert result["stack"] == "dev" and result["exitCode"] == 1


def test_cli_text_output_passes_good_program(programs, capsys):
    code = offline.main(["--config", str(programs["stack"]), "--program", str(programs["good"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "PASS: 0 mandatory and 0 advisory violation(s) across 15 resources (stack dev)"


def test_cli_bad_input_exits_2(programs, tmp_path, capsys):
    def main(*args):
        code = offline.main(list(args))
        return code, capsys.readouterr().err

    code, err = main("--config", str(tmp_path / "Pulumi.nope.yaml"))
    assert code == 2 and "no such stack config file" in err
    assert main("--stack", "no-such-stack")[0] == 2
    invalid = tmp_path / "Pulumi.bad.yaml"
    invalid.write_text(yaml.safe_dump({"config": {**STACK, "kiln:nodeGroups": [
        {"name": "workers", "instanceTypes": ["m7i.2xlarge"], "minSize": 5, "maxSize": 2, "desiredSize": 3}]}}))
    code, err = main("--config", str(invalid), "--program", str(programs["good"]))
    assert code == 2 and "kiln:nodeGroups[0].maxSize (2) must be >= minSize (5)" in err
    unknown_policy = tmp_path / "policy.json"
    unknown_policy.write_text(json.dumps({"no-such-rule": "advisory", "compute-imdsv2-required": {"hops": 1},
                                          "ecr-lifecycle-policy": {"maxImages": "many"}}))
    code, err = main("--config", str(programs["stack"]), "--program", str(programs["good"]),
                     "--policy-config", str(unknown_policy))
    assert code == 2 and "'no-such-rule' is not a policy" in err
    assert "compute-imdsv2-required: Additional properties are not allowed ('hops' was unexpected)" in err
    assert "ecr-lifecycle-policy.maxImages: 'many' is not of type 'integer'" in err
    # Unreadable input is bad input (2), not a policy failure (1).
    not_utf8 = tmp_path / "Pulumi.latin1.yaml"
    not_utf8.write_bytes(b"\xff\xfeconfig: {}\n")
    code, err = main("--config", str(not_utf8), "--program", str(programs["good"]))
    assert code == 2 and "cannot read" in err
    code, err = main("--config", str(programs["stack"]), "--program", str(programs["good"]),
                     "--policy-config", str(tmp_path))  # a directory
    assert code == 2 and "cannot read" in err
    odd_level = tmp_path / "odd-level.json"
    odd_level.write_text(json.dumps({"ecr-lifecycle-policy": {"enforcementLevel": ["mandatory"]}}))
    code, err = main("--config", str(programs["stack"]), "--program", str(programs["good"]),
                     "--policy-config", str(odd_level))
    assert code == 2 and "ecr-lifecycle-policy.enforcementLevel ['mandatory'] must be one of" in err
    with pytest.raises(SystemExit) as exc:  # neither --stack nor --config
        offline.main([])
    assert exc.value.code == 2
    usage = run_cli()
    assert usage.returncode == 2 and "usage: python -m policies check" in usage.stdout


def test_pack_boots_the_way_pulumi_launches_it():
    """`pulumi-analyzer-policy-python <engine> .` runs `python -u -m pulumi.policy <engine> .` in the pack dir.

    The pack must start its analyzer server and print the port on stdout's first line (what the
    engine reads), not take the address for a subcommand.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([PYTHON, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."], cwd=PROJECT_DIR / "policies",
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first.isdigit() and 0 < int(first) < 65536, (first, proc.stderr.read() if proc.poll() is not None else "")
        assert proc.poll() is None  # still serving
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_pack_boots_with_the_engines_logging_flags_first():
    """Should the engine pass its logging flags (`--logtostderr -v=9`) before the address, the pack still serves."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([PYTHON, "-u", "-m", "pulumi.policy", "--logtostderr", "-v=9", "127.0.0.1:1", "."],
                            cwd=PROJECT_DIR / "policies", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first.isdigit(), (first, proc.stderr.read() if proc.poll() is not None else "")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_mistyped_subcommand_prints_usage_instead_of_serving():
    typo = run_cli("chek", timeout=60)
    assert typo.returncode == 2 and "usage: python -m policies check" in typo.stdout
    assert run_cli("--help", timeout=60).returncode == 0


def test_stack_rules_read_kiln_config_the_way_the_cli_passes_it(monkeypatch):
    """The CLI puts the stack's config in PULUMI_CONFIG for the pack; pulumi_policy loads it per request."""
    from policies.program import ProgramRun, config_to_pulumi
    pulumi.runtime.set_all_config({}, [])
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config_to_pulumi(STACK)))
    report = offline.evaluate(ProgramRun(), stack="dev")  # nothing declared at all
    stack_messages = sorted(v.message for v in report.violations if v.policy.startswith("stack-"))
    assert stack_messages == [
        "no PersistentVolumeClaim named 'model-v5' for model v5",
        "no hostPath PersistentVolume at /opt/models requires kiln.dev/model-version=v5",
        "node group 'workers' has no ASG in us-east-2a",
        "node group 'workers' has no ASG in us-east-2b",
    ]
    assert report.exit_code == 1
    pulumi.runtime.set_all_config({}, [])



# --------------------------------------------------------------------------- the stack file, read as Pulumi reads it

EXAMPLE_TEXT = (PROJECT_DIR / "Pulumi.example.yaml").read_text()


@pytest.mark.parametrize("text, fragment", [
    (EXAMPLE_TEXT.replace("  kiln:jobsNamespace: ml-jobs\n", "  kiln:jobsNamespace: kube-system\n  kiln:jobsNamespace: ml-jobs\n"),
     "key 'kiln:jobsNamespace' is given twice"),
    (EXAMPLE_TEXT.replace("      maxSize: 3\n", "      maxSize: 3\n      maxSize: 900\n", 1), "key 'maxSize' is given twice"),
    (EXAMPLE_TEXT + "config:\n  kiln:modelPath: /etc\n", "key 'config' is given twice"),
    (EXAMPLE_TEXT.replace("  kiln:modelPath: /opt/models\n", "  kiln:modelPath: /opt/models\n  modelPath: /data\n"),
     "kiln:modelPath is given twice"),
    # YAML 1.1's booleans and base-60 numbers are strings to Pulumi (yaml.v3): kiln refuses them as Pulumi would.
    (EXAMPLE_TEXT.replace("      spot: true\n", "      spot: yes\n"), "spot ('yes') must be true or false"),
    (EXAMPLE_TEXT.replace("      maxSize: 3\n", "      maxSize: 16:40\n", 1), "maxSize ('16:40') must be an integer"),
])
def test_a_stack_file_is_read_as_pulumi_reads_it(text, fragment, tmp_path):
    path = tmp_path / "Pulumi.dup.yaml"
    path.write_text(text)
    with pytest.raises(offline.BadInput) as caught:
        offline.load_stack_config(path)
    assert any(fragment in line for line in caught.value.lines), caught.value.lines


def test_yaml_1_2_numbers_and_merge_keys_are_read_as_pulumi_reads_them(tmp_path):
    from infra.config import read_stack_yaml
    doc = read_stack_yaml("a: 0o17\nb: 0x1f\nc: 2024-01-01\nd: on\ne: TRUE\nf: &g {x: 1}\nh: {<<: *g, y: 2}\n")
    assert doc == {"a": 15, "b": 31, "c": "2024-01-01", "d": "on", "e": True, "f": {"x": 1}, "h": {"x": 1, "y": 2}}
    anchored = EXAMPLE_TEXT.replace("    - name: general\n", "    - &general\n      name: general\n", 1)
    path = tmp_path / "Pulumi.anchor.yaml"
    path.write_text(anchored)
    assert offline.load_stack_config(path)["kiln:nodeGroups"][0]["name"] == "general"


@pytest.mark.parametrize("settings, fragment", [
    ({"cost-volume-size-bounds": {"minVolumeSizeGiB": 2000, "maxVolumeSizeGiB": 10}},
     "minVolumeSizeGiB (2000) must not be above maxVolumeSizeGiB (10)"),
    ({"k8s-no-cluster-admin-binding": {"allowedPrincipalArns": ["*"]}}, "does not match"),
    ({"iam-no-administrator-access": {"forbiddenPolicies": []}}, "should be non-empty"),
    ({"eks-control-plane-logging": {"requiredLogTypes": []}}, "should be non-empty"),
    ({"k8s-hostpath-model-only-readonly": {"modelPath": "opt/models"}}, "does not match"),
    ({"sg-no-ingress-from-internet": {"allowedPrefixListIds": ["*"]}}, "does not match"),
    ({"k8s-helm-chart-allowed": {"allowedCharts": [""]}}, "should be non-empty"),
    ({"cost-volume-performance-bounds": {"maxIops": 10**6}}, "is greater than the maximum"),
])
def test_the_packs_own_settings_are_validated(settings, fragment, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(offline.BadInput) as caught:
        offline.load_policy_config(path)
    assert any(fragment in line for line in caught.value.lines), caught.value.lines
