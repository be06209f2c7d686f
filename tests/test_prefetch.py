"""Image prefetch: the push rule, its Run Command target and role, and the on-join association.

The event pattern and the input transformer are exercised by a moto server over
HTTP: the rule and the transformer registered by ``__main__.py`` are put on
moto's EventBridge, with an SQS queue standing in for SSM as the target (moto
delivers to SQS, not to Run Command). The commands that come out are then run
by ``sh`` on a stub "node" whose ``aws`` and ``ctr`` record what they were asked.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import boto3
import pytest

from _program_helpers import BASE, run, with_changes
from automation.localaws import moto_server
from infra.prefetch import DOCUMENT, EVENT_INPUT_PATHS, join_pull_script
from policies.rules.iam import star_on_star

ACCOUNT = "123456789012"
REGION = "us-east-2"
ECR_IMAGE = f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/trainer:1.4"
PUBLIC_IMAGE = "public.ecr.aws/docker/library/busybox:1.36"
CONFIG = with_changes(BASE, ecrRepositories=["trainer", "ml/infer"], prefetchImages=[ECR_IMAGE, PUBLIC_IMAGE])

RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"
ASSOCIATION = "aws:ssm/association:Association"


@pytest.fixture(scope="module")
def program():
    return run(CONFIG)


# ---- a moto EventBridge + SQS standing in for the real thing -------------------------------------------


@pytest.fixture(scope="module")
def aws_clients():
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with moto_server() as url:
            yield (boto3.client("events", region_name=REGION, endpoint_url=url),
                   boto3.client("sqs", region_name=REGION, endpoint_url=url))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def bus(aws_clients, program):
    """The program's rule on moto, its transformer on a target queue: push an event, get the commands."""
    events, sqs = aws_clients
    rule = program.one(RULE)
    target = program.one(TARGET)
    queue_url = sqs.create_queue(QueueName="node-commands")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="kiln-prefetch", EventPattern=rule.inputs["eventPattern"])
    transformer = target.inputs["inputTransformer"]
    events.put_targets(Rule="kiln-prefetch", Targets=[{
        "Id": "node", "Arn": queue_arn,
        "InputTransformer": {"InputPathsMap": transformer["inputPaths"], "InputTemplate": transformer["inputTemplate"]},
    }])

    def push(detail: dict, detail_type: str = "ECR Image Action", source: str = "aws.ecr") -> list[dict]:
        events.put_events(Entries=[{"Source": source, "DetailType": detail_type, "Detail": json.dumps(detail)}])
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for m in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in messages]

    return push


def push_detail(**changes) -> dict:
    detail = {"result": "SUCCESS", "repository-name": "trainer", "action-type": "PUSH", "image-tag": "1.5",
              "image-digest": "sha256:" + "a" * 64}
    detail.update(changes)
    return {k: v for k, v in detail.items() if v is not None}


# ---- a stub node: sh with aws and ctr that record their arguments ----------------------------------------


