"""``python -m automation guard``: refuse a ``pulumi up`` that would revert or race a rotation.

The deploy pipeline runs this right before its ``pulumi up`` (both CI templates
do). It refuses (exit 1, one line per reason) when:

- a rotation or rollback of the stack is in flight (its intent is in the
  cluster), or a node replacement is (the rollout's intent on its Lease): the
  deploy would apply the stack file of a half-done rotation;
- the stack file's ``kiln:nodeAmi`` or ``kiln:modelVersion`` differs from what
  the stack runs (its ``nodeAmi``/``modelVersion`` outputs): the deploy would
  roll the nodes' image or the model volume back (or forward) outside
  ``rotate``, with no gate and no drain-aware replacement. Merge the rotation's
  commit (``rotate --git-push``) or use ``rotate``/``rollback``.

A stack with no outputs yet (never deployed) passes. A deployed stack without a
``kubeconfig`` output, or a cluster that cannot be read, is refused (a rotation
in flight there cannot be ruled out) unless ``--no-cluster-check`` skips the
in-flight checks (the run says so); the stand-in, which has no cluster, skips
them too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Optional

from automation.errors import EXIT_BAD_INPUT, EXIT_OK
from automation.errors import EXIT_FAILED as EXIT_REFUSED
from automation.stack import desired_amis

from .state import RotationIntent

KEY_AMI, KEY_MODEL = "kiln:nodeAmi", "kiln:modelVersion"


def deploy_problems(config: Mapping[str, str], outputs: Mapping[str, Any], rotation: Optional[RotationIntent],
                    rollout: Optional[str]) -> list[str]:
    """Why an ordinary deploy must not run now (empty: it may). Pure."""
    problems = []
    if rotation is not None:
        what = "restore" if rotation.phase == "restoring" else rotation.kind
        problems.append(f"a {what} of stack {rotation.stack} to model {rotation.model_version} is in flight: "
                        f"finish it (rerun `python -m automation {rotation.kind} --stack {rotation.stack} ...`) "
                        "before deploying")
    if rollout is not None:
        problems.append(f"a node replacement is in flight in the cluster ({rollout}): rerun the rotation "
                        "(or `python -m automation replace`) to finish it before deploying")
    if outputs:
        deployed_ami, deployed_model = outputs.get("nodeAmi"), outputs.get("modelVersion")
        if deployed_ami is None or deployed_model is None:
            problems.append("the stack's outputs have no nodeAmi/modelVersion, so this deploy cannot be checked "
                            "against what the nodes run (a stack deployed by a kiln version without those outputs: "
                            "check that the stack file's kiln:nodeAmi/kiln:modelVersion are what the nodes run, "
                            "and deploy once by hand)")
        else:
            want_ami = desired_amis(config.get(KEY_AMI))
            have_ami = desired_amis(deployed_ami)
            if want_ami != have_ami:
                problems.append(f"{KEY_AMI} in the stack file ({_show(want_ami)}) is not what the stack runs "
                                f"({_show(have_ami)}): only `rotate`/`rollback` change the node image; merge the "
                                "rotation's commit of the stack file")
            if config.get(KEY_MODEL) != str(deployed_model):
                problems.append(f"{KEY_MODEL} in the stack file ({config.get(KEY_MODEL)}) is not what the stack runs "
                                f"({deployed_model}): only `rotate`/`rollback` change the model; merge the "
                                "rotation's commit of the stack file")
    return problems


def _show(amis: Mapping[str, str]) -> str:
    if set(amis) == {"standard"}:
        return amis["standard"]
    return ", ".join(f"{k}={v}" for k, v in sorted(amis.items())) or "not set"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Refuse a `pulumi up` that would revert or race a rotation: exit 1 when a rotation or node "
                          "replacement of the stack is in flight, or when the stack file's kiln:nodeAmi/"
                          "kiln:modelVersion differ from what the stack runs. Run it before `pulumi up` in CI. "
                          "Exit codes: 0 the deploy may run, 1 refused (one line per reason), 2 bad input.")
    parser.add_argument("--stack", required=True, help="Pulumi stack (plain or org/project/stack)")
    parser.add_argument("--no-cluster-check", action="store_true",
                        help="skip the in-flight checks in the cluster (e.g. the cluster is down and this deploy "
                             "fixes it); the stack-file check still runs")


def in_flight(outputs: Mapping[str, Any], stack: str) -> tuple[Optional[RotationIntent], Optional[str]]:
    """The rotation intent and a description of the rollout intent in the stack's cluster."""
    from automation.rollout.kube import KubeCluster

    from .state import ClusterIntentStore
    from .wiring import kube_api_client

    api = kube_api_client(outputs)
    rotation = ClusterIntentStore(api).load(stack)
    rollout = KubeCluster(api).read_intent()
    described = None if rollout is None else f"rollout {rollout.rollout_id}, phase {rollout.phase}"
    return rotation, described


