"""`hotstage calibrate`: placeholder being written in this change (options and run follow)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options (heavy imports stay inside `run`: every CLI call builds this parser)."""


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 on success, 2 on bad input."""
    raise NotImplementedError
