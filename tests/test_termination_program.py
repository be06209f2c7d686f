"""The termination hook, queue, rules, IRSA role, RBAC and handler Deployment, as the program declares them."""

from __future__ import annotations

import json

import pytest

from _program_helpers import BASE, EXISTING_GPU_SPOT, example_config, run, user_data, with_changes
from automation.termination import decisions
from infra import lifecycle, termination
from infra.config import ConfigError, parse

IMAGE = "123456789012.dkr.ecr.us-east-2.amazonaws.com/kiln-termination-handler@sha256:" + "0123456789abcdef" * 4
ROLE, POLICY = "aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy"
HOOK, ASG = "aws:autoscaling/lifecycleHook:LifecycleHook", "aws:autoscaling/group:Group"
QUEUE, RULE, TARGET = "aws:sqs/queue:Queue", "aws:cloudwatch/eventRule:EventRule", "aws:cloudwatch/eventTarget:EventTarget"
DEPLOY = "kubernetes:apps/v1:Deployment"
ACCOUNT, REGION = "123456789012", "us-east-2"


@pytest.fixture(scope="module")
def program():
    return run(with_changes(EXISTING_GPU_SPOT, terminationHandlerImage=IMAGE, terminationJobGraceSeconds=5400,
                            terminationHeartbeatSeconds=600))


def component(r):
    return r.one("kiln:infra:TerminationHandler", "termination")


# ---- without the image: nothing of it --------------------------------------------------------------------------


def test_without_a_handler_image_there_is_no_hook_and_no_handler():
    r = run(BASE)
    assert r.of_type("kiln:infra:TerminationHandler") == [] and r.of_type(HOOK) == [] and r.of_type(QUEUE) == []
    assert "terminationQueueUrl" not in r.outputs
    # The autoscaler-safe Jobs policy does not depend on the handler.
    assert r.of_type("kiln:infra:AutoscalerSafeJobs")


# ---- the hooks -------------------------------------------------------------------------------------------------


