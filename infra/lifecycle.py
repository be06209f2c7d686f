"""The termination lifecycle hook kiln puts on every ASG: its name and AWS's limits on it.

Standard library only: ``infra/config.py`` validates ``kiln:terminationJobGraceSeconds``
and ``kiln:terminationHeartbeatSeconds`` with these, ``infra/termination.py`` declares
the hook with them, and the handler (``automation/termination``) imports the hook name,
its result and the allowance below from here (its image copies this module).

AWS (Auto Scaling lifecycle hooks): the heartbeat timeout is 30 to 7200 seconds;
a heartbeat restarts it; however many heartbeats are recorded, an instance
leaves ``Terminating:Wait`` after the *global timeout*, 48 hours or 100 times
the heartbeat timeout, whichever is smaller, with the hook's default result.
"""

from __future__ import annotations

HOOK_NAME = "kiln-termination"
TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"
DEFAULT_RESULT = "CONTINUE"

MIN_HEARTBEAT_SECONDS = 30
MAX_HEARTBEAT_SECONDS = 7200
MAX_GLOBAL_TIMEOUT_SECONDS = 48 * 3600
GLOBAL_TIMEOUT_HEARTBEATS = 100

DEFAULT_HEARTBEAT_SECONDS = 300
DEFAULT_JOB_GRACE_SECONDS = 7200

# What a hold needs beyond the Job grace before AWS's global timeout: Jobs evicted when their
# grace ends get up to 300 s to stop, and the handler completes the action 60 s before AWS
# would (automation/termination/decisions.py AFTER_GRACE_SECONDS + COMPLETE_MARGIN_SECONDS).
STOP_ALLOWANCE_SECONDS = 360


def global_timeout(heartbeat_seconds: int) -> int:
    """How long an instance can stay in ``Terminating:Wait`` at most, heartbeats or not."""
    return min(MAX_GLOBAL_TIMEOUT_SECONDS, GLOBAL_TIMEOUT_HEARTBEATS * heartbeat_seconds)


def max_job_grace(heartbeat_seconds: int) -> int:
    """The longest Job grace a hook with this heartbeat timeout can honour."""
    return global_timeout(heartbeat_seconds) - STOP_ALLOWANCE_SECONDS
