"""User mistakes end in one line on stderr and exit status 2, never in a stack trace."""

import argparse
import sys


class BachsformerError(Exception):
    """Bad input from a user (file, option, config, checkpoint); the message is one line."""


def check_at_least(config, minimum, *keys: str) -> None:
    """ValueError starting with the key when a field of a config dataclass is below `minimum`
    (config.py turns it into a ConfigError naming the section)."""
    for key in keys:
        if getattr(config, key) < minimum:
            raise ValueError(f"{key}: must be at least {minimum}, got {getattr(config, key)}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option prints one line (`error: ...`) instead of usage and an error."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def exit_on_user_error(main) -> None:
    """Run `main()`; a BachsformerError becomes `error: <message>` on stderr and exit status 2.

    Ctrl-C ends with exit status 130 and no stack trace (training has saved `last` by then).
    """
    try:
        main()
    except BachsformerError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
