"""`presence set|clear` subcommands (the Discord bot's writer contract)."""

from __future__ import annotations

import argparse


def add_parser(commands, add_arguments) -> None:
    """Register the `presence` subcommand on the top-level parser."""


def run(config, args: argparse.Namespace) -> int:
    raise NotImplementedError
