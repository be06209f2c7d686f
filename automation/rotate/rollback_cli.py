"""``python -m automation rollback``: set the previous AMI back on the stack and replace nodes again."""

from __future__ import annotations

import argparse

from .cli import EPILOG, add_common, run


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("The previous AMI is the one the last rotation replaced (or the one a rotation in flight "
                     "would restore), unless --ami is given.\n" + EPILOG.replace("bake (or reuse) -> ", ""))
    add_common(parser)
    parser.add_argument("--ami", help="AMI to go back to (default: the previous AMI recorded by the last rotation)")
    parser.add_argument("--model-version", help="model version baked into --ami (default: recorded with it)")


def main(args: argparse.Namespace) -> int:
    return run(args, "rollback")
