"""The ``st-tp`` command line: a thin layer over the library, one file per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to the function
that runs it with the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

#: Subcommand modules, in the order ``st-tp --help`` lists them.
SUBCOMMANDS = (
    "build",
    "encode",
    "evaluate",
    "mteb_meta",
    "tune",
    "tune_boosters",
    "tune_retrieval",
    "center",
    "demo",
    "cache",
    "data",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``st-tp`` argument parser with every available subcommand."""
    from sentence_transformers_tp import __version__

    parser = argparse.ArgumentParser(
        prog="st-tp",
        description="Token Prepending (TP) sentence embeddings from decoder-only LLMs, as sentence-transformers models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress information")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"sentence_transformers_tp.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``st-tp``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError, KeyError) as error:  # user errors: one line, no traceback
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        message = " ".join(str(message).split())  # one line, also for messages that put the fix on its own line
        print(f"st-tp {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
