"""How every command runs: its configuration from the environment, its
logging, and a user's mistake shown as one line without a traceback."""

import logging
import sys

from plugin.config import Config, ConfigError


def execute(command: str, func, args, user_errors: tuple) -> int:
    """func(args, config)'s exit status: 2 for a configuration error, 1 for
    one of user_errors (their message printed)."""
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"calico-libnetwork: configuration error: {exc}", file=sys.stderr)
        return 2
    # The daemon logs its work; the operating commands print only their answer.
    quiet = logging.INFO if command in ("run", "agent") else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if config.debug else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return func(args, config)
    except user_errors as exc:
        print(f"calico-libnetwork: {exc}", file=sys.stderr)
        return 1
