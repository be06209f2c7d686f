"""What a rotation keeps in the cluster, through the official client against the API emulator (kmock, HTTP).

The rotation's intent (a ConfigMap next to the rollout's Lease), the retained
model PersistentVolume/claim of a version used before (adopted, recreated or
refused), the deploy guard's in-flight checks, and one whole rollback through
the pipeline whose "provider" creates the model objects in the emulator (where
the API server answers 409 AlreadyExists, as for pulumi-kubernetes).
"""

from __future__ import annotations

import re

import pytest

from automation.gate import claim_name, volume_name
from automation.rotate.guard import deploy_problems
from automation.rotate.pipeline import EXIT_OK, Rotation, RotationSeams
from automation.rotate.state import ClusterIntentStore, FileIntentStore, RotationIntent, StateStoreError, slug
from automation.rotate.volumes import ModelVolumeError, ModelVolumeNotReady, ModelVolumes, decide
from tests._fake_stack import NAMESPACE, NEW_AMI, OLD_AMI, Baker, FakeStack, Fleet
from tests._kube_objects import KubeObjects

MODEL_PATH = "/opt/models"


@pytest.fixture
def kube(kube_server):
    kube_server.reset()
    return kube_server


def intent(stack="prod", **kw):
    base = dict(kind="rotate", stack=stack, model_version="v6", model_uri="s3://m/v6/", previous_ami=OLD_AMI,
                previous_model_version="v5")
    base.update(kw)
    return RotationIntent(**base)


# ------------------------------------------------------------------------------ the intent store


def test_the_intent_lives_in_a_configmap_and_survives_a_new_client(kube):
    store = ClusterIntentStore(kube.api_client())
    store.save(intent(base_amis={"standard": "ami-0000000000000base"}))
    fresh = ClusterIntentStore(kube.api_client())          # another runner
    loaded = fresh.load("prod")
    assert loaded == intent(base_amis={"standard": "ami-0000000000000base"})
    cm = kube.get(_configmaps(), "kube-system", "kiln-rotation-prod")
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kiln" and "intent" in cm["data"]
    fresh.record_last(loaded)
    fresh.clear("prod")
    assert store.load("prod") is None and store.last("prod").previous_ami == OLD_AMI
    store.clear("prod")                                    # clearing twice is fine


def _configmaps():
    import kmock

    return kmock.resource("v1/configmaps")


def test_a_stack_has_one_configmap_however_its_name_is_spelled(kube):
    """The cluster belongs to one stack: `--stack prod` and `--stack acme/kiln/prod` find the same intent (and the
    program names exactly that ConfigMap in the rollout role's RBAC, infra/rollout_access.py)."""
    from infra.labels import rotation_configmap

    store = ClusterIntentStore(kube.api_client())
    store.save(intent(stack="acme/kiln/prod"))
    assert store.load("prod").stack == "acme/kiln/prod" and store.load("acme/kiln/prod") == store.load("prod")
    assert store.name("acme/kiln/prod") == store.name("prod") == rotation_configmap("prod") == "kiln-rotation-prod"
    # ... and the same request, so a rerun spelled the other way continues it.
    assert intent(stack="acme/kiln/prod").same_request(intent(stack="prod"))
    assert not intent(stack="acme/kiln/prod").same_request(intent(stack="acme/kiln/staging"))
    names = {store.name(s) for s in ("Prod", "a" * 60, "acme/kiln/Prod_1", "x/y/" + "b" * 90)}
    assert len(names) == 4 and all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", n) for n in names)
    assert slug("prod") == "prod" and slug("Prod") != "prod"


def test_a_stale_write_is_an_error_not_a_silent_overwrite(kube, monkeypatch):
    store = ClusterIntentStore(kube.api_client())
    store.save(intent())
    stale = store._read("prod")
    store.save(intent(applied=True))                       # another runner wrote meanwhile
    monkeypatch.setattr(store, "_read", lambda stack: stale)
    with pytest.raises(StateStoreError, match="at the same time"):
        store.save(intent(phase="restoring"))


def test_an_unreadable_intent_is_an_error(kube):
    kube.put(_configmaps(), "kube-system", {"metadata": {"name": "kiln-rotation-prod"}, "data": {"intent": "{oops"}})
    with pytest.raises(StateStoreError, match="unreadable intent"):
        ClusterIntentStore(kube.api_client()).load("prod")


