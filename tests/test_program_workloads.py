"""Model volume (PV/PVC), warm-up DaemonSet and its permissions, and the stack outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pulumi.runtime import rpc

from _program_helpers import BASE, EXISTING_GPU_SPOT, example_config, run, user_data, with_changes

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


def test_jobs_namespace_enforces_the_restricted_pod_security_standard():
    """Warn only would admit privileged and host-network Jobs; a host-network pod reaches IMDS and the node role."""
    labels = run(BASE).one("kubernetes:core/v1:Namespace", "model-volume-ns").inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert "pod-security.kubernetes.io/enforce-version" not in labels   # latest: the cluster's own rules


def test_a_size_change_never_resizes_a_bound_claim():
    """A statically bound claim cannot be resized (the API server refuses it): the size is fixed when the
    version's claim is created, and a new modelVolumeSizeGiB reaches only the next version's claim."""
    r = run(with_changes(BASE, modelVolumeSizeGiB=250))
    pv, pvc = r.one(PV, "model-volume-pv"), r.one(PVC, "model-volume-pvc")
    assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "250Gi"      # a new claim takes it
    assert "spec.resources" in pvc.ignore_changes                                 # a bound one never changes
    assert "spec.capacity" in pv.ignore_changes
    assert pv.inputs["spec"]["capacity"]["storage"] == "250Gi"
    # Nothing that matters to a bound claim is ignored.
    assert not {"spec.volumeName", "spec.accessModes", "metadata"} & set(pvc.ignore_changes)


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
    assert env["VERSION_LABEL"]["value"] == "kiln.dev/model-version"       # checked against the model on disk
    assert env["TERMINATION_LOG"]["value"] == "/dev/termination-log"       # why it refused, in `describe pod`
    assert init.get("terminationMessagePath", "/dev/termination-log") == env["TERMINATION_LOG"]["value"]
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


# ---- the example Job (docs/cluster.md) mounts what the program creates ------------------------------------------


def example_job() -> dict:
    """The example Job of docs/cluster.md."""
    import re

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "cluster.md").read_text()
    [job] = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "kind: Job" in block]
    return job


def test_example_job_mounts_the_example_stacks_claim_read_only():
    job = example_job()
    r = run(example_config())
    pvc = r.one(PVC, "model-volume-pvc").inputs["metadata"]
    assert job["metadata"]["namespace"] == pvc["namespace"]
    pod = job["spec"]["template"]["spec"]
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": pvc["name"], "readOnly": True}
    [container] = pod["containers"]
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True


def test_configuration_page_documents_every_config_key():
    from infra.config import KEYS

    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for key in KEYS:
        assert f"| `{key}` |" in text, key



def test_warmup_daemonset_runs_only_images_the_bake_puts_into_the_ami():
    """Warming a fresh node must not wait on a registry: every image it runs is baked."""
    from infra.images import NODE_SYSTEM_IMAGES

    spec = run(BASE).one(DS).inputs["spec"]["template"]["spec"]
    images = {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert images and images <= set(NODE_SYSTEM_IMAGES)


# ---- the example Job (docs/cluster.md) schedules onto the example GPU group (issue 12, point 7) ---------------------


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes' toleration matching (k8s.io/api core/v1 Toleration.ToleratesTaint)."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t["key"] != taint["key"]:
            continue
        operator = t.get("operator", "Equal")
        if operator == "Exists" or (operator == "Equal" and t.get("value", "") == taint.get("value", "")):
            return True
    return False


def selects(term: dict, labels: dict[str, str]) -> bool:
    """One NodeSelectorTerm's matchExpressions against a node's labels."""
    for e in term.get("matchExpressions", []):
        have = labels.get(e["key"])
        ok = {"In": lambda: have in e["values"], "NotIn": lambda: have not in e["values"],
              "Exists": lambda: have is not None, "DoesNotExist": lambda: have is None}[e["operator"]]()
        if not ok:
            return False
    return True


def schedulable(pod: dict, pv: dict, labels: dict[str, str], taints: list[dict]) -> list[str]:
    """Why the scheduler would refuse ``pod`` on a node with these labels and taints ([] = it fits)."""
    why = [f"taint {t['key']}={t.get('value', '')}:{t['effect']} not tolerated" for t in taints
           if t["effect"] in ("NoSchedule", "NoExecute") and not tolerates(pod.get("tolerations", []), t)]
    why += [f"nodeSelector {k}={v}" for k, v in pod.get("nodeSelector", {}).items() if labels.get(k) != v]
    required = (pod.get("affinity", {}).get("nodeAffinity", {})
                .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms"))
    if required and not any(selects(t, labels) for t in required):
        why.append("node affinity")
    if not any(selects(t, labels) for t in pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]):
        why.append("the model volume's node affinity")
    return why


def example_gpu_node(r, group: str) -> tuple[dict[str, str], list[dict]]:
    """The labels and taints a node of ``group`` registers with, from its launch template's nodeadm config."""
    [lt] = [lt for lt in r.of_type("aws:ec2/launchTemplate:LaunchTemplate") if lt.name == f"nodes-{group}"]
    node_config, _, _ = user_data(lt)
    [flag] = node_config["spec"]["kubelet"]["flags"]
    labels = dict(kv.split("=", 1) for kv in flag.removeprefix("--node-labels=").split(","))
    return labels, node_config["spec"]["kubelet"]["config"]["registerWithTaints"]


