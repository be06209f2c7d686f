"""Kubernetes Events that say why: what the rollout does to, and waits for on, each node and pod.

The engine says what it sees (:class:`~automation.rollout.engine.Note`: waiting
for Job ml/train until 12:00Z, blocked by PodDisruptionBudget default/api, a bad
new node); the runner adds what it did (cordoned, evicted, terminated). The
:class:`EventRecorder` turns both into :class:`~automation.rollout.ports.ClusterEvent`
writes without flooding the API at a thousand nodes, the way client-go's
events.k8s.io recorder does:

* one Event per (object, reason, subject) and rollout: the same situation seen
  again on the next cycle is a repeat, not a new Event;
* repeats are aggregated into the Event's ``series`` (count, last seen), written
  at most once per :data:`SERIES_SECONDS` per Event;
* at most :data:`MAX_WRITES_PER_CYCLE` Event writes per reconcile; what did not
  fit is written on a later cycle if it still holds (level-triggered: a state
  that is over by then was not worth telling).

Event names are derived from the rollout id and the key, so a rerun after a
crash finds the Events it made before (a create answered 409 updates instead).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Optional

from .ports import ClusterEvent

SERIES_SECONDS = 1800.0        # client-go's events.k8s.io heartbeat for a series
MAX_WRITES_PER_CYCLE = 100
NODE_EVENT_NAMESPACE = "default"   # Events about cluster-scoped objects (nodes) live here, as kubelet's do
NAME_LIMIT = 253


@dataclass
class _Entry:
    event: ClusterEvent           # as first seen (count 1)
    oneshot: bool                 # something the rollout did (told once) rather than a state it sees
    seen: int = 0                 # the cycle it was last observed in
    count: int = 1
    last_seen: float = 0.0
    written_count: int = 0        # the count the API has
    written_at: Optional[float] = None

    def current(self) -> ClusterEvent:
        if self.count == self.event.count:
            return self.event
        return replace(self.event, count=self.count, last_seen=self.last_seen)


class EventRecorder:
    def __init__(self, rollout_id: str, *, max_writes_per_cycle: int = MAX_WRITES_PER_CYCLE,
                 series_seconds: float = SERIES_SECONDS):
        self.rollout_id = rollout_id
        self.max_writes = max_writes_per_cycle
        self.series_seconds = series_seconds
        self._entries: dict[tuple, _Entry] = {}
        self._by_name: dict[tuple[str, str], tuple] = {}
        self._cycle = 0
        self.deferred = 0              # writes left for a later cycle (budget spent)
        self.dropped = 0               # states that ended before they could be written

    def begin_cycle(self) -> None:
        """A new reconcile: states not observed again in it are over."""
        self._cycle += 1

    def observe(self, kind: str, namespace: str, name: str, reason: str, note: str, *, now: float,
                subject: str = "", uid: Optional[str] = None, warning: bool = False,
                action: str = "Drain", oneshot: bool = False) -> None:
        """Something the rollout sees (a state) or did (``oneshot``) about one object, this cycle."""
        key = (kind, namespace, name, reason, subject)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.seen != self._cycle or oneshot:
                entry.count += 1
                entry.last_seen = now
            entry.seen = self._cycle
            return
        digest = hashlib.sha1("/".join((self.rollout_id, *key)).encode()).hexdigest()[:16]
        event = ClusterEvent(
            name=f"{name[: NAME_LIMIT - 18]}.{digest}", namespace=namespace or NODE_EVENT_NAMESPACE, kind=kind,
            object_name=name, object_namespace=namespace, object_uid=uid if uid else (name if kind == "Node" else None),
            reason=reason, note=note[:1024], type="Warning" if warning else "Normal", action=action,
            count=1, first_seen=now, last_seen=now)
        self._entries[key] = _Entry(event=event, oneshot=oneshot, seen=self._cycle, last_seen=now)
        self._by_name[(event.namespace, event.name)] = key

    def due(self, now: float) -> list[ClusterEvent]:
        """The writes to make this cycle: new Events first, then series heartbeats; at most
        ``max_writes`` (the rest stays due). Call :meth:`written` for each one made."""
        for key, entry in list(self._entries.items()):
            over = entry.seen != self._cycle
            if entry.oneshot and entry.written_at is not None and entry.count <= entry.written_count:
                self._forget(key, entry)        # told; a repeat would make a new entry (same name: a series)
            elif over and not entry.oneshot:
                if entry.written_at is None:
                    self.dropped += 1
                self._forget(key, entry)
        fresh, repeats = [], []
        for entry in self._entries.values():
            if entry.written_at is None:
                fresh.append(entry)
            elif entry.count > entry.written_count and now - entry.written_at >= self.series_seconds:
                repeats.append(entry)
        chosen = (sorted(fresh, key=lambda e: e.event.first_seen) + sorted(repeats, key=lambda e: e.written_at))
        self.deferred = max(0, len(chosen) - self.max_writes)
        return [e.current() for e in chosen[: self.max_writes]]

    def written(self, event: ClusterEvent, now: float) -> None:
        entry = self._entries.get(self._by_name.get((event.namespace, event.name)))
        if entry is not None:
            entry.written_at = now
            entry.written_count = event.count

    def _forget(self, key: tuple, entry: _Entry) -> None:
        del self._entries[key]
        self._by_name.pop((entry.event.namespace, entry.event.name), None)

    def __len__(self) -> int:
        return len(self._entries)


