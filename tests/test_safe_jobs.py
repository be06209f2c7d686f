"""Autoscaler-safe Jobs: the admission policies as declared, and their CEL evaluated on pods, Jobs and CronJobs.

cel-python compiles and runs the expressions the program declares, against the
objects as the API server would hand them to the policy (``object``,
``oldObject``, ``request``). Whether the real API server type-checks them
against the schemas is the check docs/termination.md lists for a real cluster.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import celpy
import pytest

from _program_helpers import BASE, run, with_changes
from automation.termination.rules import DEFAULT_JOB_OWNER_KINDS
from infra import safe_jobs
from infra.safe_jobs import SAFE_TO_EVICT

VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
VAPB = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
MAP = "kubernetes:admissionregistration.k8s.io/v1:MutatingAdmissionPolicy"
MAPB = "kubernetes:admissionregistration.k8s.io/v1:MutatingAdmissionPolicyBinding"
_ENV = celpy.Environment()


def _eval(expression: str, activation: dict[str, Any]) -> Any:
    return _ENV.program(_ENV.compile(expression)).evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()})


@pytest.fixture(scope="module")
def policies() -> dict[str, dict]:
    r = run(BASE)
    return {p.inputs["metadata"]["name"]: p.inputs["spec"] for p in r.of_type(VAP)}


def admit(spec: dict, obj: dict, old: Optional[dict] = None) -> Optional[list[str]]:
    """The messages of the validations that fail ([] = admitted); None when the policy does not apply."""
    activation = {"object": obj, "oldObject": old, "request": {"operation": "UPDATE" if old else "CREATE"}}
    if not all(_eval(c["expression"], activation) for c in spec.get("matchConditions") or []):
        return None
    return [v["message"] for v in spec["validations"] if not _eval(v["expression"], activation)]


def job_pod(annotations: Optional[dict] = None, kind: str = "Job", controller: bool = True) -> dict:
    meta: dict[str, Any] = {"name": "train-0-abcde", "namespace": "ml-jobs",
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": kind, "name": "train-0",
                                                 "uid": "u", "controller": controller}]}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "c", "image": "i"}]}}


def job(annotations: Optional[dict] = None, with_metadata: bool = True) -> dict:
    template: dict[str, Any] = {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}
    if with_metadata:
        template["metadata"] = {"annotations": annotations} if annotations is not None else {"labels": {"a": "b"}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "ml-jobs"},
            "spec": {"template": template}}


def cron(annotations: Optional[dict] = None) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "ml-jobs"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": job(annotations)["spec"]}}}


SAFE = {SAFE_TO_EVICT: "false"}


# ---- what is declared, by cluster version --------------------------------------------------------------------


def test_on_1_33_three_validating_policies_bound_to_the_jobs_namespace_deny():
    r = run(BASE)
    comp = r.one("kiln:infra:AutoscalerSafeJobs", "safe-jobs")
    found = {p.inputs["metadata"]["name"]: p for p in r.of_type(VAP)}
    names = {f"kiln-safe-to-evict-jobs-{s}" for s in ("pods", "jobs", "cronjobs")}
    assert names <= set(found)
    for name in names:
        spec = found[name].inputs["spec"]
        assert found[name].parent == comp.urn and spec["failurePolicy"] == "Fail"
        match = spec["matchConstraints"]
        assert match["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ml-jobs"}}
        [rule] = match["resourceRules"]
        assert rule["operations"] == ["CREATE", "UPDATE"]
    rules = {n: found[n].inputs["spec"]["matchConstraints"]["resourceRules"][0] for n in names}
    assert (rules["kiln-safe-to-evict-jobs-pods"]["apiGroups"], rules["kiln-safe-to-evict-jobs-pods"]["resources"]) == ([""], ["pods"])
    assert rules["kiln-safe-to-evict-jobs-jobs"]["resources"] == ["jobs"]
    assert rules["kiln-safe-to-evict-jobs-cronjobs"]["resources"] == ["cronjobs"]
    bindings = {b.inputs["metadata"]["name"]: b.inputs["spec"] for b in r.of_type(VAPB)}
    for name in names:
        assert bindings[name] == {"policyName": name, "validationActions": ["Deny"]}
    assert r.of_type(MAP) == []


def test_the_jobs_namespace_follows_the_config():
    r = run(with_changes(BASE, jobsNamespace="training"))
    [pods] = [p for p in r.of_type(VAP) if p.inputs["metadata"]["name"] == "kiln-safe-to-evict-jobs-pods"]
    assert pods.inputs["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "training"}


def test_from_1_36_a_ga_mutating_policy_sets_the_annotation(monkeypatch):
    # EKS does not offer 1.36 yet, so the config refuses it (infra/validation.py's list, kept by hand with EKS's
    # calendar). The program as it will run once that list has it:
    from infra import validation

    assert "1.36" not in validation.SUPPORTED_KUBERNETES_VERSIONS
    monkeypatch.setattr(validation, "SUPPORTED_KUBERNETES_VERSIONS",
                        (*validation.SUPPORTED_KUBERNETES_VERSIONS, "1.35", "1.36"))
    r = run(with_changes(BASE, kubernetesVersion="1.36"))
    policy = r.one(MAP).inputs["spec"]
    assert policy["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
    [mutation] = policy["mutations"]
    assert mutation["patchType"] == "ApplyConfiguration"
    assert mutation["applyConfiguration"]["expression"] == (
        "Object{metadata: Object.metadata{annotations: {'cluster-autoscaler.kubernetes.io/safe-to-evict': 'false'}}}")
    assert policy["matchConditions"][0]["expression"] == safe_jobs.owned_by_a_job_kind()
    assert r.one(MAPB).inputs["spec"] == {"policyName": "kiln-safe-to-evict-jobs"}
    assert [p for p in r.of_type(VAP) if "safe-to-evict" in p.inputs["metadata"]["name"]] == []


def test_before_1_30_there_is_no_ga_policy_to_declare():
    r = run(with_changes(BASE, kubernetesVersion="1.29"))
    assert [p for p in r.of_type(VAP) + r.of_type(MAP) if "safe-to-evict" in p.inputs["metadata"]["name"]] == []
    assert r.of_type("kiln:infra:AutoscalerSafeJobs")


def test_job_kinds_are_the_rollouts():
    assert set(safe_jobs.JOB_OWNER_KINDS) == set(DEFAULT_JOB_OWNER_KINDS)


# ---- the CEL, evaluated -------------------------------------------------------------------------------------------


def test_job_pods_need_the_annotation_on_create(policies):
    spec = policies["kiln-safe-to-evict-jobs-pods"]
    assert admit(spec, job_pod(SAFE)) == []
    for bad in (None, {}, {SAFE_TO_EVICT: "true"}, {SAFE_TO_EVICT: "False"}, {"other": "false"}):
        assert admit(spec, job_pod(bad)) == [safe_jobs.MESSAGE], bad
    for kind in ("PyTorchJob", "Workflow", "MPIJob"):
        assert admit(spec, job_pod(None, kind)) == [safe_jobs.MESSAGE], kind


def test_other_pods_are_not_this_policys_business(policies):
    spec = policies["kiln-safe-to-evict-jobs-pods"]
    assert admit(spec, job_pod(None, "ReplicaSet")) is None
    assert admit(spec, job_pod(None, "Job", controller=False)) is None
    bare = job_pod(None)
    del bare["metadata"]["ownerReferences"]
    assert admit(spec, bare) is None


def test_updates_may_not_remove_it_but_old_pods_keep_working(policies):
    spec = policies["kiln-safe-to-evict-jobs-pods"]
    assert admit(spec, job_pod({}), old=job_pod(SAFE)) == [safe_jobs.MESSAGE]
    assert admit(spec, job_pod({SAFE_TO_EVICT: "true"}), old=job_pod(SAFE)) == [safe_jobs.MESSAGE]
    # A pod created before the policy: the Job controller removing its finalizer is admitted.
    old = job_pod(None)
    old["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    assert admit(spec, job_pod(None), old=old) == []
    assert admit(spec, job_pod(SAFE), old=job_pod(SAFE)) == []


@pytest.mark.parametrize("name, make", [("kiln-safe-to-evict-jobs-jobs", job), ("kiln-safe-to-evict-jobs-cronjobs", cron)])
def test_jobs_and_cronjobs_are_refused_at_apply_time_without_it(policies, name, make):
    spec = policies[name]
    assert admit(spec, make(SAFE)) == []
    assert admit(spec, make(None)) == [safe_jobs.MESSAGE]
    assert admit(spec, make({SAFE_TO_EVICT: "true"})) == [safe_jobs.MESSAGE]
    assert admit(spec, make({SAFE_TO_EVICT: "true"}), old=make(SAFE)) == [safe_jobs.MESSAGE]
    assert admit(spec, make(None), old=make(None)) == []      # e.g. Kueue unsuspending an old Job


def test_a_template_without_metadata_is_a_denial_not_an_error(policies):
    spec = policies["kiln-safe-to-evict-jobs-jobs"]
    assert admit(spec, job(with_metadata=False)) == [safe_jobs.MESSAGE]


def test_the_example_job_carries_the_annotation_and_is_admitted(policies):
    from test_program_workloads import example_job

    example = example_job()
    assert example["spec"]["template"]["metadata"]["annotations"][SAFE_TO_EVICT] == "false"
    assert admit(policies["kiln-safe-to-evict-jobs-jobs"], example) == []
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**copy.deepcopy(example["spec"]["template"]["metadata"]), "name": "train-v5-x",
                        "ownerReferences": [{"kind": "Job", "name": "train-v5", "controller": True}]},
           "spec": example["spec"]["template"]["spec"]}
    assert admit(policies["kiln-safe-to-evict-jobs-pods"], pod) == []