def test_every_asg_gets_the_termination_hook_after_the_handler_runs(program):
    asgs = program.of_type(ASG)
    hooks = program.of_type(HOOK)
    assert len(asgs) == 6 and len(hooks) == len(asgs)
    assert sorted(h.inputs["autoscalingGroupName"] for h in hooks) == sorted(a.outputs["name"] for a in asgs)
    deployment = program.one(DEPLOY, "termination-deploy")
    for hook in hooks:
        assert hook.inputs["name"] == "kiln-termination"
        assert hook.inputs["lifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
        assert hook.inputs["defaultResult"] == "CONTINUE"
        assert hook.inputs["heartbeatTimeout"] == 600
        assert hook.parent == component(program).urn
        # No hook before the handler (it would only delay every termination by the heartbeat timeout).
        assert deployment.urn in hook.dependencies
        assert {r.urn for r in program.of_type(RULE)} <= set(hook.dependencies)


def test_the_handler_keeps_the_hooks_name_and_allowance():
    assert decisions.HOOK_NAME == lifecycle.HOOK_NAME == "kiln-termination"
    assert decisions.AFTER_GRACE_SECONDS + decisions.COMPLETE_MARGIN_SECONDS == lifecycle.STOP_ALLOWANCE_SECONDS
    assert decisions.Settings(heartbeat_timeout_seconds=600).global_timeout_seconds == lifecycle.global_timeout(600)


# ---- the queue and the rules --------------------------------------------------------------------------------------


def test_queue_and_dead_letter_queue_are_encrypted_with_a_redrive_policy(program):
    queue, dlq = program.one(QUEUE, "termination"), program.one(QUEUE, "termination-dlq")
    for q in (queue, dlq):
        assert q.inputs["sqsManagedSseEnabled"] is True
    assert dlq.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    assert queue.inputs["messageRetentionSeconds"] == 3600 and queue.inputs["visibilityTimeoutSeconds"] == 60
    assert json.loads(queue.inputs["redrivePolicy"]) == {"deadLetterTargetArn": dlq.outputs["arn"], "maxReceiveCount": 5}
    allow = program.one("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy")
    assert allow.inputs["queueUrl"] == dlq.id
    assert json.loads(allow.inputs["redriveAllowPolicy"]) == {"redrivePermission": "byQueue",
                                                             "sourceQueueArns": [queue.outputs["arn"]]}


def test_five_rules_deliver_every_door_to_the_queue(program):
    queue = program.one(QUEUE, "termination")
    rules = {r.name.removeprefix("termination-"): json.loads(r.inputs["eventPattern"]) for r in program.of_type(RULE)}
    names = sorted(a.outputs["name"] for a in program.of_type(ASG))
    assert rules == termination.event_patterns(names)
    assert rules["lifecycle"]["detail"] == {"AutoScalingGroupName": names, "LifecycleHookName": ["kiln-termination"],
                                            "LifecycleTransition": ["autoscaling:EC2_INSTANCE_TERMINATING"]}
    assert rules["state"]["detail"] == {"state": ["stopping", "shutting-down"]}
    assert rules["scheduled"] == {"source": ["aws.health"], "detail-type": ["AWS Health Event"],
                                  "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}}
    targets = program.of_type(TARGET)
    assert len(targets) == 5 and all(t.inputs["arn"] == queue.outputs["arn"] for t in targets)
    assert sorted(t.inputs["rule"] for t in targets) == sorted(r.outputs["name"] for r in program.of_type(RULE))


def test_only_those_rules_may_send_and_only_over_tls(program):
    queue = program.one(QUEUE, "termination")
    policy = program.one("aws:sqs/queuePolicy:QueuePolicy", "termination")
    assert policy.inputs["queueUrl"] == queue.id
    allow, deny = json.loads(policy.inputs["policy"])["Statement"]
    assert allow == {"Sid": "OnlyTheseRules", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                     "Action": "sqs:SendMessage", "Resource": queue.outputs["arn"],
                     "Condition": {"ArnEquals": {"aws:SourceArn": sorted(r.outputs["arn"] for r in program.of_type(RULE))}}}
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# ---- the handler's identity ---------------------------------------------------------------------------------------


def handler_statements(r) -> dict[str, dict]:
    doc = json.loads(r.one(POLICY, "termination-irsa").inputs["policy"])
    return {s["Sid"]: s for s in doc["Statement"]}


def test_irsa_role_is_for_the_handlers_service_account_only(program):
    role = program.one(ROLE, "termination-irsa")
    [stmt] = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    host = "oidc.eks.us-east-2.amazonaws.com/id/EXAMPLE"
    assert stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert stmt["Condition"] == {"StringEquals": {f"{host}:sub": "system:serviceaccount:kube-system:kiln-termination-handler",
                                                  f"{host}:aud": "sts.amazonaws.com"}}
    sa = program.one("kubernetes:core/v1:ServiceAccount", "termination-sa")
    assert sa.inputs["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role.outputs["arn"]}
    assert program.one(POLICY, "termination-irsa").inputs["role"] == role.id


def test_irsa_policy_is_scoped_to_this_queue_and_this_clusters_groups(program):
    s = handler_statements(program)
    queue = program.one(QUEUE, "termination")
    assert s == {
        "ReceiveAndDeleteNotices": {"Sid": "ReceiveAndDeleteNotices", "Effect": "Allow",
                                    "Action": ["sqs:DeleteMessage", "sqs:ReceiveMessage"], "Resource": [queue.outputs["arn"]]},
        "HoldOnlyThisClustersInstances": {
            "Sid": "HoldOnlyThisClustersInstances", "Effect": "Allow",
            "Action": ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
            "Resource": [f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/*"],
            "Condition": {"StringEquals": {"autoscaling:ResourceTag/kiln.dev/cluster": "kiln-gpu"}}},
        "DescribeReadOnly": {"Sid": "DescribeReadOnly", "Effect": "Allow",
                             "Action": ["autoscaling:DescribeAutoScalingGroups"], "Resource": "*"},
    }


def test_rbac_is_exactly_the_handlers_calls(program):
    [cr] = [r for r in program.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole") if r.name == "termination-rbac"]
    assert sorted((r["apiGroups"][0], r["resources"][0], tuple(r["verbs"])) for r in cr.inputs["rules"]) == sorted(
        termination.CLUSTER_RULES)
    [role] = [r for r in program.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role") if r.name == "termination-lease"]
    assert role.inputs["metadata"]["namespace"] == "kube-system"
    assert role.inputs["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "patch"],
         "resourceNames": ["kiln-termination-handler"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}]
    for type_, name, kind in (("ClusterRoleBinding", "termination-rbac", "ClusterRole"),
                              ("RoleBinding", "termination-lease", "Role")):
        [b] = [r for r in program.of_type(f"kubernetes:rbac.authorization.k8s.io/v1:{type_}") if r.name == name]
        assert b.inputs["subjects"] == [{"kind": "ServiceAccount", "name": "kiln-termination-handler",
                                         "namespace": "kube-system"}]
        assert b.inputs["roleRef"]["kind"] == kind and b.inputs["roleRef"]["name"] == "kiln-termination-handler"


# ---- the Deployment --------------------------------------------------------------------------------------------------


def test_the_handler_runs_twice_critical_restricted_and_configured(program):
    dep = program.one(DEPLOY, "termination-deploy")
    spec = dep.inputs["spec"]
    assert dep.inputs["metadata"]["namespace"] == "kube-system" and spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "kiln-termination-handler"
    assert pod["priorityClassName"] == "system-cluster-critical" and pod["dnsPolicy"] == "Default"
    assert {"key": "kiln.dev/model-warming", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    [c] = pod["containers"]
    assert c["image"] == IMAGE
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KILN_CLUSTER_NAME"] == "kiln-gpu"
    assert env["KILN_QUEUE_URL"] == program.one(QUEUE, "termination").id
    assert env["KILN_JOB_GRACE_SECONDS"] == "5400" and env["KILN_HEARTBEAT_TIMEOUT_SECONDS"] == "600"
    assert env["KILN_HOOK_NAME"] == "kiln-termination" and env["AWS_REGION"] == REGION
    assert [e for e in c["env"] if e["name"] == "POD_NAME"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["exec"]["command"] == termination.liveness_command()
    assert env["KILN_LIVENESS_FILE"] == termination.LIVENESS_FILE
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    # Its AWS permissions and RBAC exist before it starts.
    for name in ("termination-irsa", ):
        assert program.one(POLICY, name).urn in dep.dependencies
    pdb = program.one("kubernetes:policy/v1:PodDisruptionBudget", "termination-pdb")
    assert pdb.inputs["spec"]["minAvailable"] == 1
    assert pdb.inputs["spec"]["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]


def test_the_liveness_command_judges_the_files_age(tmp_path):
    import os
    import subprocess
    import sys
    import time

    alive = tmp_path / "alive"
    alive.touch()
    command = [sys.executable if c == "python" else c for c in termination.liveness_command()]
    command = [c.replace(termination.LIVENESS_FILE, str(alive)) for c in command]
    assert subprocess.run(command).returncode == 0
    os.utime(alive, (time.time() - 500, time.time() - 500))
    assert subprocess.run(command).returncode == 1


def test_every_resource_is_a_child_of_the_component_and_the_outputs_name_the_queues(program):
    comp = component(program)
    children = program.children_of(comp)
    assert {c.type for c in children} >= {QUEUE, RULE, TARGET, HOOK, ROLE, POLICY, DEPLOY}
    assert program.outputs["terminationQueueUrl"] == program.one(QUEUE, "termination").id
    assert program.outputs["terminationDeadLetterQueueUrl"] == program.one(QUEUE, "termination-dlq").id
    provider = program.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert program.one(DEPLOY, "termination-deploy").provider.startswith(provider.urn + "::")


# ---- config and kubelet --------------------------------------------------------------------------------------------


GOOD = {k.removeprefix("kiln:"): v for k, v in BASE.items() if k.startswith("kiln:")}


@pytest.mark.parametrize("changes, key, rule", [
    ({"terminationHeartbeatSeconds": 29}, "terminationHeartbeatSeconds", "(29) must be >= 30"),
    ({"terminationHeartbeatSeconds": 7201}, "terminationHeartbeatSeconds", "(7201) must be <= 7200"),
    ({"terminationHeartbeatSeconds": "often"}, "terminationHeartbeatSeconds", "must be an integer"),
    ({"terminationJobGraceSeconds": -1}, "terminationJobGraceSeconds", "(-1) must be >= 0"),
    ({"terminationJobGraceSeconds": 29_641}, "terminationJobGraceSeconds", "(29641) must be <= 29640"),
    ({"terminationHeartbeatSeconds": 30}, "terminationJobGraceSeconds", "(7200) must be <= 2640"),
    ({"terminationJobGraceSeconds": 172_441, "terminationHeartbeatSeconds": 7200},
     "terminationJobGraceSeconds", "(172441) must be <= 172440"),
    ({"terminationHandlerImage": "ghcr.io/acme/kiln-termination-handler:1.0"}, "terminationHandlerImage", "by digest"),
    ({"terminationHandlerImage": "ghcr.io/acme/h@sha256:abc"}, "terminationHandlerImage", "invalid digest"),
    # The same image rule as kiln:prefetchImages (infra/imageref.py), plus the digest.
    ({"terminationHandlerImage": "ghcr.io/acme/h:latest"}, "terminationHandlerImage", "by digest"),
    ({"terminationHandlerImage": "ghcr.io/acme/h"}, "terminationHandlerImage", "by digest"),
    ({"terminationHandlerImage": "acme/h@sha256:" + "a" * 64}, "terminationHandlerImage", "registry host"),
    ({"terminationHandlerImage": "ghcr.io/Acme/h@sha256:" + "a" * 64}, "terminationHandlerImage", "repository path"),
    ({"terminationHandlerImage": "ghcr.io/acme/h@sha256:" + "A" * 64}, "terminationHandlerImage", "invalid digest"),
])
def test_each_termination_rule_names_its_key(changes, key, rule):
    with pytest.raises(ConfigError) as err:
        parse({**GOOD, **changes})
    # One error per mistake: only the key the case gets wrong (a bad heartbeat does not also fail the grace).
    assert [p for p in err.value.problems if p.startswith("kiln:termination")] == [
        p for p in err.value.problems if p.startswith(f"kiln:{key} ")]
    [line] = [p for p in err.value.problems if p.startswith(f"kiln:{key} ")]
    assert rule in line


def test_termination_defaults_and_limits():
    cfg = parse(GOOD)
    assert (cfg.termination.job_grace_seconds, cfg.termination.heartbeat_seconds, cfg.termination.handler_image) == (
        7200, 300, None)
    assert cfg.termination.global_timeout_seconds == 30_000
    top = parse({**GOOD, "terminationJobGraceSeconds": 172_440, "terminationHeartbeatSeconds": 7200})
    assert top.termination.global_timeout_seconds == 48 * 3600
    assert parse({**GOOD, "terminationJobGraceSeconds": 0}).termination.job_grace_seconds == 0
    tagged = "ghcr.io/acme/h:1.0@sha256:" + "a" * 64
    assert parse({**GOOD, "terminationHandlerImage": tagged}).termination.handler_image == tagged


def test_the_handler_image_is_pulled_by_every_node_and_baked_once():
    from automation.bake.recipe import BakeRequest

    cfg = parse({**GOOD, "prefetchImages": ["public.ecr.aws/x/y:1", IMAGE], "terminationHandlerImage": IMAGE})
    assert cfg.prefetch_images == ("public.ecr.aws/x/y:1", IMAGE)
    example = example_config()
    request = BakeRequest(model_version="v5", model_uri="s3://example-ml-models/v5/", subnet_id="subnet-0123456789abcdef0",
                          instance_profile="p",
                          prefetch_images=parse({k: v for k, v in example.items() if k.startswith("kiln:")}).prefetch_images)
    assert example["kiln:terminationHandlerImage"] in request.images_to_pull
    # ...and a joining node pulls it too (the prefetch State Manager association's script).
    r = run(with_changes(BASE, terminationHandlerImage=IMAGE))
    association = r.one("aws:ssm/association:Association")
    assert IMAGE in json.dumps(association.inputs)


def test_nodes_shut_down_gracefully_for_the_spot_warning():
    for lt in run(BASE).of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        node_config, _, _ = user_data(lt)
        kubelet = node_config["spec"]["kubelet"]["config"]
        assert kubelet["shutdownGracePeriod"] == "120s"
        assert kubelet["shutdownGracePeriodCriticalPods"] == "30s"