def run_on_stub_node(tmp_path: Path, script: str, present: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Run ``script`` with ``sh``; returns (exit code, ctr invocations, stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "ctr.log"
    log.write_text("")
    (tmp_path / "present").write_text("".join(f"{i}\n" for i in present))
    stubs = {
        # The node's own credentials: the instance role gives ECR a password for the asked region.
        "aws": '#!/bin/sh\n[ "$1 $2 $3" = "ecr get-login-password --region" ] || exit 9\necho "TOKEN-$4"\n',
        "ctr": (f'#!/bin/sh\necho "$*" >> {log}\n'
                f'case "$*" in *" images ls -q") cat {tmp_path / "present"};; esac\n'),
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "script.sh").write_text(script + "\n")
    proc = subprocess.run(["sh", str(tmp_path / "script.sh")], capture_output=True, text=True, timeout=20,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, cwd=tmp_path)
    return proc.returncode, [line for line in log.read_text().splitlines() if line], proc.stderr


# ---- the rule ---------------------------------------------------------------------------------------------


def test_push_rule_matches_successful_tagged_pushes_to_kiln_repositories_only(program):
    pattern = json.loads(program.one(RULE).inputs["eventPattern"])
    assert pattern == {
        "source": ["aws.ecr"],
        "detail-type": ["ECR Image Action"],
        "detail": {
            "action-type": ["PUSH"],
            "result": ["SUCCESS"],
            "repository-name": ["ml/infer", "trainer"],
            "image-tag": [{"exists": True}],
        },
    }


def test_moto_delivers_only_matching_events(bus):
    assert len(bus(push_detail())) == 1
    assert len(bus(push_detail(**{"repository-name": "ml/infer"}))) == 1
    assert bus(push_detail(result="FAILURE")) == []
    assert bus(push_detail(**{"action-type": "DELETE"})) == []
    assert bus(push_detail(**{"repository-name": "someone-elses"})) == []
    assert bus(push_detail(**{"image-tag": None})) == []       # a push by digest only
    assert bus(push_detail(), detail_type="ECR Image Scan") == []
    assert bus(push_detail(), source="my.app") == []


# ---- the target -------------------------------------------------------------------------------------------


def test_target_runs_the_shell_document_on_this_clusters_nodes_as_the_prefetch_role(program):
    target = program.one(TARGET)
    role = program.one(ROLE, "prefetch-on-push")
    assert target.inputs["arn"] == f"arn:aws:ssm:{REGION}::document/{DOCUMENT}"
    assert target.inputs["runCommandTargets"] == [{"key": "tag:kiln.dev/cluster", "values": ["kiln-test"]}]
    assert target.inputs["roleArn"] == role.outputs["arn"]
    assert program.one(RULE).inputs["name"] == "kiln-test-image-pushed"
    assert target.inputs["rule"] == "kiln-test-image-pushed"
    assert target.inputs["inputTransformer"]["inputPaths"] == {
        "repo": "$.detail.repository-name", "tag": "$.detail.image-tag", "account": "$.account", "region": "$.region",
    } == EVENT_INPUT_PATHS


def test_a_push_pulls_exactly_that_image_into_k8s_io_with_the_nodes_credentials(bus, tmp_path):
    [params] = bus(push_detail(**{"repository-name": "ml/infer", "image-tag": "2.0.1"}))
    assert set(params) == {"commands"}        # AWS-RunShellScript's parameter
    code, calls, err = run_on_stub_node(tmp_path, "\n".join(params["commands"]))
    assert code == 0, err
    # moto fills $.account and $.region from the event it received (account 123456789012, us-east-2).
    assert calls == [f"--namespace k8s.io images pull --user AWS:TOKEN-{REGION} "
                     f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ml/infer:2.0.1"]


def test_an_event_value_is_never_run_as_shell(bus, tmp_path):
    [params] = bus(push_detail(**{"image-tag": "1;touch pwned$(touch pwned2)"}))
    code, calls, err = run_on_stub_node(tmp_path, "\n".join(params["commands"]))
    assert code != 0 and "unexpected characters" in err
    assert calls == []
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


# ---- the role EventBridge assumes -------------------------------------------------------------------------


def test_only_eventbridge_for_this_rule_in_this_account_may_assume_the_prefetch_role(program):
    trust = json.loads(program.one(ROLE, "prefetch-on-push").inputs["assumeRolePolicy"])
    [stmt] = trust["Statement"]
    assert stmt["Effect"] == "Allow" and stmt["Action"] == "sts:AssumeRole"
    assert stmt["Principal"] == {"Service": "events.amazonaws.com"}
    assert stmt["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnEquals": {"aws:SourceArn": program.one(RULE).outputs["arn"]},
    }


def test_prefetch_role_may_run_only_the_shell_document_on_only_this_clusters_instances(program):
    policy = program.one(POLICY, "prefetch-on-push")
    assert policy.inputs["role"] == program.one(ROLE, "prefetch-on-push").outputs["id"]
    doc = json.loads(policy.inputs["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid) == {"RunShellScriptDocumentOnly", "ThisClustersInstancesOnly"}
    document = by_sid["RunShellScriptDocumentOnly"]
    assert document == {"Sid": "RunShellScriptDocumentOnly", "Effect": "Allow", "Action": ["ssm:SendCommand"],
                        "Resource": [f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"]}
    instances = by_sid["ThisClustersInstancesOnly"]
    assert instances["Action"] == ["ssm:SendCommand"]
    assert instances["Resource"] == [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"]
    assert instances["Condition"] == {"StringEquals": {"ssm:resourceTag/kiln.dev/cluster": "kiln-test"}}
    assert not any(star_on_star(s) for s in doc["Statement"])


# ---- on join --------------------------------------------------------------------------------------------


def test_association_targets_the_cluster_tag_runs_on_join_and_on_a_schedule(program):
    assoc = program.one(ASSOCIATION)
    assert assoc.inputs["name"] == DOCUMENT
    assert assoc.inputs["targets"] == [{"key": "tag:kiln.dev/cluster", "values": ["kiln-test"]}]
    assert assoc.inputs["scheduleExpression"] == "rate(1 hour)"
    # False: State Manager runs it as soon as a node matches the target, not only at the next interval.
    assert assoc.inputs["applyOnlyAtCronInterval"] is False
    assert assoc.inputs["associationName"] == "kiln-test-prefetch-images"
    assert assoc.inputs["parameters"]["commands"] == join_pull_script([ECR_IMAGE, PUBLIC_IMAGE])


def test_joining_node_pulls_missing_prefetch_images_ecr_with_its_own_credentials(program, tmp_path):
    script = program.one(ASSOCIATION).inputs["parameters"]["commands"]
    code, calls, err = run_on_stub_node(tmp_path, script)
    assert code == 0, err
    pulls = [c for c in calls if " pull " in c]
    assert pulls == [
        f"--namespace k8s.io images pull --user AWS:TOKEN-us-west-2 {ECR_IMAGE}",   # the registry's own region
        f"--namespace k8s.io images pull {PUBLIC_IMAGE}",                          # anonymous
    ]


def test_reapplying_on_a_warm_node_pulls_nothing(program, tmp_path):
    script = program.one(ASSOCIATION).inputs["parameters"]["commands"]
    code, calls, err = run_on_stub_node(tmp_path, script, present=(ECR_IMAGE, PUBLIC_IMAGE))
    assert code == 0, err
    assert [c for c in calls if " pull " in c] == []


def test_nothing_is_created_without_repositories_or_images():
    bare = run(with_changes(BASE, ecrRepositories=None, prefetchImages=None))
    assert bare.of_type(RULE) == [] and bare.of_type(TARGET) == [] and bare.of_type(ASSOCIATION) == []
    assert [r.name for r in bare.of_type(ROLE) if r.name.startswith("prefetch")] == []
    images_only = run(with_changes(BASE, prefetchImages=[PUBLIC_IMAGE]))
    assert images_only.of_type(RULE) == [] and len(images_only.of_type(ASSOCIATION)) == 1


def test_prefetch_resources_are_children_of_the_component(program):
    component = program.one("kiln:infra:ImagePrefetch")
    children = {(r.type, r.name) for r in program.children_of(component)}
    assert {(RULE, "prefetch-on-push"), (TARGET, "prefetch-on-push"), (ROLE, "prefetch-on-push"),
            (POLICY, "prefetch-on-push"), (ASSOCIATION, "prefetch-on-join")} <= children
