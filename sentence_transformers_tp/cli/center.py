"""``st-tp center``: fit centering / whitening on unlabeled sentences and save the model with it."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentence_transformers_tp.cli.options import (
    add_model_options,
    check_model_spec,
    check_output_folder,
    model_from_args,
)

#: Inputs at least this long get a progress bar.
PROGRESS_BAR_MIN_INPUTS = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``center`` subcommand."""
    parser = subparsers.add_parser(
        "center",
        help="fit centering / whitening on unlabeled sentences and save the model with it",
        description="Embed unlabeled sentences with the model, fit a Centering module on their embeddings (mean "
        "subtraction, or whitening as in Su et al. 2021) and save the model with the module at its end (a model "
        "that already ends with one is refitted). Load it with SentenceTransformer(OUT, trust_remote_code=True).",
    )
    parser.add_argument(
        "--sentences",
        required=True,
        metavar="FILE_OR_TASK:SPLIT",
        help="unlabeled sentences: a text file (one per line), an STS .tsv file (both sentence columns) or "
        "TASK:SPLIT of --data-dir (e.g. stsb:train); duplicates are dropped, scores never read",
    )
    parser.add_argument("--data-dir", help="data root with sts/<task>/<split>.tsv (for --sentences TASK:SPLIT)")
    parser.add_argument(
        "--max-sentences", type=int, help="use this many sentences drawn at random (seeded; default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-sentences draw (default: 0)")
    parser.add_argument("--mode", choices=["center", "whiten"], default="center", help="(default: center)")
    parser.add_argument(
        "--n-components", type=int, help="whitening: keep the top K components (the embedding then has K dimensions)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default: 32)")
    add_model_options(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Fail before any work on a bad model spec, output path or settings.

    Raises:
        ValueError: On an output path that is a file, not writable, or a non-empty folder that is not a saved model
            (which saving would replace), or settings that do not fit together.
        FileNotFoundError: On a model path that does not exist.
    """
    from sentence_transformers_tp.factory import is_saved_model

    check_output_folder(args.out, "--out")
    out = Path(args.out).expanduser()
    if out.is_dir() and any(out.iterdir()) and not is_saved_model(out):
        raise ValueError(f"--out {args.out}: a non-empty folder that is not a saved model; choose another folder")
    check_model_spec(args.model)
    if args.n_components is not None:
        if args.mode != "whiten":
            raise ValueError("--n-components applies to --mode whiten only")
        if args.n_components < 1:
            raise ValueError(f"--n-components must be positive, got {args.n_components}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")


def run(args: argparse.Namespace) -> int:
    """Read the sentences, fit the module and save the model."""
    from sentence_transformers_tp.centering import centering_module, fit, read_sentences
    from sentence_transformers_tp.factory import save_model

    check_args(args)
    sentences = read_sentences(
        args.sentences, data_dir=args.data_dir, max_sentences=args.max_sentences, seed=args.seed
    )
    if args.mode == "whiten" and len(sentences) < 2:
        raise ValueError(f"whitening needs at least 2 distinct sentences, {args.sentences} has {len(sentences)}")
    model = model_from_args(args)
    fit(
        model,
        sentences,
        mode=args.mode,
        n_components=args.n_components,
        batch_size=args.batch_size,
        show_progress_bar=len(sentences) >= PROGRESS_BAR_MIN_INPUTS,
    )
    save_model(model, args.out)
    print(f"Fitted {centering_module(model)!r} on {len(sentences)} sentences; saved the model to {args.out}")
    print(f'Load it with: SentenceTransformer("{args.out}", trust_remote_code=True)')
    return 0