def main(args: argparse.Namespace) -> int:
    from automation.stack import (PROJECT_DIR, ConfigReadError, open_stack, pulumi_cli_available, stack_file,
                                  valid_stack_name)

    def say(line: str) -> None:
        print(line.replace("\n", " "), file=sys.stderr, flush=True)

    def first_line(exc: BaseException) -> str:
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__

    if not valid_stack_name(args.stack):
        say(f"bad input: --stack ({args.stack!r}) is not a stack name")
        return EXIT_BAD_INPUT
    try:   # the stack: its config (the stack file) and what it runs (its outputs)
        stack = open_stack(args.stack, PROJECT_DIR)
        config = stack.all_config()
        outputs = stack.outputs()
    except ConfigReadError as exc:
        say(f"guard: refused: {exc}")
        return EXIT_REFUSED
    except Exception as exc:  # noqa: BLE001 - fail closed, one line, no traceback
        if type(exc).__name__ == "StackNotFoundError" or (
                not pulumi_cli_available() and not stack_file(PROJECT_DIR, args.stack).exists()):
            # No such Pulumi stack, or (the stand-in, whose only config is the stack file) no such file.
            say(f"bad input: --stack {args.stack!r}: no such Pulumi stack"
                + ("" if pulumi_cli_available() else f" ({stack_file(PROJECT_DIR, args.stack)} does not exist)"))
            return EXIT_BAD_INPUT
        say(f"guard: refused: could not read stack {args.stack} ({first_line(exc)})")
        return EXIT_REFUSED
    rotation = rollout = None
    checked = False
    if args.no_cluster_check:
        say("guard: the in-flight checks in the cluster are skipped (--no-cluster-check)")
    elif not outputs or (not outputs.get("kubeconfig") and getattr(stack, "kind", "") == "stand-in"):
        say("guard: the in-flight checks in the cluster are skipped ("
            + ("the stack has no outputs yet: never deployed" if not outputs else "the stand-in has no cluster") + ")")
    elif not outputs.get("kubeconfig"):
        # A deployed stack without the output: nothing to look for a rotation in flight with. Fail closed.
        say("guard: refused: the stack has no kubeconfig output, so a rotation in flight in its cluster cannot be "
            "ruled out; pass --no-cluster-check to deploy without that check")
        return EXIT_REFUSED
    else:
        try:
            rotation, rollout = in_flight(outputs, args.stack)
            checked = True
        except Exception as exc:  # noqa: BLE001 - fail closed, one line, no traceback
            say(f"guard: refused: could not read the cluster for a rotation in flight ({first_line(exc)}); pass "
                "--no-cluster-check if the cluster is unreachable on purpose (e.g. this deploy repairs it)")
            return EXIT_REFUSED
    problems = deploy_problems(config, outputs, rotation, rollout)
    for p in problems:
        say(f"guard: refused: {p}")
    if not problems:
        say(f"guard: stack {args.stack} may be deployed: "
            + ("no rotation in flight and " if checked else "") + "the stack file matches what it runs")
    return EXIT_REFUSED if problems else EXIT_OK
