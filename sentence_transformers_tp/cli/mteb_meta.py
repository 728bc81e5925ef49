"""``st-tp mteb-meta``: the ``mteb.ModelMeta`` of a TP model published on the hub, as JSON or Python code."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentence_transformers_tp.cli.options import add_model_options, model_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``mteb-meta`` subcommand."""
    parser = subparsers.add_parser(
        "mteb-meta",
        help="print the mteb.ModelMeta of a model published on the hub (MTEB leaderboard metadata) as JSON or Python",
        description="Build, offline, the mteb.ModelMeta of a TP model pushed to the hub as --name at commit "
        "--revision: parameters, embedding size, max tokens, license / languages / adapted_from of the backbone, "
        "the datasets its settings were tuned on, and mteb's own sentence-transformers loader with "
        "trust_remote_code=True (so upstream mteb loads the repository with its saved settings). --model is the "
        "model as pushed (e.g. the saved folder).",
    )
    add_model_options(parser)
    parser.add_argument(
        "--name", required=True, metavar="ORG/REPO", help="the hub repository the model is published to"
    )
    parser.add_argument(
        "--revision",
        required=True,
        help="the hub commit of that repository (the hash in the URL push_to_hub returns); 'none' declares the "
        "metadata valid for every revision",
    )
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
        revision=None if args.revision.lower() == "none" else args.revision,
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
