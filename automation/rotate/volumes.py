"""Going back to a model version used before: its retained PersistentVolume and claim.

The program names the model's volume ``kiln-model-<v>`` and its claim
``<jobs namespace>/model-<v>``, and marks both ``retainOnDelete``: when a
rotation moves to a new version, Pulumi lets go of the old objects instead of
deleting them under the Jobs still using them. So when a rotation goes *back*
to a version (a restore after a failed replacement, ``rollback``), that
version's objects usually still exist, and pulumi-kubernetes (since 4.29)
refuses to create an object that exists (``AlreadyExists``).

Before such an apply, :meth:`ModelVolumes.prepare` looks at the target
version's objects and decides, fail closed:

- none exist: nothing to do, Pulumi creates them;
- both exist, bound to each other, the volume a ``Retain`` hostPath at the
  model path: **adopt** them — the apply runs with
  ``PULUMI_K8S_UPSERT_EXISTING_OBJECTS=true``, so the provider applies the
  program's (identical) objects onto them; the gate allows exactly this, and
  only the model objects are created in that apply;
- a volume left ``Released`` (its claim was deleted by hand) or a claim whose
  volume is gone and that no pod uses: **delete** the stale object, so Pulumi
  creates it afresh (a hostPath PV holds no data; the model is on the nodes);
- anything else (being deleted, another hostPath, not ``Retain``, bound to
  something else, a claim in use without its volume): stop and say which
  object and why.

:func:`decide` is pure; :class:`ModelVolumes` reads and deletes through the
official kubernetes client.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from automation.gate import claim_name, volume_name


class ModelVolumeError(RuntimeError):
    """The target version's objects exist in a state a rotation must not touch."""


class ModelVolumeNotReady(ModelVolumeError):
    """An object is being deleted: rerun once it is gone."""


@dataclass(frozen=True)
class Decision:
    adopt: bool = False
    delete_volume: bool = False
    delete_claim: bool = False
    notes: tuple[str, ...] = ()


def _meta(obj: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def decide(version: str, namespace: str, model_path: str, pv: Optional[Mapping[str, Any]],
           pvc: Optional[Mapping[str, Any]], claim_users: Sequence[str] = ()) -> Decision:
    """What to do with model ``version``'s existing objects before an apply creates them. Pure."""
    pv_name, pvc_name = volume_name(version), claim_name(version)
    for obj, what in ((pv, f"PersistentVolume {pv_name}"), (pvc, f"PersistentVolumeClaim {namespace}/{pvc_name}")):
        if obj is not None and _meta(obj).get("deletionTimestamp"):
            finalizers = ", ".join(_meta(obj).get("finalizers") or []) or "none"
            raise ModelVolumeNotReady(f"{what} is being deleted (finalizers: {finalizers}); rerun once it is gone")
    if pv is None and pvc is None:
        return Decision()
    if pv is not None:
        spec = pv.get("spec") or {}
        if spec.get("persistentVolumeReclaimPolicy") != "Retain":
            raise ModelVolumeError(f"PersistentVolume {pv_name} exists with reclaim policy "
                                   f"{spec.get('persistentVolumeReclaimPolicy')!r}, not Retain: not kiln's; "
                                   "remove or rename it")
        path = (spec.get("hostPath") or {}).get("path")
        if path != model_path:
            raise ModelVolumeError(f"PersistentVolume {pv_name} exists as hostPath {path!r}, not the model path "
                                   f"{model_path!r}: not kiln's; remove or rename it")
        ref = spec.get("claimRef") or {}
        if (ref.get("namespace"), ref.get("name")) != (namespace, pvc_name):
            raise ModelVolumeError(f"PersistentVolume {pv_name} is reserved for {ref.get('namespace')}/{ref.get('name')}, "
                                   f"not {namespace}/{pvc_name}")
        phase = (pv.get("status") or {}).get("phase")
        if pvc is None:
            if phase in ("Released", "Available", "Failed", None):
                return Decision(delete_volume=True, notes=(
                    f"PersistentVolume {pv_name} is left {phase or 'without a phase'} without its claim: deleted, "
                    "so the apply creates it afresh (a hostPath volume holds no data)",))
            raise ModelVolumeError(f"PersistentVolume {pv_name} is {phase} but its claim {namespace}/{pvc_name} "
                                   "does not exist")
    if pvc is not None:
        spec = pvc.get("spec") or {}
        if pv is None:
            if claim_users:
                raise ModelVolumeError(f"PersistentVolumeClaim {namespace}/{pvc_name} has lost its volume {pv_name} "
                                       f"and is used by {', '.join(claim_users)}: restore the volume by hand")
            return Decision(delete_claim=True, notes=(
                f"PersistentVolumeClaim {namespace}/{pvc_name} lost its volume and no pod uses it: deleted, "
                "so the apply creates it afresh",))
        if spec.get("volumeName") != pv_name:
            raise ModelVolumeError(f"PersistentVolumeClaim {namespace}/{pvc_name} is bound to "
                                   f"{spec.get('volumeName')!r}, not {pv_name}")
        phase = ((pv or {}).get("status") or {}).get("phase")
        if phase not in ("Bound", None):
            raise ModelVolumeError(f"PersistentVolume {pv_name} is {phase}, not Bound to {namespace}/{pvc_name} "
                                   "(was the claim deleted and created again?): delete both and rerun")
    return Decision(adopt=True, notes=(f"adopting the retained PersistentVolume {pv_name} and claim "
                                       f"{namespace}/{pvc_name} of model {version}",))


@dataclass
class ModelVolumes:
    """Reads (and, for stale leftovers, deletes) the model objects through the official client."""

    api_client: Any
    namespace: str
    model_path: str
    deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(self.api_client)

    def _get(self, read, *args) -> Optional[dict]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api_client.sanitize_for_serialization(read(*args))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _claim_users(self, claim: str) -> list[str]:
        pods = self.core.list_namespaced_pod(self.namespace)
        users = []
        for pod in pods.items:
            for volume in pod.spec.volumes or []:
                if volume.persistent_volume_claim is not None and volume.persistent_volume_claim.claim_name == claim \
                        and (pod.status is None or pod.status.phase not in ("Succeeded", "Failed")):
                    users.append(f"{self.namespace}/{pod.metadata.name}")
        return users

    def prepare(self, version: str, *, dry_run: bool = False) -> Decision:
        """Decide, and delete the stale objects the decision names, unless this is a dry run (which writes
        nothing to the cluster: the notes say what a real run would delete)."""
        pv = self._get(self.core.read_persistent_volume, volume_name(version))
        pvc = self._get(self.core.read_namespaced_persistent_volume_claim, claim_name(version), self.namespace)
        users = self._claim_users(claim_name(version)) if pvc is not None and pv is None else []
        decision = decide(version, self.namespace, self.model_path, pv, pvc, users)
        if dry_run:
            return replace(decision, notes=tuple(f"dry run, nothing deleted: {n}" if "deleted" in n else n
                                                 for n in decision.notes))
        if decision.delete_volume:
            self.core.delete_persistent_volume(volume_name(version))
            self.deleted.append(volume_name(version))
        if decision.delete_claim:
            self.core.delete_namespaced_persistent_volume_claim(claim_name(version), self.namespace)
            self.deleted.append(f"{self.namespace}/{claim_name(version)}")
        return decision
