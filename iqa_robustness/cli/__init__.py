"""The ``iqa-robustness`` command line: :mod:`iqa_robustness.cli.main` and one module per subcommand."""


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""