def test_the_file_store_takes_fully_qualified_names_too(tmp_path):
    store = FileIntentStore(tmp_path)
    store.save(intent(stack="acme/kiln/prod"))
    assert store.load("acme/kiln/prod").stack == "acme/kiln/prod" and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------------------ retained model objects


def _pv(version, *, path=MODEL_PATH, policy="Retain", claim=None, phase="Bound", deleting=False):
    meta = {"name": volume_name(version)}
    if deleting:
        meta.update(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["kubernetes.io/pv-protection"])
    return {"metadata": meta, "status": {"phase": phase},
            "spec": {"persistentVolumeReclaimPolicy": policy, "hostPath": {"path": path},
                     "claimRef": {"namespace": NAMESPACE, "name": claim or claim_name(version)}}}


def _pvc(version, volume=None, deleting=False):
    meta = {"name": claim_name(version), "namespace": NAMESPACE}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"volumeName": volume or volume_name(version)}}


def test_decide_adopts_recreates_or_refuses():
    assert decide("v5", NAMESPACE, MODEL_PATH, None, None).adopt is False
    assert decide("v5", NAMESPACE, MODEL_PATH, _pv("v5"), _pvc("v5")).adopt is True
    released = decide("v5", NAMESPACE, MODEL_PATH, _pv("v5", phase="Released"), None)
    assert released.delete_volume and not released.adopt
    lost = decide("v5", NAMESPACE, MODEL_PATH, None, _pvc("v5"))
    assert lost.delete_claim and not lost.adopt
    with pytest.raises(ModelVolumeError, match="used by"):
        decide("v5", NAMESPACE, MODEL_PATH, None, _pvc("v5"), ["ml-jobs/train-1"])
    with pytest.raises(ModelVolumeNotReady, match="being deleted"):
        decide("v5", NAMESPACE, MODEL_PATH, _pv("v5", deleting=True), _pvc("v5"))
    with pytest.raises(ModelVolumeNotReady):
        decide("v5", NAMESPACE, MODEL_PATH, _pv("v5"), _pvc("v5", deleting=True))
    for pv, match in ((_pv("v5", path="/"), "not the model path"), (_pv("v5", policy="Delete"), "not Retain"),
                      (_pv("v5", claim="scratch"), "reserved for"), (_pv("v5", phase="Released"), "not Bound")):
        with pytest.raises(ModelVolumeError, match=match):
            decide("v5", NAMESPACE, MODEL_PATH, pv, _pvc("v5"))
    with pytest.raises(ModelVolumeError, match="bound to"):
        decide("v5", NAMESPACE, MODEL_PATH, _pv("v5"), _pvc("v5", volume="other"))


PVS, PVCS, PODS = "v1/persistentvolumes", "v1/persistentvolumeclaims", "v1/pods"


def _put(kube, kind, namespace, body):
    import kmock

    kube.put(kmock.resource(kind), namespace, body)


