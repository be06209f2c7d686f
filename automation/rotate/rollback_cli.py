"""``python -m automation rollback``: set the previous AMI back on the stack and replace nodes again."""

from __future__ import annotations

import argparse

from .cli import EPILOG, add_common, run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = ("Put the previous node AMI and model version back on the stack behind the same gate\n"
                          "as rotate, and replace the nodes again. The previous AMI is the one the last rotation\n"
                          "replaced (recorded in the cluster), or the one a rotation in flight would restore\n"
                          "(which is abandoned), unless --ami is given. The retained PersistentVolume/claim of\n"
                          "that model version are adopted, not created again.")
    parser.epilog = EPILOG.replace("validate -> bake (or reuse) -> ", "validate (--ami exists and is available) -> ")
    add_common(parser)
    parser.add_argument("--ami", help="AMI id (or kiln:nodeAmi's JSON family map) to go back to (default: the previous "
                                      "AMI recorded by the last rotation); must exist and be available in the stack's "
                                      "region")
    parser.add_argument("--model-version", help="model version baked into --ami (default: recorded with it)")


def main(args: argparse.Namespace) -> int:
    return run(args, "rollback")
