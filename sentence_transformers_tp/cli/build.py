"""``st-tp build``: save a ready SentenceTransformer folder."""

from __future__ import annotations

import argparse

from sentence_transformers_tp.cli.options import add_model_options, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    parser = subparsers.add_parser(
        "build",
        help="build a TP model from a backbone and save it as a SentenceTransformer folder",
        description="Build a SentenceTransformer with a TokenPrependingTransformer module and save it. Load it with "
        "SentenceTransformer(OUT, trust_remote_code=True).",
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="backbone: hub id, local checkpoint, .gguf or named backbone (default: the preset's, else smollm2)",
    )
    add_model_options(parser, model_flag=False)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and save the model; print where it went and its settings."""
    from sentence_transformers_tp.factory import save_model

    model = model_from_args(args)
    save_model(model, args.out)
    print(f"Saved {model[0]!r} to {args.out}")
    print(f'Load it with: SentenceTransformer("{args.out}", trust_remote_code=True)')
    return 0
