"""The rotation pipeline with a strict fake stack (tests/_fake_stack.py) and the simulator as the fleet.

Includes an interruption after every step followed by a rerun with the same
arguments, SIGTERM (a real signal) during the bake and during the node
replacement, the replacement blocked or locked out, failures that restore behind
the gate (and a restore the gate blocks), going back to a model version whose
retained PersistentVolume/claim still exist, family maps, config that cannot be
read, persistence to git failing, and the CLI's plain one-line errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Optional
from unittest import mock

import pytest
from pulumi.automation.events import DiffKind, OpType

from automation.rotate import cli as rotate_cli
from automation.rotate.fleet import prediction, replace_with_simulator, scenario_for_groups
from automation.rotate.pipeline import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, STEPS, BadInput, Rotation, RotationSeams,
                                        families_for, rollout_disposition)
from automation.rotate.state import FileIntentStore
from automation.signals import Interrupted, sigterm_raises
from automation.stack import ConfigReadError
from tests._engine_events import step
from tests._fake_stack import (NEW_AMI, NEW_GPU, OLD_AMI, OLD_GPU, AlreadyExists, Baker, FakeStack, FakeVolumes, Fleet,
                               MemoryObjects)

URI = "s3://models/llm/v6/"


class Stop(BaseException):
    """Stands in for a killed process between two steps (no cleanup, no signal handler)."""


def make(tmp_path, stack: Optional[FakeStack] = None, *, volumes=True, **world_kw):
    stack = stack or FakeStack(tmp_path)
    fleet = Fleet(stack, world_kw.pop("faults", ()))
    baker = Baker()
    world = RotationSeams(stack=stack, bake=baker, replace=fleet.replace,
                  volumes=FakeVolumes(stack.objects) if volumes else None, **world_kw)
    return Rotation(world, FileIntentStore(tmp_path / "state")), stack, fleet, baker


def store(tmp_path):
    return FileIntentStore(tmp_path / "state")


def interrupt_at(name, times=1):
    left = [times]

    def checkpoint(step_name):
        if step_name == name and left[0]:
            left[0] -= 1
            raise Stop(step_name)
    return checkpoint


# ------------------------------------------------------------------------------ the happy path and resumption


def test_rotation_end_to_end(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_OK and report.outcome == "done", report.message
    assert report.steps == list(STEPS)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.config["kiln:modelVersion"] == "v6"
    assert stack.deployed["model"] == "v6" and stack.old_nodes() == 0 and stack.node_amis() == {NEW_AMI}
    assert report.rollout["outcome"] == "completed" and report.rollout["nodes_terminated"] == 5
    assert report.gate["allowed"] and not report.converge["changes"]
    # One up, bound to the plan the gated preview saved; the converge preview showed nothing to apply.
    assert len(stack.ups) == 1 and stack.ups[0]["plan"] == stack.previews[0]["plan"] is not None
    assert store(tmp_path).load("prod") is None
    last = store(tmp_path).last("prod")
    assert last.previous_ami == OLD_AMI and last.previous_model_version == "v5"
    # The new model's objects were created; the old ones are retained.
    assert {"kiln-model-v6", "ml-jobs/model-v6", "kiln-model-v5"} <= stack.objects.names


def test_a_stack_whose_refreshed_preview_still_shows_changes_is_not_reported_converged(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    stack.drift_max = 12            # something outside Pulumi sets the groups' max size again after every up
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_FAILED and report.outcome == "failed"
    assert report.message.startswith("the stack did not converge; ")
    assert report.steps == list(STEPS[:STEPS.index("converge")])      # no converge, persist or report step
    assert [c["type"] for c in report.converge["changes"]] == ["aws:autoscaling/group:Group"] * 2
    assert [u["refresh"] for u in stack.ups] == [False, True]          # the converge's up ran once
    assert store(tmp_path).load("prod") is not None and store(tmp_path).last("prod") is None   # rerun to finish


def test_the_step_table_names_one_method_per_step_and_drives_the_run(tmp_path, monkeypatch):
    from automation.rotate import pipeline

    methods = {name for name in vars(Rotation) if name.startswith("_step_")}
    assert methods == {pipeline.step_method(step) for step in STEPS}      # no step without a method, nor the reverse
    # The table, not a hard-coded sequence, decides what runs: a table that ends after set-config previews nothing.
    monkeypatch.setattr(pipeline, "STEPS", STEPS[:STEPS.index("preview")])
    rotation, stack, fleet, baker = make(tmp_path)
    report = rotation.rotate("prod", "v6", URI)
    assert report.steps == ["validate", "bake", "set-config"] and not stack.previews and not stack.ups
    assert stack.config["kiln:nodeAmi"] == NEW_AMI


@pytest.mark.parametrize("after", STEPS)
def test_interrupted_after_any_step_then_rerun_continues(tmp_path, after):
    rotation, stack, fleet, baker = make(tmp_path, checkpoint=interrupt_at(after))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    report = rotation.rotate("prod", "v6", URI)  # same arguments: continues
    assert report.exit_code == EXIT_OK, report.message
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.node_amis() == {NEW_AMI}
    assert baker.builds == 1                          # the rerun reused the AMI
    assert len(stack.lt_versions["gpu"]) == 2         # one new launch-template version, not two
    assert sum(r["nodes_terminated"] for r in fleet.runs) == 5  # every old node replaced once
    # The previous AMI survives the interruption: rollback knows where to go.
    assert store(tmp_path).last("prod").previous_ami == OLD_AMI


def test_a_rerun_on_a_fresh_runner_continues_from_the_deployed_state(tmp_path):
    """The runner died after `up`; the next run has the stack file from git (old config) and the intent."""
    rotation, stack, fleet, baker = make(tmp_path, checkpoint=interrupt_at("up"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    stack.config["kiln:nodeAmi"], stack.config["kiln:modelVersion"] = OLD_AMI, "v5"   # a fresh checkout
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_OK and report.previous_ami == OLD_AMI
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.node_amis() == {NEW_AMI}


def test_sigterm_during_the_bake_keeps_the_intent_and_a_rerun_finishes(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    real_bake = rotation.w.bake

    def bake_killed(intent, family, base):
        rotation.w.bake = real_bake
        os.kill(os.getpid(), signal.SIGTERM)   # a CI cancel: the handler turns it into Interrupted
        raise AssertionError("SIGTERM did not interrupt")

    rotation.w.bake = bake_killed
    with sigterm_raises(), pytest.raises(Interrupted):
        rotation.rotate("prod", "v6", URI)
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and store(tmp_path).load("prod") is not None
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert stack.node_amis() == {NEW_AMI}


def test_the_base_ami_is_resolved_once_and_a_rerun_bakes_the_same_recipe(tmp_path):
    bases = iter(["ami-0000000000000base", "ami-00000000000newbase"])   # AWS moves "recommended" in between
    rotation, stack, fleet, baker = make(tmp_path, resolve_base=lambda intent, family: next(bases),
                                         checkpoint=interrupt_at("bake"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert {c[2] for c in baker.calls} == {"ami-0000000000000base"}
    # Done: the same command again neither bakes nor replaces anything.
    again = rotation.rotate("prod", "v6", URI)
    assert again.exit_code == EXIT_OK and len(baker.calls) == 2 and len(stack.lt_versions["gpu"]) == 2
    assert fleet.runs[-1]["nodes_terminated"] == 0


# ------------------------------------------------------------------------------ interruption is not failure


def _sim_world_with(nodes=2, lease=None):
    from automation.rollout.sim import load_scenario
    from automation.rollout.sim.world import World as SimWorld

    world = SimWorld(load_scenario(scenario_for_groups([{"name": "gpu-a", "nodes": nodes, "zone": "us-east-2a"}],
                                                       jobs={"running": nodes, "remaining_seconds": [3000, 3600]},
                                                       deadline_seconds=7200)))
    world.lease = lease
    return world


def _real_rollout(world, on_event=None) -> dict:
    from automation.rollout.runner import RolloutOptions, run_rollout
    from automation.rollout.sim import CLUSTER
    from automation.rollout.sim.ports import connect

    cloud, cluster, clock = connect(world)
    return run_rollout(cloud, cluster, clock, RolloutOptions(cluster_name=CLUSTER), on_event).to_dict()


def test_the_real_runner_interrupted_by_sigterm_or_locked_out_is_an_interruption():
    world = _sim_world_with()
    sent = []

    def term_once(event):
        if event["event"] == "cycle" and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    report = _real_rollout(world, term_once)
    assert sent and rollout_disposition(report) == "interrupted", report["reason"]
    assert world.intent is not None                  # the rollout's own intent stays for the rerun
    locked = _real_rollout(_sim_world_with(lease=("someone-else", float("inf"))))
    assert rollout_disposition(locked) == "interrupted", locked["reason"]
    assert rollout_disposition({"outcome": "blocked", "reason": "PDB ml/pdb holds node-1"}) == "interrupted"
    assert rollout_disposition({"outcome": "completed"}) == "completed"
    assert rollout_disposition({"outcome": "rolled_back"}) == "rolled_back"
    # Anything short of completed or rolled back leaves part of the fleet on the new image and the rollout's
    # intent on its Lease: nothing is undone under it (a rerun continues, `rollback` goes back).
    assert rollout_disposition({"outcome": "failed", "reason": "not done 1800s after the deadline"}) == "interrupted"
    assert rollout_disposition({"outcome": "failed", "reason": "ClientError: ... (Throttling) Rate exceeded"}) == \
        "interrupted"
    assert rollout_disposition({"outcome": "dry_run"}) == "interrupted"
    assert rollout_disposition({}) == "interrupted"


@pytest.mark.parametrize("rollout", [
    {"outcome": "blocked", "reason": "PodDisruptionBudget ml-jobs/trainer keeps node-3 from draining"},
    {"outcome": "failed", "reason": "stopped by SIGTERM; rerun the same command to resume"},
    {"outcome": "failed", "reason": "another rollout holds the lock"},
    # An API error half-way: the nodes replaced so far run the new image; restoring the stack under them would
    # leave a mixed fleet with nothing left to replace it back, and report it "restored".
    {"outcome": "failed", "reason": "ClientError: An error occurred (Throttling): Rate exceeded", "nodes_terminated": 3},
    {"outcome": "failed", "reason": "not done 1800s after the deadline: node-4"},
])
def test_an_interrupted_replacement_keeps_config_and_intent_and_a_rerun_finishes(tmp_path, rollout):
    rotation, stack, fleet, _ = make(tmp_path)
    rotation.w.replace = lambda outputs: dict(rollout)
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_FAILED and report.outcome == "interrupted"
    assert "rerun" in report.message and not report.config_restored and report.restore is None
    assert stack.config["kiln:nodeAmi"] == NEW_AMI and stack.deployed["model"] == "v6" and len(stack.ups) == 1
    assert store(tmp_path).load("prod").applied
    rotation.w.replace = fleet.replace
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK and stack.node_amis() == {NEW_AMI}


def test_sigterm_inside_the_real_replacement_through_the_pipeline(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    world = _sim_world_with()

    def replace_with_real_runner(outputs):
        sent = []

        def term(event):
            if event["event"] == "cycle" and not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGTERM)
        return _real_rollout(world, term)

    rotation.w.replace = replace_with_real_runner
    with sigterm_raises():   # the CLI's handler; the runner swaps in its own while it runs, then puts this back
        report = rotation.rotate("prod", "v6", URI)
    assert report.outcome == "interrupted" and store(tmp_path).load("prod") is not None
    assert world.intent is not None and stack.config["kiln:modelVersion"] == "v6"


def test_a_push_that_fails_keeps_the_intent_and_the_rerun_pushes(tmp_path):
    calls = []

    def persist(stack_file, message):
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("git push to origin/main failed: could not read from remote repository")
        return "Pulumi.prod.yaml pushed to origin/main"

    rotation, stack, fleet, _ = make(tmp_path, persist=persist)
    first = rotation.rotate("prod", "v6", URI)
    assert first.outcome == "interrupted" and "could not be persisted" in first.message
    assert store(tmp_path).load("prod") is not None and store(tmp_path).last("prod") is None
    second = rotation.rotate("prod", "v6", URI)
    assert second.exit_code == EXIT_OK and second.persisted.endswith("origin/main")
    assert calls == ["kiln: rotate prod to model v6"] * 2 and len(stack.ups) == 1


# ------------------------------------------------------------------------------ failures restore behind the gate


def test_gate_blocks_a_cluster_replace_and_restores_config(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    stack.extra_events = [step(OpType.REPLACE, "aws:eks/cluster:Cluster", "kiln", old={"version": "1.33"},
                               new={"version": "1.34"}, keys=["version"],
                               detailed={"version": DiffKind.UPDATE_REPLACE})]
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_FAILED and report.outcome == "blocked"
    assert "aws:eks/cluster:Cluster" in report.message and "version" in report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert report.config_restored and stack.ups == [] and fleet.runs == []
    assert store(tmp_path).load("prod") is None


@pytest.mark.parametrize("fault", ["dropped", "no-pack"])
def test_a_preview_the_gate_cannot_check_blocks(tmp_path, fault):
    rotation, stack, fleet, _ = make(tmp_path)
    if fault == "dropped":
        stack.dropped = ["Failed to parse engine event\nEvent: {...}"]
    else:
        stack.pack_ran = False
    report = rotation.rotate("prod", "v6", URI)
    assert report.outcome == "blocked" and stack.ups == [] and report.config_restored


def test_rolled_back_replacement_restores_behind_the_gate_adopting_the_retained_objects(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, faults=({"kind": "bad_ami"},))
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_FAILED and report.outcome == "rolled_back", report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert stack.lt_versions["gpu"][-1] == (OLD_AMI, "v5") and stack.deployed["model"] == "v5"
    # The restore was previewed, gated and applied with its own plan, adopting model v5's retained objects.
    assert report.restore["applied"] == "applied" and report.restore["gate"]["allowed"]
    restore_up = stack.ups[-1]
    assert restore_up["adopt"] and restore_up["plan"] == stack.previews[-1]["plan"] is not None
    assert report.config_restored and store(tmp_path).load("prod") is None


def test_without_adoption_going_back_fails_with_already_exists(tmp_path):
    """The retained v5 objects are why adoption is needed: without it the restore's up fails."""
    rotation, stack, fleet, _ = make(tmp_path, volumes=False, faults=({"kind": "bad_ami"},))
    report = rotation.rotate("prod", "v6", URI)
    assert report.restore["applied"].startswith("failed") and "already exists" in report.restore["applied"]
    assert not report.config_restored and "RESTORE INCOMPLETE" in report.message
    assert store(tmp_path).load("prod").phase == "restoring"


