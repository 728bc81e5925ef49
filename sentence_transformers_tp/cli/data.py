"""``st-tp data``: fetch the STS, SentEval transfer and BEIR (SciFact) data into the evaluators' layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentence_transformers_tp.cli.options import require_module


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand."""
    from sentence_transformers_tp.evaluation.download import DEFAULT_DATA_DIR, SOURCES

    parser = subparsers.add_parser(
        "data",
        help="download the STS, SentEval transfer and SciFact data into the layout st-tp evaluate / tune read",
        description="Fetch the evaluation data from the Hugging Face Hub (datasets.load_dataset; MTEB's own copies "
        "of STS12-16, STS-B, SICK-R and SciFact at MTEB's pinned revisions, public copies of the SentEval transfer "
        "tasks) and write it as DIR/sts/<task>/<split>.tsv, DIR/classification/<task>/<split>.tsv and "
        "DIR/retrieval/scifact/ (BEIR layout). Tasks already in DIR are skipped. Needs network access; offline "
        "(HF_HUB_OFFLINE=1) it says how to get the data instead.",
    )
    parser.add_argument(
        "--out", default=DEFAULT_DATA_DIR, metavar="DIR", help=f"data root (default: {DEFAULT_DATA_DIR})"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help=f"tasks ({', '.join(SOURCES)}) or groups (sts, transfer, retrieval); default: all",
    )
    parser.add_argument("--force", action="store_true", help="fetch tasks already present again")
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the tasks (present, partial or missing in DIR) and their Hub datasets; fetch nothing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch the data (or list the sources)."""
    from sentence_transformers_tp.evaluation.download import SOURCES, download_data, resolve_tasks, task_paths

    tasks = resolve_tasks(args.tasks)
    if args.list:
        for task in tasks:
            found = [path.is_file() for path in task_paths(args.out, task)]
            state = "present" if all(found) else "partial" if any(found) else "missing"
            print(f"{task:8s} {SOURCES[task].kind:15s} {state:8s} {', '.join(SOURCES[task].datasets)}")
        return 0
    require_module("datasets", "st-tp data", "sentence-transformers-tp[eval]")
    written = download_data(args.out, tasks, force=args.force, progress=print)
    root = Path(args.out).expanduser()
    print(f"Wrote {sum(len(paths) for paths in written.values())} files under {root}. Next:")
    print(f"  st-tp evaluate --model smollm2 --data-dir {args.out} --split dev")
    if "scifact" in written:
        print(f"  st-tp evaluate --model smollm2 --retrieval {args.out}/retrieval/scifact --retrieval-split test")
    return 0