def restricted_violations(pod: dict) -> list[str]:
    """The restricted Pod Security Standard's checks (kubernetes.io/docs/concepts/security/pod-security-standards)
    that a Job spec can fail; the API server's admission is the real check (docs/cluster.md: `kubectl apply --dry-run=server`)."""
    out = []
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
    for v in pod.get("volumes", []):
        out += [f"volume {v['name']}: {k}" for k in v if k != "name" and k not in allowed_volumes]
    out += [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    pod_sc = pod.get("securityContext", {})
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: capabilities must drop ALL")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) or sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: must run as non-root")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile must be RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{c['name']}: hostPort")
    return out


def test_example_job_schedules_on_the_example_gpu_group_once_it_is_warm():
    job, r = example_job(), run(example_config())
    pod = job["spec"]["template"]["spec"]
    pv = r.one(PV, "model-volume-pv").inputs
    gpu_group = next(g for g in example_config()["kiln:nodeGroups"] if g.get("gpu"))["name"]
    labels, taints = example_gpu_node(r, gpu_group)
    warm = [t for t in taints if t["key"] != "kiln.dev/model-warming"]
    assert len(warm) == 2                                   # the group's own taint and nvidia.com/gpu
    assert schedulable(pod, pv, labels, warm) == []
    # Not before the warm-up has read the model, and not on a node that carries another model version.
    assert schedulable(pod, pv, labels, taints) == ["taint kiln.dev/model-warming=true:NoSchedule not tolerated"]
    assert schedulable(pod, pv, {**labels, "kiln.dev/model-version": "v4"}, warm) == ["the model volume's node affinity"]
    # It asks for the GPU the group's nodes advertise (the device plugin runs on that group).
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_group in r.one("kubernetes:helm.sh/v3:Release", "gpu-device-plugin").inputs["values"]["affinity"][
        "nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]


def test_the_scheduling_check_catches_a_missing_toleration():
    """The check above could fail: the Job as the docs had it (only nvidia.com/gpu) does not fit."""
    job, r = example_job(), run(example_config())
    pod = job["spec"]["template"]["spec"]
    labels, taints = example_gpu_node(r, "gpu-train")
    warm = [t for t in taints if t["key"] != "kiln.dev/model-warming"]
    only_gpu = {**pod, "tolerations": [t for t in pod["tolerations"] if t["key"] == "nvidia.com/gpu"]}
    assert schedulable(only_gpu, r.one(PV, "model-volume-pv").inputs, labels, warm) == [
        "taint workload=training:NoSchedule not tolerated"]


def test_example_job_is_admitted_by_the_restricted_namespace():
    pod = example_job()["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    # ...and the check is real: a host-network or privileged variant is refused.
    assert restricted_violations({**pod, "hostNetwork": True}) == ["spec.hostNetwork"]
    [c] = pod["containers"]
    privileged = {**pod, "containers": [{**c, "securityContext": {"privileged": True}}]}
    assert "train: privileged" in restricted_violations(privileged)
    assert any("hostPath" in v for v in restricted_violations(
        {**pod, "volumes": [{"name": "model", "hostPath": {"path": "/opt/models"}}]}))
