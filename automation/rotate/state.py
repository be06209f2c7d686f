"""Where a rotation's intent lives between runs: with the cluster, not on the runner's disk.

The intent (:class:`RotationIntent`: what was asked, what was deployed before,
the base AMIs resolved for the bake, how far it got) is the only state a
rotation keeps; everything else is read from the world on every run. A CI
runner can die at any step, and the next run may start on a fresh machine with
a fresh checkout, so the intent is kept in the cluster being rotated, next to
the rollout's own Lease: one ConfigMap per stack, ``kube-system/kiln-rotation-<stack>`` (the stack's short name, however
``--stack`` is spelled; the rollout role's RBAC names exactly it),
with the in-flight intent under ``intent`` and the last finished rotation
(what ``rollback`` goes back to) under ``last``. Writes carry the
``resourceVersion`` they read (optimistic concurrency): a runner that lost a
race gets an error, not a silent overwrite.

:class:`FileIntentStore` keeps the same records in a directory. It is what the
stand-in stack (no cluster behind it) and the tests use; it does not survive
the runner and is never used with a real stack.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Protocol

from infra.labels import ROTATION_CONFIGMAP_PREFIX as CONFIGMAP_PREFIX
from infra.labels import ROTATION_NAMESPACE as NAMESPACE
from infra.labels import rotation_configmap
from infra.labels import stack_slug as slug

LABEL_PART_OF = "app.kubernetes.io/part-of"


@dataclass(frozen=True)
class RotationIntent:
    """What a rotation was asked to do, what was deployed before it, and how far it got."""

    kind: str                           # rotate | rollback
    stack: str
    model_version: str
    model_uri: Optional[str]
    previous_ami: Optional[str]         # kiln:nodeAmi deployed before (config text: an id or a JSON family map)
    previous_model_version: Optional[str]
    target_ami: Optional[str] = None    # rollback: given; rotate: known after the bake
    base_amis: dict = field(default_factory=dict)   # family -> base AMI, resolved once, so a rerun bakes the same
    started_at: float = 0.0
    dry_run: bool = False               # a dry run only ever changes config, and restores it
    applied: bool = False               # an `up` of the target was started: undoing it needs an `up` too
    phase: str = "forward"              # forward | restoring
    failure: str = ""                   # restoring: why (the outcome that started the restore)

    def same_request(self, other: "RotationIntent") -> bool:
        # The stack by its short name: `--stack prod` and `--stack org/project/prod` are one stack (one cluster).
        return (self.kind, slug(self.stack), self.model_version, self.model_uri) == \
               (other.kind, slug(other.stack), other.model_version, other.model_uri)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RotationIntent":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class IntentStore(Protocol):
    where: str   # for messages: where the intent is kept

    def load(self, stack: str) -> Optional[RotationIntent]: ...

    def save(self, intent: RotationIntent) -> None: ...

    def clear(self, stack: str) -> None: ...

    def last(self, stack: str) -> Optional[RotationIntent]: ...

    def record_last(self, intent: RotationIntent) -> None: ...


class StateStoreError(RuntimeError):
    """The intent could not be read or written (the message says where and why)."""


# --------------------------------------------------------------------------- in the cluster


class ClusterIntentStore:
    """The intent in a ConfigMap of the cluster being rotated (official kubernetes client)."""

    def __init__(self, api_client: Any, namespace: str = NAMESPACE):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.where = f"ConfigMap {namespace}/{CONFIGMAP_PREFIX}<stack> in the cluster"

    def name(self, stack: str) -> str:
        return rotation_configmap(stack)

    def _read(self, stack: str) -> Optional[Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_config_map(self.name(stack), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StateStoreError(f"could not read the rotation intent ({self.namespace}/{self.name(stack)}): "
                                  f"HTTP {exc.status} {exc.reason}") from None

    def _record(self, stack: str, key: str) -> Optional[RotationIntent]:
        cm = self._read(stack)
        text = (cm.data or {}).get(key) if cm is not None else None
        if not text:
            return None
        try:
            return RotationIntent.from_json(text)
        except (ValueError, TypeError) as exc:
            raise StateStoreError(f"{self.namespace}/{self.name(stack)} holds an unreadable {key}: {exc}") from None

    def _write(self, stack: str, key: str, value: Optional[str]) -> None:
        """Create the ConfigMap, or merge-patch one key guarded by the resourceVersion just read."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        cm = self._read(stack)
        where = f"{self.namespace}/{self.name(stack)}"
        try:
            if cm is None:
                if value is None:
                    return
                body = client.V1ConfigMap(metadata=client.V1ObjectMeta(
                    name=self.name(stack), namespace=self.namespace,
                    labels={LABEL_PART_OF: "kiln"}, annotations={"kiln.dev/stack": stack}), data={key: value})
                self.core.create_namespaced_config_map(self.namespace, body)
                return
            if value is None and key not in (cm.data or {}):
                return
            patch = {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {key: value}}
            self.core.patch_namespaced_config_map(self.name(stack), self.namespace, patch,
                                                  _content_type="application/merge-patch+json")
        except ApiException as exc:
            why = "another run wrote it at the same time; rerun" if exc.status == 409 else f"HTTP {exc.status} {exc.reason}"
            raise StateStoreError(f"could not write the rotation intent ({where}): {why}") from None

    def load(self, stack: str) -> Optional[RotationIntent]:
        return self._record(stack, "intent")

    def save(self, intent: RotationIntent) -> None:
        self._write(intent.stack, "intent", intent.to_json())

    def clear(self, stack: str) -> None:
        self._write(stack, "intent", None)

    def last(self, stack: str) -> Optional[RotationIntent]:
        return self._record(stack, "last")

    def record_last(self, intent: RotationIntent) -> None:
        self._write(intent.stack, "last", intent.to_json())


# --------------------------------------------------------------------------- on disk (stand-in, tests)


class FileIntentStore:
    """``<dir>/<stack>.json`` (in flight) and ``<dir>/<stack>.last.json``. Not for real stacks."""

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)
        self.where = f"{self.dir}/ (on this machine only: the stand-in has no cluster)"

    def _path(self, stack: str, suffix: str = "") -> Path:
        return self.dir / f"{slug(stack)}{suffix}.json"

    def _read(self, path: Path) -> Optional[RotationIntent]:
        if not path.exists():
            return None
        try:
            return RotationIntent.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:
            raise StateStoreError(f"{path} is not a rotation intent: {exc}") from None

    def _write(self, path: Path, intent: RotationIntent) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(intent.to_json(), encoding="utf-8")
        tmp.replace(path)  # atomic: an interruption never leaves half a file

    def load(self, stack: str) -> Optional[RotationIntent]:
        return self._read(self._path(stack))

    def save(self, intent: RotationIntent) -> None:
        self._write(self._path(intent.stack), intent)

    def clear(self, stack: str) -> None:
        self._path(stack).unlink(missing_ok=True)

    def last(self, stack: str) -> Optional[RotationIntent]:
        return self._read(self._path(stack, ".last"))

    def record_last(self, intent: RotationIntent) -> None:
        self._write(self._path(intent.stack, ".last"), intent)
