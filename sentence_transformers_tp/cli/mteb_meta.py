"""``st-tp mteb-meta``: the ``mteb.ModelMeta`` of a TP model, as JSON (``model_meta.json``) or Python code."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentence_transformers_tp.cli.options import add_model_options, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mteb-meta`` subcommand."""
    parser = subparsers.add_parser(
        "mteb-meta",
        help="print the mteb.ModelMeta of a model (MTEB leaderboard metadata) as JSON or Python",
        description="Build the mteb.ModelMeta of a TP model offline: unique name, revision (hash of backbone + TP "
        "settings), parameters, embedding size, max tokens, license / languages / adapted_from of the backbone, "
        "the datasets its settings were tuned on, and a loader that rebuilds it (meta.load_model()).",
    )
    add_model_options(parser)
    parser.add_argument("--name", help="model name 'org/name' (default: the model's own name)")
    parser.add_argument("--revision", help="model revision (default: tp-<hash of backbone and TP settings>)")
    parser.add_argument("--release-date", help="YYYY-MM-DD (default: today, UTC)")
    parser.add_argument(
        "--training-dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra MTEB dataset the settings were tuned on (repeatable)",
    )
    parser.add_argument(
        "--format", choices=["json", "python"], default="json", help="json (as model_meta.json) or python code"
    )
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of printing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the model, print (or write) its metadata."""
    from sentence_transformers_tp.evaluation.model_meta import model_meta_to_json, to_model_meta

    model = model_from_args(args)
    meta = to_model_meta(
        model,
        name=args.name,
        revision=args.revision,
        release_date=args.release_date,
        training_datasets=args.training_dataset,
    )
    text = model_meta_to_json(meta) if args.format == "json" else meta.to_python()
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0
