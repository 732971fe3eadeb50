"""The ``igw`` command: configure from the environment and serve."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

import anyio

from igw_core.config import ConfigError, Settings, load_settings
from igw_io.logs import configure_logging, secrets_of
from igw_standalone.server import Server

EXIT_CONFIG = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (flags override the environment)."""
    parser = argparse.ArgumentParser(
        prog="igw", description="igw: an OpenAI-compatible LLM inference gateway."
    )
    parser.add_argument("--host", help="listen address (overrides SERVER_HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides SERVER_PORT)")
    parser.add_argument("--workers", type=int, default=1,
                        help="number of worker processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--demo", action="store_true", default=None,
                        help="add the built-in keyless 'demo' provider (same as IGW_DEMO=true)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Return the settings for ``env`` with command-line overrides applied.

    Raises:
        ConfigError: a variable or flag is invalid.
    """
    env = dict(env)
    if args.host:
        env["SERVER_HOST"] = args.host
    if args.port is not None:
        env["SERVER_PORT"] = str(args.port)
    return load_settings(env, demo=args.demo)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the gateway; exit with status 2 on a refused configuration."""
    args = parse_args(argv)
    try:
        settings = settings_from(args, dict(os.environ))
    except ConfigError as error:
        print("igw: refusing to start, invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.workers < 1:
        print("igw: --workers must be at least 1", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    configure_logging(development=settings.is_development, secrets=secrets_of(settings))
    if args.workers > 1:
        from igw_standalone.workers import run_workers

        sys.exit(run_workers(settings, args.workers))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(Server(settings).serve)
    except OSError as error:  # e.g. the port is taken: one clear line, not a traceback
        print(f"igw: cannot serve: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
