"""The Event recorder: one Event per situation, repeats as a series, a bounded number of writes per cycle."""

from __future__ import annotations

from automation.rollout.events import EventRecorder


def cycle(recorder: EventRecorder, now: float, notes, oneshots=()):
    recorder.begin_cycle()
    for name in notes:
        recorder.observe("Node", "", name, "RolloutBlocked", f"{name} held", now=now, subject="pdb", warning=True)
    for name in oneshots:
        recorder.observe("Pod", "ml", name, "RolloutEvicted", "evicted", now=now, uid=f"uid-{name}", oneshot=True)
    due = recorder.due(now)
    for event in due:
        recorder.written(event, now)
    return due


def test_a_state_seen_every_cycle_is_one_event_whose_series_is_written_at_most_every_half_hour():
    recorder = EventRecorder("r1", series_seconds=1800)
    first = cycle(recorder, 0, ["n1"])
    assert [(e.object_name, e.count, e.type, e.object_uid, e.namespace) for e in first] == [
        ("n1", 1, "Warning", "n1", "default")]
    for t in range(30, 1800, 30):
        assert cycle(recorder, t, ["n1"]) == []                   # a repeat, not a write
    [heartbeat] = cycle(recorder, 1800, ["n1"])
    assert heartbeat.name == first[0].name and heartbeat.count == 61 and heartbeat.last_seen == 1800
    assert cycle(recorder, 1830, ["n1"]) == []


def test_writes_per_cycle_are_bounded_and_the_rest_waits_while_it_still_holds():
    recorder = EventRecorder("r1", max_writes_per_cycle=100)
    nodes = [f"n{i}" for i in range(250)]
    assert len(cycle(recorder, 0, nodes)) == 100 and recorder.deferred == 150
    assert len(cycle(recorder, 5, nodes)) == 100
    # 50 situations ended before their turn: not worth telling any more.
    rest = cycle(recorder, 10, nodes[:200])
    assert rest == [] and recorder.dropped == 50
    assert len(recorder) == 200


def test_something_the_rollout_did_is_told_once_even_when_the_budget_defers_it():
    recorder = EventRecorder("r1", max_writes_per_cycle=2)
    assert len(cycle(recorder, 0, [], ["a", "b", "c"])) == 2
    [late] = cycle(recorder, 5, [])                               # not seen again, still told
    assert late.object_name == "c" and late.object_uid == "uid-c"
    assert cycle(recorder, 10, []) == [] and len(recorder) == 0


def test_event_names_are_stable_per_rollout_and_situation_so_a_rerun_finds_them():
    a, b = EventRecorder("r1"), EventRecorder("r1")
    assert cycle(a, 0, ["n1"])[0].name == cycle(b, 99, ["n1"])[0].name
    assert cycle(EventRecorder("r2"), 0, ["n1"])[0].name != cycle(EventRecorder("r1"), 0, ["n1"])[0].name
    long_name = "ip-" + "x" * 300
    assert len(cycle(EventRecorder("r1"), 0, [long_name])[0].name) <= 253
