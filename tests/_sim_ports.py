"""Wrappers around the simulator's cloud port that the runner's tests share: one that cannot terminate, and one
that runs a hook at each reconcile's first read (to act on the world mid-rollout)."""

from __future__ import annotations


class TerminateFails:
    """The simulator's cloud, whose TerminateInstanceInAutoScalingGroup always fails ("boom")."""

    def __init__(self, cloud):
        self._cloud = cloud

    def __getattr__(self, name):
        return getattr(self._cloud, name)

    def terminate_instance(self, *a, **kw):
        raise RuntimeError("boom")


class HookedCloud:
    """The simulator's cloud, with a hook run at each reconcile's first read."""

    def __init__(self, cloud, hook):
        self._cloud, self._hook, self.cycles = cloud, hook, 0

    def __getattr__(self, name):
        return getattr(self._cloud, name)

    def list_groups(self, cluster):
        self.cycles += 1
        self._hook(self.cycles)
        return self._cloud.list_groups(cluster)
