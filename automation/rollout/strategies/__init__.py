"""Rollout strategies: knobs the one engine reads, never separate engines.

``default`` proves a replacement per group first (a canary), then brings
replacement capacity up as it is needed; ``double-and-drain``
reproduces the widely copied script step by step (pause cluster-autoscaler,
double every group, protect every instance from scale-in, poll every 60 s,
drain and decrement, force at the deadline) as the baseline kiln is measured
against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Strategy:
    name: str
    double: bool = False               # launch a full second fleet up front
    add_for_pending: bool = True       # add nodes for pending Job pods no new node can take
    canary: bool = True                # one replacement per group from the start: proves the AMI early
    prove_first: bool = True           # nothing old leaves a group until a replacement there is proven
    # Scale-in protection on every instance of a rolled group while the rollout runs: a desired
    # capacity written from a snapshot that went stale (cluster-autoscaler raised it meanwhile)
    # must not make the group scale in — Auto Scaling would pick the oldest launch template
    # first, an old node running a Job. Exact removals (TerminateInstanceInAutoScalingGroup) are
    # not affected. Restored at the end.
    protect_instances: bool = True
    pause_autoscaler: bool = False     # scale cluster-autoscaler to 0 for the rollout
    react_to_changes: bool = True      # wake on a pod or node watch event rather than a fixed poll
    poll_seconds: Optional[float] = None  # fixed poll interval (None: the run's --poll-seconds)
    check_readiness: bool = True       # health checks: bad new nodes roll back, failing launches hold the drain


DEFAULT = Strategy(name="default")
DOUBLE_AND_DRAIN = Strategy(
    name="double-and-drain",
    double=True,
    add_for_pending=False,
    canary=False,
    prove_first=False,
    pause_autoscaler=True,
    react_to_changes=False,
    poll_seconds=60.0,
    check_readiness=False,
)

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (DEFAULT, DOUBLE_AND_DRAIN)}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"--strategy: unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def parse_surge(surge: Optional[str]) -> Optional[tuple[int, bool]]:
    """``"3"`` -> (3, False); ``"25%"`` -> (25, True); None -> None (on demand)."""
    if surge is None:
        return None
    text = str(surge).strip()
    percent = text.endswith("%")
    number = text[:-1] if percent else text
    try:
        value = int(number)
    except ValueError:
        raise ValueError(f"--surge: expected a count like 3 or a percentage like 25%, got {surge!r}") from None
    if value < 1 or (percent and value > 100):
        raise ValueError(f"--surge: must be at least 1 (and at most 100%), got {surge!r}")
    return value, percent


def surge_nodes(surge: Optional[str], old_nodes: int) -> Optional[int]:
    """Surge for a group with ``old_nodes`` old nodes at the start; None = on demand."""
    parsed = parse_surge(surge)
    if parsed is None:
        return None
    value, percent = parsed
    return max(1, math.ceil(old_nodes * value / 100)) if percent else value