def test_failed_up_restores_the_previous_ami(tmp_path):
    rotation, stack, *_ = make(tmp_path)
    stack.fail_up = RuntimeError("engine error: [aws] Throttling: rate exceeded")
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_FAILED and report.outcome == "failed" and "rate exceeded" in report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and report.config_restored
    # Nothing had been applied: the way back previews no changes, adopts nothing and applies nothing.
    assert len(stack.ups) == 1 and not any(p["adopt"] for p in stack.previews)
    assert report.restore["gate"]["changes"] == [] and stack.deployed["upsert"] is False


def test_a_restore_the_gate_blocks_stops_keeps_the_intent_and_a_rerun_finishes_it(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, faults=({"kind": "bad_ami"},))
    real_preview = stack.preview

    def preview_with_drift_on_the_way_back(on_event, **kw):
        if stack.config["kiln:modelVersion"] == "v5" and stack.deployed["model"] == "v6":
            stack.extra_events = [step(OpType.DELETE, "aws:ec2/securityGroup:SecurityGroup", "nodes", old={})]
        else:
            stack.extra_events = []
        return real_preview(on_event, **kw)

    stack.preview = preview_with_drift_on_the_way_back
    report = rotation.rotate("prod", "v6", URI)
    assert report.outcome == "rolled_back" and "RESTORE BLOCKED" in report.message
    assert "aws:ec2/securityGroup:SecurityGroup" in report.message
    assert report.restore["applied"] == "blocked by the gate" and not report.config_restored
    assert stack.deployed["model"] == "v6" and stack.config["kiln:modelVersion"] == "v5"
    intent = store(tmp_path).load("prod")
    assert intent.phase == "restoring" and intent.failure == "rolled_back"
    stack.preview, stack.extra_events = real_preview, []          # the drift was dealt with
    again = rotation.rotate("prod", "v6", URI)
    assert again.outcome == "rolled_back" and again.config_restored and stack.deployed["model"] == "v5"
    assert store(tmp_path).load("prod") is None


