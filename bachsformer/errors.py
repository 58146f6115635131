"""The one base class for mistakes a user can make: scripts print these in one line, exit 2."""

import sys


class BachsformerError(Exception):
    """Bad input from a user (file, option, config, checkpoint); the message is one line."""


def exit_on_user_error(main) -> None:
    """Run `main()`; a BachsformerError becomes `error: <message>` on stderr and exit status 2."""
    try:
        main()
    except BachsformerError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
