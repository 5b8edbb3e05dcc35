"""Subcommands of ``iqa-robustness``: one module each, with ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` (called with the parsed args, returns
the exit status).
"""
