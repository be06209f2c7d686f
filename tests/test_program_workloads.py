"""Model volume (PV/PVC), warm-up DaemonSet and its permissions, and the stack outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pulumi.runtime import rpc

from _program_helpers import BASE, EXISTING_GPU_SPOT, example_config, run, with_changes

PV = "kubernetes:core/v1:PersistentVolume"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
DS = "kubernetes:apps/v1:DaemonSet"
VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"


@pytest.mark.parametrize("cfg", [BASE, EXISTING_GPU_SPOT], ids=["v5", "v6-custom-path"])
def test_hostpath_volume_only_on_nodes_with_the_model_version(cfg):
    r = run(cfg)
    version, path = cfg["kiln:modelVersion"], cfg.get("kiln:modelPath", "/opt/models")
    pv = r.one(PV, "model-volume-pv").inputs
    assert pv["spec"]["hostPath"] == {"path": path, "type": "Directory"}
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pv["spec"]["storageClassName"] == ""
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    [term] = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "kiln.dev/model-version", "operator": "In", "values": [version]}]
    assert pv["spec"]["claimRef"] == {"namespace": "ml-jobs", "name": f"model-{version}"}


@pytest.mark.parametrize("cfg", [BASE, EXISTING_GPU_SPOT], ids=["v5", "v6"])
def test_claim_model_version_is_bound_to_that_volume(cfg):
    r = run(cfg)
    version = cfg["kiln:modelVersion"]
    pv, pvc = r.one(PV, "model-volume-pv"), r.one(PVC, "model-volume-pvc").inputs
    assert pvc["metadata"] == {"name": f"model-{version}", "namespace": "ml-jobs",
                               "labels": {"app.kubernetes.io/part-of": "kiln", "kiln.dev/model-version": version}}
    assert pvc["spec"]["volumeName"] == pv.inputs["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == ""          # never dynamically provisioned
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == pv.inputs["spec"]["capacity"]["storage"]


def test_a_new_model_version_never_deletes_the_claim_running_jobs_use():
    r = run(BASE)
    assert r.one(PV, "model-volume-pv").retain_on_delete and r.one(PVC, "model-volume-pvc").retain_on_delete
    assert not r.one("kubernetes:core/v1:Namespace", "model-volume-ns").retain_on_delete


def test_jobs_namespace_is_created_and_configurable():
    r = run(with_changes(BASE, jobsNamespace="training"))
    assert r.one("kubernetes:core/v1:Namespace", "model-volume-ns").inputs["metadata"]["name"] == "training"
    assert r.one(PVC, "model-volume-pvc").inputs["metadata"]["namespace"] == "training"
    assert r.one(PV, "model-volume-pv").inputs["spec"]["claimRef"]["namespace"] == "training"


def warmup_ds(r):
    [ds] = [d for d in r.of_type(DS) if d.inputs["metadata"]["name"] == "kiln-model-warmup"]
    return ds


def pod_spec(r):
    return warmup_ds(r).inputs["spec"]["template"]["spec"]


@pytest.mark.parametrize("cfg", [BASE, EXISTING_GPU_SPOT], ids=["cpu", "gpu"])
def test_warmup_daemonset_tolerates_every_model_node_taint(cfg):
    spec = pod_spec(run(cfg))
    tolerated = {(t["key"], t.get("effect")) for t in spec["tolerations"]}
    assert ("kiln.dev/model-warming", "NoSchedule") in tolerated
    for g in cfg["kiln:nodeGroups"]:
        if g.get("gpu"):
            assert ("nvidia.com/gpu", "NoSchedule") in tolerated
        for taint in g.get("taints", []):
            assert (taint.split("=")[0], taint.rsplit(":", 1)[1]) in tolerated
    [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "kiln.dev/model-version", "operator": "Exists"}]


def test_warmup_reads_the_model_read_only_and_knows_its_node_from_the_downward_api():
    cfg = EXISTING_GPU_SPOT
    spec = pod_spec(run(cfg))
    [init] = spec["initContainers"]
    env = {e["name"]: e for e in init["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["TAINT_KEY"]["value"] == "kiln.dev/model-warming"
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["model"]["readOnly"] is True and mounts["model"]["mountPath"] == env["MODEL_PATH"]["value"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model"]["hostPath"]["path"] == cfg["kiln:modelPath"]
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["serviceAccountName"] == "kiln-model-warmup"


def test_warmup_ships_the_tested_agent():
    r = run(BASE)
    cm = r.one("kubernetes:core/v1:ConfigMap", "model-warmup-agent")
    source = (Path(__file__).resolve().parent.parent / "infra" / "warmup_agent.py").read_text()
    assert cm.inputs["data"] == {"warmup_agent.py": source}
    annotations = warmup_ds(r).inputs["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kiln.dev/agent-sha256"] == hashlib.sha256(source.encode()).hexdigest()
    [init] = pod_spec(r)["initContainers"]
    assert init["command"][-1] == "/agent/warmup_agent.py"


def test_warmup_rbac_is_get_and_patch_on_nodes_only():
    r = run(BASE)
    role = r.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "model-warmup-role").inputs
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    binding = r.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "model-warmup-binding").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kiln-model-warmup", "namespace": "kube-system"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_admission_policy_confines_the_warmup_to_its_own_node_and_the_warming_taint():
    r = run(BASE)
    spec = r.one(VAP, "model-warmup-policy").inputs["spec"]
    [condition] = spec["matchConditions"]
    assert "system:serviceaccount:kube-system:kiln-model-warmup" in condition["expression"]
    expressions = " ".join(v["expression"] for v in spec["validations"])
    assert "authentication.kubernetes.io/node-name" in expressions and "object.metadata.name" in expressions
    assert "kiln.dev/model-warming" in expressions
    binding = r.one("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding", "model-warmup-policy").inputs["spec"]
    assert binding == {"policyName": "kiln-model-warmup", "validationActions": ["Deny"]}


def test_no_admission_policy_before_kubernetes_1_30():
    r = run(with_changes(BASE, kubernetesVersion="1.29"))
    assert [p for p in r.of_type(VAP) if p.name == "model-warmup-policy"] == []
    assert r.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "model-warmup-role")   # RBAC still narrows it


# ---- stack outputs (contract) --------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [BASE, EXISTING_GPU_SPOT, None], ids=["base", "gpu-spot", "example"])
def test_stack_outputs_contract(cfg):
    cfg = cfg or example_config()
    r = run(cfg)
    out = r.outputs
    assert set(out) >= {"clusterName", "kubeconfig", "nodeGroups", "modelVersion", "nodeAmi"}
    assert out["clusterName"] == cfg["kiln:clusterName"]
    assert out["modelVersion"] == cfg["kiln:modelVersion"]
    assert out["nodeAmi"] == cfg["kiln:nodeAmi"]
    assert out["kubeconfig"][rpc._special_sig_key] == rpc._special_secret_sig
    asgs = {a.outputs["name"]: a for a in r.of_type("aws:autoscaling/group:Group")}
    lts = {lt.id for lt in r.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    assert set(out["nodeGroups"]) == {g["name"] for g in cfg["kiln:nodeGroups"]}
    for group, entries in out["nodeGroups"].items():
        assert sorted(e["zone"] for e in entries) == sorted(cfg["kiln:availabilityZones"])
        for e in entries:
            assert set(e) == {"zone", "asgName", "launchTemplateId"}
            asg = asgs[e["asgName"]]
            assert asg.inputs["vpcZoneIdentifiers"] and e["launchTemplateId"] in lts
            assert {t["key"]: t["value"] for t in asg.inputs["tags"]}["kiln.dev/node-group"] == group


# ---- the README's example Job mounts what the program creates ------------------------------------------


def readme_job() -> dict:
    import re

    import yaml

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [job] = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "kind: Job" in block]
    return job


def test_readme_job_mounts_the_example_stacks_claim_read_only():
    job = readme_job()
    r = run(example_config())
    pvc = r.one(PVC, "model-volume-pvc").inputs["metadata"]
    assert job["metadata"]["namespace"] == pvc["namespace"]
    pod = job["spec"]["template"]["spec"]
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": pvc["name"], "readOnly": True}
    [container] = pod["containers"]
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True


def test_readme_documents_every_config_key():
    from infra.config import KEYS

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for key in KEYS:
        assert f"| `{key}` |" in text, key



def test_warmup_daemonset_runs_only_images_the_bake_puts_into_the_ami():
    """Warming a fresh node must not wait on a registry: every image it runs is baked."""
    from infra.images import NODE_SYSTEM_IMAGES

    spec = run(BASE).one(DS).inputs["spec"]["template"]["spec"]
    images = {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert images and images <= set(NODE_SYSTEM_IMAGES)