def test_model_volumes_read_and_clean_through_the_official_client(kube):
    volumes = ModelVolumes(kube.api_client(), namespace=NAMESPACE, model_path=MODEL_PATH)
    assert volumes.prepare("v5").adopt is False
    _put(kube, PVS, None, _pv("v5"))
    _put(kube, PVCS, NAMESPACE, _pvc("v5"))
    assert volumes.prepare("v5").adopt is True and volumes.deleted == []
    # A volume left Released without its claim is deleted, so the apply creates it afresh; a dry run only says so.
    _put(kube, PVS, None, _pv("v4", phase="Released"))
    kube.clear_requests()
    dry = volumes.prepare("v4", dry_run=True)
    assert dry.delete_volume and volumes.deleted == [] and dry.notes[0].startswith("dry run, nothing deleted: ")
    assert not kube.requests(lambda r: r.method in ("POST", "PATCH", "PUT", "DELETE"))
    assert kube.get(__import__("kmock").resource(PVS), None, "kiln-model-v4") is not None
    decision = volumes.prepare("v4")
    assert decision.delete_volume and volumes.deleted == ["kiln-model-v4"]
    assert kube.get(__import__("kmock").resource(PVS), None, "kiln-model-v4") is None
    # A claim without its volume that a running pod still uses is left alone, and the run stops.
    _put(kube, PVCS, NAMESPACE, _pvc("v3"))
    _put(kube, PODS, NAMESPACE, {"metadata": {"name": "train-1"}, "status": {"phase": "Running"},
                                 "spec": {"containers": [{"name": "c", "image": "i"}],
                                          "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "model-v3"}}]}})
    with pytest.raises(ModelVolumeError, match="ml-jobs/train-1"):
        volumes.prepare("v3")
    assert kube.get(__import__("kmock").resource(PVCS), NAMESPACE, "model-v3") is not None


@pytest.mark.parametrize("adopt", [True, False])
def test_going_back_to_a_model_whose_objects_were_retained_works_only_by_adopting_them(kube, tmp_path, adopt):
    objects = KubeObjects(kube.api_client())
    for name in (volume_name("v5"), f"{NAMESPACE}/{claim_name('v5')}"):
        objects.create(name, adopt=False)      # what the deployed model v5 created
    stack = FakeStack(tmp_path, objects=objects)
    fleet = Fleet(stack)
    volumes = ModelVolumes(kube.api_client(), namespace=NAMESPACE, model_path=MODEL_PATH) if adopt else None
    rotation = Rotation(RotationSeams(stack=stack, bake=Baker(), replace=fleet.replace, volumes=volumes),
                        ClusterIntentStore(kube.api_client()))
    assert rotation.rotate("prod", "v6", "s3://models/v6/").exit_code == EXIT_OK
    assert objects.exists(volume_name("v5")) and objects.exists(volume_name("v6"))   # v5 retained
    report = rotation.rollback("prod")
    if adopt:
        assert report.exit_code == EXIT_OK, report.message
        assert stack.deployed["model"] == "v5" and stack.node_amis() == {OLD_AMI}
        assert ClusterIntentStore(kube.api_client()).load("prod") is None
    else:
        assert report.exit_code != EXIT_OK and "already exists" in report.message
        assert stack.deployed["model"] == "v6" and stack.node_amis() == {NEW_AMI}


# ------------------------------------------------------------------------------ the deploy guard


def test_deploy_problems():
    config = {"kiln:nodeAmi": NEW_AMI, "kiln:modelVersion": "v6"}
    assert deploy_problems(config, {}, None, None) == []                          # never deployed
    assert deploy_problems(config, {"nodeAmi": NEW_AMI, "modelVersion": "v6"}, None, None) == []
    assert deploy_problems({"kiln:nodeAmi": '{"standard": "%s"}' % NEW_AMI, "kiln:modelVersion": "v6"},
                           {"nodeAmi": NEW_AMI, "modelVersion": "v6"}, None, None) == []   # same AMIs, other shape
    revert = deploy_problems({"kiln:nodeAmi": OLD_AMI, "kiln:modelVersion": "v5"},
                             {"nodeAmi": NEW_AMI, "modelVersion": "v6"}, None, None)
    assert len(revert) == 2 and "kiln:nodeAmi" in revert[0] and "kiln:modelVersion" in revert[1]
    assert "merge the rotation's commit" in revert[0]
    flight = deploy_problems(config, {"nodeAmi": NEW_AMI, "modelVersion": "v6"}, intent(), "rollout abc, phase rolling")
    assert len(flight) == 2 and "in flight" in flight[0] and "rollout abc" in flight[1]
    (unknown,) = deploy_problems(config, {"clusterName": "kiln"}, None, None)     # outputs without nodeAmi: refuse
    assert "cannot be checked" in unknown


def test_guard_reads_both_intents_from_the_cluster(kube):
    from automation.rollout.kube import KubeCluster
    from automation.rollout.model import RolloutIntent
    from automation.rotate import guard, wiring

    api = kube.api_client()
    outputs = {"kubeconfig": {"apiVersion": "v1", "clusters": [{"name": "k", "cluster": {"server": kube.url}}],
                              "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}],
                              "current-context": "k", "users": [{"name": "u", "user": {"token": "t"}}]}}
    assert wiring.kube_api_client(outputs).configuration.host == kube.url
    assert guard.in_flight(outputs, "prod") == (None, None)
    ClusterIntentStore(api).save(intent())
    KubeCluster(api).write_intent(RolloutIntent(rollout_id="r1", started_at=0, deadline_at=1, strategy="default",
                                                surge=None, pause_autoscaler=False, autoscaler_replicas=None,
                                                ready_timeout_seconds=1800, phase="rolling", groups=()))
    rotation, rollout = guard.in_flight(outputs, "prod")
    assert rotation.model_version == "v6" and rollout == "rollout r1, phase rolling"
