"""The model PersistentVolume/claim in the API emulator, for the fake stack's "provider" (tests/_fake_stack.py)."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from automation.gate import claim_name, volume_name
from tests._fake_stack import MODEL_PATH, NAMESPACE


class KubeObjects:
    """The fake stack's "provider" for the model objects: creates them in the emulator, 409 AlreadyExists
    as the API server answers it, unless the apply adopts (upsert)."""

    def __init__(self, api_client):
        self.core = client.CoreV1Api(api_client)
        self.names: set[str] = set()

    def exists(self, name):
        try:
            if "/" in name:
                self.core.read_namespaced_persistent_volume_claim(name.split("/")[1], NAMESPACE)
            else:
                self.core.read_persistent_volume(name)
            return True
        except ApiException:
            return False

    def create(self, name, adopt):
        version = name.rsplit("-", 1)[-1]
        try:
            if "/" in name:
                self.core.create_namespaced_persistent_volume_claim(NAMESPACE, client.V1PersistentVolumeClaim(
                    metadata=client.V1ObjectMeta(name=claim_name(version), namespace=NAMESPACE),
                    spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadOnlyMany"], storage_class_name="",
                                                            volume_name=volume_name(version),
                                                            resources=client.V1VolumeResourceRequirements(
                                                                requests={"storage": "100Gi"}))))
            else:
                self.core.create_persistent_volume(client.V1PersistentVolume(
                    metadata=client.V1ObjectMeta(name=volume_name(version)),
                    spec=client.V1PersistentVolumeSpec(
                        capacity={"storage": "100Gi"}, access_modes=["ReadOnlyMany"], storage_class_name="",
                        persistent_volume_reclaim_policy="Retain",
                        host_path=client.V1HostPathVolumeSource(path=MODEL_PATH, type="Directory"),
                        claim_ref=client.V1ObjectReference(namespace=NAMESPACE, name=claim_name(version)))))
        except ApiException as exc:
            if exc.status == 409 and adopt:
                return           # upsert: the provider applies the (identical) object onto the existing one
            raise RuntimeError(f"creation failed: {exc.status} {exc.reason}: {name} already exists") from None
        self.names.add(name)
