"""The small pod predicates the drain and the capacity plan share (automation/rollout/pods.py), each at its edge:
which pods have finished, which pods take or want a Job slot (a Job's, or any pod asking for a GPU), and how an
unreadable deadline-extension annotation is shown. (Written from the survivors of a mutation run on pods.py.)"""

from __future__ import annotations

import pytest

from automation.rollout.model import RESOURCE_GPU, Pod
from automation.rollout.pods import is_terminal, unreadable_extension, uses_slot, wants_job_slot
from infra.labels import ANNOTATION_DEADLINE_EXTENSION


def pod(phase="Running", owner="ReplicaSet", node="n1", gpus=None, annotations=None, **kw) -> Pod:
    return Pod("ml", "p", node, phase, owner_kind=owner, requests={RESOURCE_GPU: gpus} if gpus is not None else {},
               annotations=annotations or {}, **kw)


@pytest.mark.parametrize("phase, terminal", [("Succeeded", True), ("Failed", True), ("Running", False),
                                             ("Pending", False), ("Unknown", False)])
def test_only_succeeded_and_failed_pods_have_finished(phase, terminal):
    assert is_terminal(pod(phase)) is terminal
    # A finished pod frees its slot, even a Job's.
    assert uses_slot(pod(phase, owner="Job")) is (not terminal)


def test_a_pod_asking_for_a_gpu_takes_a_slot_like_a_job_and_one_asking_for_none_does_not():
    assert uses_slot(pod(gpus=1)) and uses_slot(pod(gpus=0.5))
    assert not uses_slot(pod(gpus=0)) and not uses_slot(pod())
    assert not uses_slot(Pod("ml", "p", "n1", "Running", owner_kind="ReplicaSet", requests={"cpu": 4}))


def test_a_pending_unscheduled_pod_wants_a_slot_if_it_is_a_job_or_asks_for_a_gpu():
    assert wants_job_slot(pod("Pending", node=None, gpus=1)) and wants_job_slot(pod("Pending", owner="Job", node=None))
    assert not wants_job_slot(pod("Pending", node=None, gpus=0))
    assert not wants_job_slot(Pod("ml", "p", None, "Pending", owner_kind="ReplicaSet", requests={"cpu": 4}))
    # Scheduled already, running, or going away: no new capacity for it.
    assert not wants_job_slot(pod("Pending", node="n1", gpus=1))
    assert not wants_job_slot(pod("Running", node=None, gpus=1))
    assert not wants_job_slot(pod("Pending", node=None, gpus=1, deleting=True))


def test_an_unreadable_extension_is_quoted_whole_up_to_forty_characters_then_cut():
    def why(value):
        return unreadable_extension(pod(owner="Job", annotations={ANNOTATION_DEADLINE_EXTENSION: value}))
    fits = "x" * 38                                     # repr: 40 characters, shown whole
    assert why(fits) == f"{ANNOTATION_DEADLINE_EXTENSION}='{fits}' is not a number of seconds"
    cut = "y" * 39                                      # repr: 41 characters, cut to 38 and an ellipsis
    assert why(cut) == f"{ANNOTATION_DEADLINE_EXTENSION}='{'y' * 37}…' is not a number of seconds"
    assert why("inf") == f"{ANNOTATION_DEADLINE_EXTENSION}='inf' is not a finite number of seconds"
    assert why("3600") is None and why(" ") is None and why("-5") is None