def test_a_restore_whose_config_write_fails_says_it_is_partial(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, faults=({"kind": "bad_ami"},))
    real_replace = rotation.w.replace

    def replace_then_break_config(outputs):
        report = real_replace(outputs)
        stack.set_error = ConfigReadError("kiln:nodeAmi: could not write the config of stack prod: passphrase "
                                          "must be set")
        return report

    rotation.w.replace = replace_then_break_config
    report = rotation.rotate("prod", "v6", URI)
    assert not report.config_restored and report.restore["config"].startswith("failed")
    assert "RESTORE INCOMPLETE" in report.message and "passphrase" in report.message
    assert store(tmp_path).load("prod").phase == "restoring"


def test_not_confirmed_applies_nothing(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, confirm=lambda result: False)
    report = rotation.rotate("prod", "v6", URI)
    assert report.outcome == "not_confirmed" and report.exit_code == EXIT_FAILED
    assert stack.ups == [] and stack.config["kiln:nodeAmi"] == OLD_AMI


def test_confirmation_is_asked_even_when_the_preview_has_no_changes(tmp_path):
    asked = []
    rotation, stack, fleet, _ = make(tmp_path, confirm=lambda result: asked.append(result.has_changes) or True)
    rotation.w.checkpoint = interrupt_at("up")
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert asked == [True, False]     # the rerun's preview shows nothing, the replacement still needs a yes


