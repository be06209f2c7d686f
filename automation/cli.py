"""``python -m automation``: one entry point, one module per subcommand.

Each subcommand module defines ``configure(parser)`` (its flags) and
``main(args) -> int`` (its exit code). Modules are imported only when their
command runs, so ``--help`` stays fast and one command's heavy imports never
slow another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from automation.errors import EXIT_BAD_INPUT

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bake": ("automation.bake.cli", "bake a node AMI with the model and images (or reuse one with the same recipe)"),
    "rotate": ("automation.rotate.cli", "bake, update the stack behind a preview gate, replace nodes, converge, "
                                        "commit the stack file"),
    "rollback": ("automation.rotate.rollback_cli", "set the previous AMI back on the stack and replace nodes again"),
    "guard": ("automation.rotate.guard", "refuse a `pulumi up` that would revert or race a rotation (run before up in CI)"),
    "replace": ("automation.rollout.cli", "drain-aware replacement of nodes whose launch template is out of date"),
    "termination-handler": ("automation.termination.cli", "hold terminating nodes while their Jobs run (runs in the cluster)"),
    "simulate": ("automation.rollout.sim.cli", "run the rollout engine against a simulated fleet from a scenario file"),
    "demo": ("automation.demo", "the whole rotation on a local moto server and a simulated cluster; chart in out/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m automation",
        description="kiln automation: bake model AMIs and roll them onto EKS nodes without killing running Jobs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Flags are added only for the command being run (or asked for --help).
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints usage / errors (exit 2) for unknown commands
        parser.print_help()
        return EXIT_BAD_INPUT
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"python -m automation {name}", description=COMMANDS[name][1])
    module.configure(sub)
    args = sub.parse_args(argv[1:])
    return int(module.main(args) or 0)
