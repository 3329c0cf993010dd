#!/usr/bin/env python3
"""hepgg_server: the visitor-facing serving tier for hosted profile sites.

    python hepgg_server.py serve [--port 8888 ...]   run the server (embedded stores by default)
    python hepgg_server.py import FILE.json          validate and upsert users and profiles
    python hepgg_server.py seed-demo                 the demo owner and profile (demo.localhost)
    python hepgg_server.py stats PROFILE_ID...       views and plays as JSON, one line per profile
    python hepgg_server.py reconcile [--now ISO]     apply plan limits, print what changed
    python hepgg_server.py presence set|clear ...    write or clear a Discord presence snapshot

Every option is also read from HEPGG_<OPTION> and from --config FILE (TOML).
main() is a pipeline: parse → config → logging → the command.

The project's modules are imported inside the functions, never at the top: the OG render processes are
spawned (multiprocessing), and a spawned process first imports the parent's main module, this one. Its
top-level imports (runtime.config, presence.cli: redis, tornado) cost each render process ~0.4 s of CPU
that it never used, paid by every replica start (tests/test_packaging.py keeps the top light).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.config import Config


def build_parser() -> argparse.ArgumentParser:
    from presence import cli as presence_cli
    from runtime.config import COMMAND_OPTIONS, add_arguments

    parser = argparse.ArgumentParser(prog="hepgg_server.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *arguments: tuple[str, dict[str, Any]]) -> None:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for flag, kwargs in arguments:  # the command's own arguments first, its options after them
            sub.add_argument(flag, **kwargs)
        add_arguments(sub, COMMAND_OPTIONS.get(name))

    command("serve", "run the server")
    command(
        "import",
        "validate and upsert users and profiles from a JSON file",
        ("file", {"help": "the JSON file (format: docs/import.md)"}),
    )
    command("seed-demo", "create the demo owner and profile")
    command(
        "stats",
        "print each profile's views and plays as JSON, one line per profile",
        ("profile_ids", {"nargs": "+", "metavar": "PROFILE_ID"}),
    )
    command(
        "reconcile",
        "apply plan limits now (unpublish over-allowance profiles, republish restored ones)",
        ("--now", {"help": "ISO 8601 time to reconcile at (default: now)"}),
    )
    presence_cli.add_parser(commands, add_arguments, COMMAND_OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from runtime.config import ConfigError, load_config
    from runtime.logs import setup_logging

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level if args.command == "serve" else "warning")
    if config.redis_sharded_pubsub:
        logging.getLogger("hepgg").warning(
            "--redis-sharded-pubsub is ignored: the pub/sub kind follows the server (sharded on a Redis Cluster)"
        )
    try:
        return run(args, config)
    except ConfigError as exc:  # e.g. embedded stores asked for but not installed
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, config: Config) -> int:
    # The commands' modules are imported here, not at the top: `serve` must set up its metrics
    # directory before anything imports prometheus_client (runtime/metrics_dir.py).
    if args.command == "serve":
        from runtime.embedded import DataDirInUse
        from runtime.metrics_dir import metrics_directory

        with metrics_directory() as metrics_dir:
            from runtime.serve import serve

            try:
                code = serve(config, metrics_dir)
            except DataDirInUse as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        # Everything is stopped, written and closed: skip the interpreter's teardown of the drivers'
        # modules, which took ~0.9 s on a loaded 2-core machine (a third of a 3 s --shutdown-grace).
        logging.shutdown()
        os._exit(code)
    from runtime import cli

    if args.command == "import":
        return cli.cmd_import(config, args.file)
    if args.command == "seed-demo":
        return cli.cmd_seed_demo(config)
    if args.command == "stats":
        return cli.cmd_stats(config, args.profile_ids)
    if args.command == "reconcile":
        return cli.cmd_reconcile(config, args.now)
    if args.command == "presence":
        return cli.cmd_presence(config, args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