def test_converge_restores_what_the_replacement_changed_outside_the_engine(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def replace_leaving_a_surge(outputs):
        report = fleet.replace(outputs)
        stack.live_max = 20  # changed in AWS behind the engine's back; only a refresh shows it
        return report

    rotation.w.replace = replace_leaving_a_surge
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_OK, report.message
    assert stack.live_max == stack.declared_max
    converge_up = stack.ups[-1]
    assert converge_up["refresh"] and converge_up["plan"] == stack.previews[-2]["plan"] is not None


def test_converge_refuses_drift_a_rotation_does_not_make(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def replace_then_someone_opens_a_port(outputs):
        report = fleet.replace(outputs)
        stack.extra_events = [step(OpType.UPDATE, "aws:ec2/securityGroup:SecurityGroup", "nodes",
                                   old={"ingress": []}, new={"ingress": [{"cidrBlocks": ["0.0.0.0/0"]}]},
                                   detailed={"ingress[0]": DiffKind.ADD})]
        return report

    rotation.w.replace = replace_then_someone_opens_a_port
    report = rotation.rotate("prod", "v6", URI)
    assert report.outcome == "failed" and "nothing applied" in report.message
    assert "aws:ec2/securityGroup:SecurityGroup" in report.message and len(stack.ups) == 1
    assert not report.config_restored and store(tmp_path).load("prod") is not None   # rerun to continue


# ------------------------------------------------------------------------------ dry run, reruns, bad input


def test_dry_run_predicts_and_changes_nothing(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def predict(outputs):
        groups = [{"name": g["asgName"], "nodes": 3, "zone": g["zone"]} for g in outputs["nodeGroups"]["gpu"]]
        return prediction(replace_with_simulator(scenario_for_groups(
            groups, jobs={"remaining_list": [600, 900, 5400]}, deadline_seconds=3600)))

    rotation.w.predict = predict
    report = rotation.rotate("prod", "v6", URI, dry_run=True)
    assert report.exit_code == EXIT_OK and report.outcome == "dry_run"
    assert report.prediction["simulated"] and report.prediction["nodes_replaced"] == 6
    assert report.prediction["jobs_outliving_deadline"] == 1
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.ups == [] and fleet.runs == []
    assert store(tmp_path).load("prod") is None


def test_a_dry_run_writes_nothing_to_the_cluster_either(tmp_path):
    """The model objects' check deletes stale leftovers before a real apply; a dry run only reads."""
    rotation, stack, *_ = make(tmp_path)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    rotation.w.volumes.dry_runs.clear()
    assert rotation.rollback("prod", dry_run=True).outcome == "dry_run"
    assert rotation.w.volumes.prepared[-1] == "v5" and rotation.w.volumes.dry_runs == [True]


def test_dry_run_never_undoes_a_rotation_in_flight(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, checkpoint=interrupt_at("up"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    with pytest.raises(BadInput, match="in progress"):
        rotation.rotate("prod", "v6", URI, dry_run=True)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI  # untouched


def test_interrupted_dry_run_then_real_run_keeps_the_true_previous_ami(tmp_path):
    rotation, stack, *_ = make(tmp_path, checkpoint=interrupt_at("set-config"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI, dry_run=True)
    assert stack.config["kiln:nodeAmi"] == NEW_AMI  # the dry run was cut off before restoring
    report = rotation.rotate("prod", "v6", URI)
    assert report.exit_code == EXIT_OK and report.previous_ami == OLD_AMI


def test_rerun_with_other_arguments_while_in_flight_is_bad_input(tmp_path):
    rotation, stack, *_ = make(tmp_path, checkpoint=interrupt_at("up"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    with pytest.raises(BadInput, match="in progress"):
        rotation.rotate("prod", "v7", "s3://models/llm/v7/")


def test_bad_input_found_mid_way_leaves_no_intent_and_the_corrected_command_runs(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    bake = rotation.w.bake

    def bake_needing_a_uri(intent, family, base):
        if not intent.model_uri:
            raise BadInput(f"--model-uri is required: no {family} AMI for model {intent.model_version} exists yet")
        return bake(intent, family, base)

    rotation.w.bake = bake_needing_a_uri
    with pytest.raises(BadInput, match="--model-uri"):
        rotation.rotate("prod", "v6", None)
    assert store(tmp_path).load("prod") is None
    report = rotation.rotate("prod", "v6", URI)  # not refused as "other arguments"
    assert report.exit_code == EXIT_OK and stack.node_amis() == {NEW_AMI}


def test_bad_model_uri_is_found_before_any_change(tmp_path):
    def validate(intent):
        raise BadInput(f"--model-uri {intent.model_uri}: bucket models is not reachable (404)")

    rotation, stack, fleet, baker = make(tmp_path, validate=validate)
    with pytest.raises(BadInput, match="--model-uri"):
        rotation.rotate("prod", "v6", URI)
    assert baker.calls == [] and stack.set_calls == [] and store(tmp_path).load("prod") is None


def test_a_missing_target_ami_is_found_before_config_changes(tmp_path):
    def check(amis):
        raise BadInput(f"target AMI: {amis['standard']} (standard) does not exist in us-east-2")

    rotation, stack, *_ = make(tmp_path, check_amis=check)
    with pytest.raises(BadInput, match="does not exist"):
        rotation.rotate("prod", "v6", URI)
    assert stack.set_calls == [] and stack.ups == []


def test_bad_input_after_up_restores_behind_the_gate_then_says_bad_input(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)

    def no_kubeconfig(outputs):
        raise BadInput("the stack has no kubeconfig output")

    rotation.w.replace = no_kubeconfig
    with pytest.raises(BadInput):
        rotation.rotate("prod", "v6", URI)
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.lt_versions["gpu"][-1] == (OLD_AMI, "v5")
    assert store(tmp_path).load("prod") is None


def test_dry_run_whose_prediction_fails_leaves_the_config_as_it_was(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    rotation.w.predict = mock.Mock(side_effect=ConnectionError("API server unreachable"))
    with pytest.raises(ConnectionError):
        rotation.rotate("prod", "v6", URI, dry_run=True)
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.ups == [] and store(tmp_path).load("prod") is None


def test_config_that_cannot_be_read_stops_before_anything(tmp_path):
    rotation, stack, fleet, baker = make(tmp_path)
    stack.config_error = ConfigReadError("could not read the config of stack prod: error: passphrase must be set "
                                         "with PULUMI_CONFIG_PASSPHRASE")
    with pytest.raises(ConfigReadError, match="passphrase"):
        rotation.rotate("prod", "v6", URI)
    assert baker.calls == [] and store(tmp_path).load("prod") is None


def test_a_stack_file_that_does_not_match_what_runs_is_refused(tmp_path):
    rotation, stack, *_ = make(tmp_path)
    stack.deployed["model"] = "v6"   # someone rotated and the stack file here is stale
    with pytest.raises(BadInput, match="update the stack file from git"):
        rotation.rotate("prod", "v7", "s3://models/llm/v7/")


# ------------------------------------------------------------------------------ rollback and the retained objects


def test_rollback_goes_back_to_the_previous_model_adopting_its_retained_objects(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert "kiln-model-v5" in stack.objects.names     # retained by the rotation
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_OK and report.kind == "rollback", report.message
    assert stack.config["kiln:nodeAmi"] == OLD_AMI and stack.config["kiln:modelVersion"] == "v5"
    assert stack.node_amis() == {OLD_AMI} and fleet.runs[1]["nodes_terminated"] == 5
    assert stack.ups[0]["adopt"] is False and stack.ups[1]["adopt"] is True
    provider = [c for c in report.gate["changes"] if c["type"] == "pulumi:providers:kubernetes"]
    assert provider and provider[0]["allowed"]


def test_a_second_rollback_goes_forward_again(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert rotation.rollback("prod").exit_code == EXIT_OK and stack.node_amis() == {OLD_AMI}
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_OK and stack.config["kiln:nodeAmi"] == NEW_AMI
    assert stack.config["kiln:modelVersion"] == "v6" and stack.node_amis() == {NEW_AMI}


def test_rollback_without_adoption_fails_on_the_retained_objects(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path, volumes=False)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_FAILED and "already exists" in report.message


def test_rollback_to_another_ami_while_a_rollback_is_in_flight_is_bad_input(tmp_path):
    rotation, stack, *_ = make(tmp_path)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    rotation.w.checkpoint = interrupt_at("up")
    with pytest.raises(Stop):
        rotation.rollback("prod")
    rotation.w.checkpoint = lambda s: None
    with pytest.raises(BadInput, match="--ami"):
        rotation.rollback("prod", ami="ami-0000000000000eeee", model_version="v4")
    assert stack.config["kiln:nodeAmi"] == OLD_AMI  # the rollback in flight is untouched ...
    assert rotation.rollback("prod").exit_code == EXIT_OK  # ... and continues
    assert stack.node_amis() == {OLD_AMI}


def test_rollback_abandons_a_rotation_in_flight_and_goes_to_what_it_would_restore(tmp_path):
    rotation, stack, fleet, _ = make(tmp_path)
    rotation.w.replace = lambda outputs: {"outcome": "blocked", "reason": "PDB"}
    assert rotation.rotate("prod", "v6", URI).outcome == "interrupted"
    rotation.w.replace = fleet.replace
    report = rotation.rollback("prod")
    assert report.exit_code == EXIT_OK and stack.deployed["model"] == "v5" and stack.node_amis() == {OLD_AMI}


def test_a_rollback_with_bad_input_leaves_the_rotation_in_flight_alone(tmp_path):
    """`rollback --ami <typo>` while a rotation is in flight: the typo is bad input, and the rotation's intent (the
    only record of what to go back to) must survive it."""
    rotation, stack, fleet, _ = make(tmp_path, checkpoint=interrupt_at("up"))
    with pytest.raises(Stop):
        rotation.rotate("prod", "v6", URI)
    in_flight = store(tmp_path).load("prod")

    def validate(intent):
        if intent.kind == "rollback" and intent.target_ami == "ami-0123456789abcdef0":
            raise BadInput("--ami: ami-0123456789abcdef0 does not exist in us-east-2")

    rotation.w.validate = validate
    with pytest.raises(BadInput, match="--ami"):
        rotation.rollback("prod", ami="ami-0123456789abcdef0", model_version="v5")
    assert store(tmp_path).load("prod") == in_flight
    assert rotation.rollback("prod").exit_code == EXIT_OK          # the corrected rollback goes to v5
    assert stack.deployed["model"] == "v5" and stack.node_amis() == {OLD_AMI}


def test_rollback_without_history_is_bad_input(tmp_path):
    rotation, *_ = make(tmp_path)
    with pytest.raises(BadInput, match="--ami"):
        rotation.rollback("prod")


# ------------------------------------------------------------------------------ AMI families


def test_family_map_config_keeps_its_shape(tmp_path):
    stack = FakeStack(tmp_path, ami={"standard": OLD_AMI})
    rotation, stack, *_ = make(tmp_path, stack)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert stack.config["kiln:nodeAmi"] == {"standard": NEW_AMI}          # a map, not a JSON string
    assert all(not isinstance(c.get("kiln:nodeAmi", {}), str) for c in stack.set_calls)


def test_each_family_gets_its_own_ami(tmp_path):
    groups = {"cpu": ("standard", ["a"], 1), "gpu": ("nvidia", ["a", "b"], 2)}
    stack = FakeStack(tmp_path, ami={"standard": OLD_AMI, "nvidia": OLD_GPU}, groups=groups)
    rotation, stack, fleet, baker = make(tmp_path, stack)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert sorted((c[1]) for c in baker.calls) == ["nvidia", "standard"]
    assert stack.config["kiln:nodeAmi"] == {"standard": NEW_AMI, "nvidia": NEW_GPU}
    assert stack.lt_versions["gpu"][-1] == (NEW_GPU, "v6") and stack.lt_versions["cpu"][-1] == (NEW_AMI, "v6")


def test_a_single_ami_stack_with_a_gpu_group_bakes_both_families_and_becomes_a_map(tmp_path):
    stack = FakeStack(tmp_path, groups={"gpu": ("nvidia", ["a"], 1)})
    rotation, stack, fleet, baker = make(tmp_path, stack)
    assert rotation.rotate("prod", "v6", URI).exit_code == EXIT_OK
    assert stack.config["kiln:nodeAmi"] == {"standard": NEW_AMI, "nvidia": NEW_GPU}
    assert families_for(OLD_AMI, {"kiln:nodeGroups": json.dumps([{"name": "g", "gpu": True}])}) == ["nvidia", "standard"]
    assert families_for(OLD_AMI, {"kiln:nodeGroups": json.dumps([{"name": "c"}])}) == ["standard"]


# ------------------------------------------------------------------------------ the CLI


def _parse(module_configure, argv):
    parser = argparse.ArgumentParser()
    module_configure(parser)
    return parser.parse_args(argv)


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_cli_bad_input_exits_2_with_one_plain_line_naming_the_flag(tmp_path, capsys):
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "V[6]!", "--yes"])
    assert rotate_cli.main(args) == EXIT_BAD_INPUT
    (line,) = _err_lines(capsys)
    assert line.startswith("bad input: --model-version") and "'V[6]!'" in line    # brackets survive, no markup
    for argv, flag in ((["--model-uri", "http://x"], "--model-uri"), (["--model-uri", "s3://Bad_Bucket/x"], "--model-uri"),
                       (["--strategy", "yolo"], "--strategy"), (["--git-push", "main"], "--git-push")):
        args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--yes", *argv])
        assert rotate_cli.main(args) == EXIT_BAD_INPUT
        (line,) = _err_lines(capsys)
        assert flag in line, line


def test_cli_needs_yes_without_a_terminal_before_anything(tmp_path, capsys, monkeypatch):
    from automation.rotate import wiring

    monkeypatch.setattr(wiring, "real_world", mock.Mock(side_effect=AssertionError("nothing may be opened")))
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6"])
    assert rotate_cli.main(args) == EXIT_BAD_INPUT     # pytest's stdin is not a terminal
    (line,) = _err_lines(capsys)
    assert "--yes" in line and "nothing was changed" in line


def test_cli_accepts_fully_qualified_stack_names():
    args = _parse(rotate_cli.configure, ["--stack", "acme/kiln/prod", "--model-version", "v6", "--yes"])
    rotate_cli.validate(args)
    with pytest.raises(BadInput, match="--stack"):
        rotate_cli.validate(_parse(rotate_cli.configure, ["--stack", "a/b/c/d", "--model-version", "v6"]))


def _cli_world(tmp_path, monkeypatch, **kw):
    """The CLI over the fake world (real_world replaced): what the user sees, end to end."""
    from automation.rotate import wiring

    stack = FakeStack(tmp_path)
    fleet = Fleet(stack)
    world = RotationSeams(stack=stack, bake=Baker(), replace=fleet.replace, volumes=FakeVolumes(stack.objects), **kw)
    monkeypatch.setattr(wiring, "real_world",
                        lambda *a, **k: wiring.RealWorld(world, FileIntentStore(tmp_path / "state"), stack))
    return stack, world


def test_cli_errors_from_apis_are_one_line_and_never_a_traceback(tmp_path, monkeypatch, capsys):
    from botocore.exceptions import ClientError

    stack, world = _cli_world(tmp_path, monkeypatch)
    world.bake = mock.Mock(side_effect=ClientError({"Error": {"Code": "UnauthorizedOperation",
                                                              "Message": "You are not authorized [ec2:RunInstances]"}},
                                                   "RunInstances"))
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--model-uri", URI, "--yes"])
    assert rotate_cli.main(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "[ec2:RunInstances]" in err and "rerun" in err


def test_cli_config_read_error_stops_naming_it(tmp_path, monkeypatch, capsys):
    stack, world = _cli_world(tmp_path, monkeypatch)
    stack.config_error = ConfigReadError("kiln:nodeAmi: could not read the config of stack prod: error: "
                                         "incorrect passphrase")
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--model-uri", URI, "--yes"])
    assert rotate_cli.main(args) == EXIT_FAILED
    (line,) = _err_lines(capsys)
    assert line.startswith("rotate stopped: kiln:nodeAmi") and "passphrase" in line


def test_cli_sigterm_exits_1_saying_rerun(tmp_path, monkeypatch, capsys):
    stack, world = _cli_world(tmp_path, monkeypatch)
    bake = world.bake

    def bake_then_term(intent, family, base):
        os.kill(os.getpid(), signal.SIGTERM)
        return bake(intent, family, base)

    world.bake = bake_then_term
    before = signal.getsignal(signal.SIGTERM)
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--model-uri", URI, "--yes"])
    assert rotate_cli.main(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == before          # the CLI's handler is gone again
    world.bake = bake
    assert rotate_cli.main(args) == EXIT_OK and stack.node_amis() == {NEW_AMI}


def test_cli_report_prints_engine_text_verbatim(tmp_path, monkeypatch, capsys):
    stack, world = _cli_world(tmp_path, monkeypatch)
    stack.extra_events = [step(OpType.UPDATE, "aws:iam/role:Role", "node[1]", old={"a": "[/x]"}, new={"a": "[b]"},
                               detailed={"a": DiffKind.UPDATE})]
    args = _parse(rotate_cli.configure, ["--stack", "prod", "--model-version", "v6", "--model-uri", URI, "--yes"])
    assert rotate_cli.main(args) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "node[1]" in err and "[/x] -> [b]" in err and "BLOCKED" in err


def test_cli_deadline_takes_the_same_durations_as_replace(tmp_path, capsys):
    base = ["--stack", "prod", "--model-version", "v6"]
    assert rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--deadline", "1h30m"]))["deadline_seconds"] == 5400
    assert rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--deadline", "7200"]))["deadline_seconds"] == 7200
    with pytest.raises(SystemExit) as exit_:
        _parse(rotate_cli.configure, [*base, "--deadline", "soon"])
    assert exit_.value.code == EXIT_BAD_INPUT and "--deadline" in capsys.readouterr().err


def test_cli_job_kind_flags_reach_the_rollout_options(tmp_path, capsys):
    from automation.rollout.engine import DEFAULT_JOB_OWNER_KINDS
    from automation.rollout.runner import RolloutOptions
    from automation.rotate import rollback_cli

    base = ["--stack", "prod", "--model-version", "v6"]
    options = rotate_cli.rollout_options(_parse(rotate_cli.configure, base))
    assert options["job_owner_kinds"] == DEFAULT_JOB_OWNER_KINDS
    options = rotate_cli.rollout_options(_parse(rotate_cli.configure, [*base, "--also-job-kinds", "RayCluster"]))
    assert options["job_owner_kinds"] == DEFAULT_JOB_OWNER_KINDS | {"RayCluster"}
    RolloutOptions(cluster_name="kiln", **options).validate()        # what wiring.make_replace builds
    options = rotate_cli.rollout_options(_parse(rollback_cli.configure, ["--stack", "prod", "--job-kinds", "Job,TFJob"]))
    assert options["job_owner_kinds"] == {"Job", "TFJob"}
    with pytest.raises(SystemExit) as exit_:
        _parse(rotate_cli.configure, [*base, "--job-kinds", "tfjob"])
    assert exit_.value.code == EXIT_BAD_INPUT and "--job-kinds" in capsys.readouterr().err


def test_rollback_cli_bad_ami_exits_2_naming_the_flag(tmp_path, capsys):
    from automation.rotate import rollback_cli

    for bad in ("ami-xyz", "prod-v5", '{"nvidia": "ami-0123456789abcdef0"}',
                '{"standard": "ami-0123456789abcdef0", "arm": "ami-0123456789abcdef1"}'):
        args = _parse(rollback_cli.configure, ["--stack", "prod", "--ami", bad, "--model-version", "v5", "--yes"])
        assert rollback_cli.main(args) == EXIT_BAD_INPUT
        assert "--ami" in capsys.readouterr().err
    assert rotate_cli._is_node_ami('{"standard": "ami-0123456789abcdef0", "nvidia": "ami-0123456789abcdef1"}')


def test_cli_unknown_stack_exits_2_naming_the_flag(tmp_path, monkeypatch, capsys):
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    from automation import stack as stack_module

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    argv = ["--stack", "no-such-stack", "--model-version", "v6", "--yes"]
    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)  # the stand-in: no stack file
    assert rotate_cli.main(_parse(rotate_cli.configure, argv)) == EXIT_BAD_INPUT
    assert "--stack" in capsys.readouterr().err
    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: True)  # the Automation API: no such stack
    not_found = auto.StackNotFoundError(CommandResult(stdout="", stderr="error: no stack named 'no-such-stack' found",
                                                      code=255))
    monkeypatch.setattr(auto, "select_stack", mock.create_autospec(auto.select_stack, side_effect=not_found))
    assert rotate_cli.main(_parse(rotate_cli.configure, argv)) == EXIT_BAD_INPUT
    assert "--stack" in capsys.readouterr().err


def test_rollback_cli_without_history_exits_2(tmp_path, monkeypatch, capsys):
    from automation.rotate import rollback_cli

    stack, world = _cli_world(tmp_path, monkeypatch)
    args = _parse(rollback_cli.configure, ["--stack", "prod", "--yes"])
    assert rollback_cli.main(args) == EXIT_BAD_INPUT
    assert "--ami" in capsys.readouterr().err


def test_the_program_exports_what_rotate_and_bake_consume():
    """The stack-output contract, checked on the real __main__.py under Pulumi mocks."""
    from _program_helpers import BASE, run

    outputs = run(BASE).outputs  # cached: other program tests in this process share the run
    assert outputs["clusterName"] == "kiln-test" and outputs["nodeAmi"] and outputs["modelVersion"] == "v5"
    (entries,) = outputs["nodeGroups"].values()
    assert len(entries) == 2 and all({"zone", "asgName", "launchTemplateId"} <= set(e) for e in entries)
    assert len(outputs["privateSubnetIds"]) == 2
    assert "kubeconfig" in outputs   # where the rotation's intent and the model volumes are reached


def test_cli_rollout_timeouts_reach_the_rollout_options(tmp_path, capsys):
    """rotate and rollback hand the replacement's bad-AMI and launch-failure timeouts to the rollout (not only
    `replace`): a stack whose nodes take 20 minutes to warm needs --ready-timeout through rotate too."""
    from automation.rollout.runner import RolloutOptions
    from automation.rotate import rollback_cli

    base = ["--stack", "prod", "--model-version", "v6"]
    options = rotate_cli.rollout_options(_parse(rotate_cli.configure, base))
    assert (options["ready_timeout_seconds"], options["boot_timeout_seconds"],
            options["launch_failure_timeout_seconds"]) == (1800, 600, 900)
    options = rotate_cli.rollout_options(_parse(rollback_cli.configure, [
        "--stack", "prod", "--ready-timeout", "45m", "--boot-timeout", "15m", "--launch-failure-timeout", "1h"]))
    assert (options["ready_timeout_seconds"], options["boot_timeout_seconds"],
            options["launch_failure_timeout_seconds"]) == (2700, 900, 3600)
    RolloutOptions(cluster_name="kiln", **options).validate()        # what wiring.make_replace builds
    for flag in ("--ready-timeout", "--boot-timeout", "--launch-failure-timeout"):
        with pytest.raises(SystemExit) as exit_:
            _parse(rotate_cli.configure, [*base, flag, "0"])
        assert exit_.value.code == EXIT_BAD_INPUT and flag in capsys.readouterr().err
