"""``st-tp build``: save a ready SentenceTransformer folder."""

from __future__ import annotations

import argparse

from sentence_transformers_tp.cli.options import add_model_options, check_output_folder, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    parser = subparsers.add_parser(
        "build",
        help="build a TP model from a backbone and save it as a SentenceTransformer folder",
        description="Build a SentenceTransformer with a TokenPrependingTransformer module and save it. Load it with "
        "SentenceTransformer(OUT, trust_remote_code=True). The backbone is --model (as in the other subcommands) or, "
        "equivalently, the positional MODEL.",
    )
    parser.add_argument(
        "positional_model",
        nargs="?",
        metavar="MODEL",
        help="same as --model: backbone (hub id, local checkpoint, .gguf or built-in backbone)",
    )
    add_model_options(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build and save the model; print where it went and its settings."""
    from sentence_transformers_tp.factory import save_model

    if args.positional_model is not None and args.model is not None and args.positional_model != args.model:
        raise ValueError(
            f"two models given ({args.positional_model!r} and --model {args.model!r}); give one, with --model"
        )
    args.model = args.model or args.positional_model
    check_output_folder(args.out, "--out")
    model = model_from_args(args)
    save_model(model, args.out)
    print(f"Saved {model[0]!r} to {args.out}")
    print(f'Load it with: SentenceTransformer("{args.out}", trust_remote_code=True)')
    return 0
