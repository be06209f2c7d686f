"""The simulator's implementations of the rollout ports.

Each process of the rollout gets its own set (a *generation*): after a
simulated crash, the dead generation's every call raises
:class:`~automation.rollout.sim.world.SimulatedCrash`, and the next runner
gets fresh objects with no memory. Every request is counted as a read or a
write (``api_reads``/``api_writes``); the throttle fault answers a share of
attempts as throttled, retried here up to three times as botocore does before
the runner sees :class:`~automation.rollout.ports.Throttled`.

Reads per reconcile are counted the same way on every path: a reconcile starts
when the rollout lists its groups (a crashed process's successor starts a new
one, so does a rollback's fresh look), and counts the reads that answered —
a throttled attempt is counted as throttled, not as one more read.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, TypeVar

from ..model import AutoScalingGroup, Node, Pod, PodDisruptionBudget, RolloutIntent, ScalingActivity, Taint
from ..aws import PROTECTION_BATCH
from ..ports import ClusterEvent, EvictionResult, Throttled
from .world import SimulatedCrash, World

T = TypeVar("T")
ATTEMPTS = 3


class _Process:
    def __init__(self, world: World, generation: int):
        self.world = world
        self.generation = generation

    def call(self, write: bool, fn: Callable[[], T], *, mutation: bool = True) -> T:
        w = self.world
        if w.generation != self.generation:
            raise SimulatedCrash("this rollout process is dead")
        for _ in range(ATTEMPTS):
            if write:
                w.writes += 1
            else:
                w.reads += 1
            if w.throttle_rate and w.fault_rng.random() < w.throttle_rate:
                w.throttled += 1
                continue
            break
        else:
            raise Throttled("simulated throttling")
        if not write:
            w.reads_this_cycle += 1
        result = fn()
        if write and mutation:
            w.mutations += 1
            if w.crash_points and w.mutations >= w.crash_points[0]:
                w.crash_points.pop(0)
                w.generation += 1
                raise SimulatedCrash(f"crash after mutating call {w.mutations}")
        return result


class SimClock:
    def __init__(self, process: _Process):
        self._p = process

    def now(self) -> float:
        return self._p.world.now

    def sleep(self, seconds: float) -> None:
        w = self._p.world
        if w.generation != self._p.generation:
            raise SimulatedCrash("this rollout process is dead")
        w.advance_to(w.now + max(0.0, seconds))


class SimCloud:
    def __init__(self, process: _Process):
        self._p = process
        self._w = process.world

    def list_groups(self, cluster: str) -> list[AutoScalingGroup]:
        if self._w.generation == self._p.generation:
            self._w.begin_cycle()         # every reconcile starts by listing the groups
        return self._p.call(False, lambda: self._w.read_groups(cluster))

    def list_scaling_activities(self, asg: str, since: float) -> list[ScalingActivity]:
        return self._p.call(False, lambda: self._w.activities(asg, since))

    def set_capacity(self, asg: str, *, desired: Optional[int] = None, max_size: Optional[int] = None,
                     raise_only: bool = False) -> None:
        self._p.call(True, lambda: self._w.set_capacity(asg, desired, max_size, raise_only))

    def terminate_instance(self, instance_id: str, *, decrement_desired: bool) -> None:
        self._p.call(True, lambda: self._w.terminate(instance_id, decrement_desired))

    def set_launch_template_version(self, asg: str, launch_template_id: str, version: str, *,
                                    expected: Optional[str] = None) -> bool:
        return self._p.call(True, lambda: self._w.set_version(asg, version, expected))

    def set_instance_protection(self, asg: str, instance_ids: Sequence[str], protected: bool) -> None:
        # As the real adapter: one SetInstanceProtection request (one write) per PROTECTION_BATCH ids.
        ids = list(instance_ids)
        for start in range(0, len(ids), PROTECTION_BATCH):
            batch = ids[start:start + PROTECTION_BATCH]
            self._p.call(True, lambda batch=batch: self._w.protect(asg, batch, protected))

    def put_tags(self, asg: str, tags: Mapping[str, str]) -> None:
        def put():
            g = self._w.groups[asg]
            g.tags.update(tags)
            g.frozen = None
        self._p.call(True, put)

    def delete_tags(self, asg: str, keys: Sequence[str]) -> None:
        def delete():
            g = self._w.groups[asg]
            for k in keys:
                g.tags.pop(k, None)
            g.frozen = None
        self._p.call(True, delete)


class SimCluster:
    def __init__(self, process: _Process):
        self._p = process
        self._w = process.world

    def list_nodes(self, label_selector: str = "") -> list[Node]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if "=" in part)
        return self._p.call(False, lambda: [n for n in self._w.nodes.values()
                                            if all(n.labels.get(k) == v for k, v in wanted.items())])

    def list_pods(self) -> list[Pod]:
        # One read, as the real adapter's one list: finished pods are filtered as the API server would.
        return self._p.call(False, lambda: [p for p in self._w.pods.values()
                                            if p.phase not in ("Succeeded", "Failed")])

    def list_pdbs(self) -> list[PodDisruptionBudget]:
        return self._p.call(False, self._w.pdb_views)

    def cordon(self, node: str, taint: Taint, annotations: Mapping[str, str]) -> None:
        self._p.call(True, lambda: self._w.cordon(node, taint, annotations))

    def uncordon(self, node: str, taint_key: str, annotation_keys: Sequence[str]) -> None:
        self._p.call(True, lambda: self._w.uncordon(node, taint_key, annotation_keys))

    def annotate_node(self, node: str, annotations: Mapping[str, Optional[str]]) -> None:
        self._p.call(True, lambda: self._w.annotate(node, annotations))

    def evict(self, namespace: str, name: str) -> EvictionResult:
        return EvictionResult(self._p.call(True, lambda: self._w.evict(f"{namespace}/{name}")))

    def get_autoscaler_replicas(self) -> Optional[int]:
        return self._p.call(False, lambda: self._w.autoscaler_replicas)

    def scale_autoscaler(self, replicas: int) -> None:
        def scale():
            if self._w.autoscaler_replicas is None:
                raise LookupError("no cluster-autoscaler Deployment")
            self._w.autoscaler_replicas = replicas
        self._p.call(True, scale)

    def acquire_lock(self, holder: str, ttl_seconds: float) -> bool:
        def acquire() -> bool:
            w = self._w
            if w.lease is not None and w.lease[0] != holder and w.lease[1] > w.now:
                return False
            w.lease = (holder, w.now + ttl_seconds)
            return True
        return self._p.call(True, acquire)

    def release_lock(self, holder: str) -> None:
        def release():
            if self._w.lease is not None and self._w.lease[0] == holder:
                self._w.lease = None
        self._p.call(True, release)

    def read_intent(self) -> Optional[RolloutIntent]:
        return self._p.call(False, lambda: self._w.intent)

    def write_intent(self, intent: RolloutIntent) -> None:
        self._p.call(True, lambda: setattr(self._w, "intent", intent))

    def clear_intent(self) -> None:
        self._p.call(True, lambda: setattr(self._w, "intent", None))

    def wait_for_change(self, timeout_seconds: float) -> None:
        w = self._w
        self._p.call(False, lambda: None)     # the watch requests
        w.advance_to(w.now + max(0.0, timeout_seconds), stop_on_change=True)

    def record_event(self, event: ClusterEvent) -> None:
        # A write like any other (counted, throttled), but not a step the crash fault counts.
        self._p.call(True, lambda: self._w.record_event(event), mutation=False)


def connect(world: World) -> tuple[SimCloud, SimCluster, SimClock]:
    """Ports for a new rollout process (a new generation)."""
    process = _Process(world, world.generation)
    return SimCloud(process), SimCluster(process), SimClock(process)
