"""``python -m automation.termination``: the termination handler (the image's entrypoint)."""

import argparse
import sys

from automation.termination.cli import configure, main

parser = argparse.ArgumentParser(prog="python -m automation.termination")
configure(parser)
sys.exit(main(parser.parse_args()))
