"""``st-tp tune-retrieval``: search query / document templates, TP and the output layer for retrieval on a
BEIR-layout train split (nDCG@10).

A thin layer over :func:`sentence_transformers_tp.tuning.tune_retrieval`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune-retrieval`` subcommand."""
    parser = subparsers.add_parser(
        "tune-retrieval",
        help="search query / document templates, TP bands and the output layer for retrieval (nDCG@10)",
        description="One all-layer pass per query setting and per document setting (sentence_transformers_tp."
        "tuning.retrieval) on a seeded sample of queries and a corpus of their relevant documents plus random "
        "others; every (query, document, layer) cell is scored by nDCG@10 on half of the queries and the choice is "
        "checked on the other half. The winner is never below vanilla PromptEOL; ties go to the simpler setting.",
    )
    parser.add_argument("--model", default="smollm2", help="backbone (default: smollm2)")
    parser.add_argument("--retrieval", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="train", help="qrels split to tune on (default: train)")
    parser.add_argument("--sample", type=int, default=200, help="queries drawn at random (default: 200; 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query / corpus draws (default: 0)")
    parser.add_argument(
        "--corpus-sample",
        type=int,
        default=800,
        help="random documents added to the relevant ones (default: 800; -1: the full corpus)",
    )
    parser.add_argument("--held-out", type=float, default=0.5, help="fraction of queries kept out (default: 0.5)")
    parser.add_argument(
        "--query-templates", default="prompteol,retrieval_query", help="query templates (default: %(default)s)"
    )
    parser.add_argument(
        "--document-templates",
        default="prompteol,retrieval_document",
        help="document templates (default: %(default)s)",
    )
    parser.add_argument("--tp-bands", default="1-4", help="TP bands tp_start-tp_exit (default: 1-4)")
    parser.add_argument(
        "--no-default", action="store_true", help="do not search the model's own setting (its preset combination)"
    )
    parser.add_argument(
        "--max-seq-length", type=int, default=512, help="token budget of a document prompt (default: 512)"
    )
    parser.add_argument("--min-gain", type=float, default=0.5, help="nDCG@10 points a more complex setting must gain")
    parser.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (default: 16)")
    parser.add_argument(
        "--corpus-demonstrations",
        type=int,
        default=0,
        metavar="N",
        help="also search the best query and document settings with N in-context demonstrations from the corpus: "
        "documents drawn at random (seeded by --seed), never one relevant to a query of --split, each cut to its "
        "title (else its first sentence, at most 40 words) and labelled with the backbone's own greedy one-word "
        "answer; on the query side, the document side and both (one more pass per side), kept only if they win "
        "(default: 0, none)",
    )
    parser.add_argument(
        "--hybrid",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="then choose the hybrid retriever's channels, fusion rule and weights (the winner's dense channel and "
        "BM25, on the same tuning / held-out queries); with --out also its 'hybrid' block (default: off)",
    )
    parser.add_argument(
        "--sparse", action="store_true", help="with --hybrid, also search the model's own PromptReps sparse channel"
    )
    parser.add_argument(
        "--out",
        help="store the winner as the query / document task_settings of this preset YAML (and, with --hybrid, the "
        "fusion as its hybrid block)",
    )
    parser.add_argument("--json", help="write the full result as JSON to this file")
    parser.add_argument("--markdown", help="write the report as markdown to this file")
    parser.add_argument("--checkpoint-dir", help="folder for the states of finished passes; a rerun reuses them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Search, print the report, write what was asked for."""
    from sentence_transformers_tp.cli.options import (
        check_output_folder,
        check_output_path,
        command_line,
        load_module,
        parse_template_names,
        parse_tp_bands,
        write_outputs,
    )
    from sentence_transformers_tp.templates import canonical_template_name
    from sentence_transformers_tp.tuning import tune_retrieval, write_task_settings
    from sentence_transformers_tp.tuning.retrieval import write_hybrid

    if not Path(args.retrieval).is_dir():
        raise FileNotFoundError(f"--retrieval {args.retrieval}: no such folder")
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        check_output_path(path, flag)
    check_output_folder(args.checkpoint_dir, "--checkpoint-dir")
    if args.sparse and not args.hybrid:
        raise ValueError("--sparse searches the sparse channel of the fusion stage: add --hybrid")
    if args.corpus_demonstrations < 0:
        raise ValueError(f"--corpus-demonstrations {args.corpus_demonstrations}: a number of documents, 0 or more")
    if args.out and not Path(args.out).is_file():
        raise FileNotFoundError(f"--out {args.out}: no such preset file (the settings are added to an existing one)")
    templates = {}
    for flag, text in (("--query-templates", args.query_templates), ("--document-templates", args.document_templates)):
        templates[flag] = parse_template_names(text, flag)
        if "prompteol" not in {canonical_template_name(t) for t in templates[flag]}:
            raise ValueError(f"{flag}: must include prompteol (the vanilla baseline every winner is compared with)")

    bands = parse_tp_bands(args.tp_bands)
    module = load_module(args.model)
    result = tune_retrieval(
        module,
        args.retrieval,
        args.split,
        sample=args.sample or None,
        seed=args.seed,
        corpus_sample=None if args.corpus_sample < 0 else args.corpus_sample,
        held_out=args.held_out,
        query_templates=templates["--query-templates"],
        document_templates=templates["--document-templates"],
        tp_bands=bands,
        include_default=not args.no_default,
        max_seq_length=args.max_seq_length,
        min_gain=args.min_gain,
        batch_size=args.batch_size,
        checkpoint_dir=args.checkpoint_dir,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        hybrid=args.hybrid,
        sparse=args.sparse,
        corpus_demonstrations=args.corpus_demonstrations,
    )
    report = result.to_markdown()
    print(report)
    print(
        f"Build the winner with: TokenPrependingTransformer({args.model!r}, task_settings={result.task_settings()!r})"
    )
    data = result.to_dict()
    data["command"] = command_line("tune-retrieval")
    if result.hybrid:
        block = {key: value for key, value in result.hybrid["block"].items() if key != "score"}
        print(f"Tuned fusion: hybrid={block!r} (HybridRetriever.from_model uses the preset's hybrid block)")
    if args.out:
        write_task_settings(data, args.out, data["command"])
        if result.hybrid:
            write_hybrid(data, args.out, data["command"])
    write_outputs([(args.json, json.dumps(data, indent=2)), (args.markdown, report)])
    return 0
