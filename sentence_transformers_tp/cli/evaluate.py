"""``st-tp evaluate``: STS (and SentEval transfer / MTEB) scores of a TP model, optionally against vanilla."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sentence_transformers_tp.cli.options import (
    add_model_options,
    check_model_spec,
    check_output_folder,
    check_output_path,
    command_line,
    model_from_args,
    require_module,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on the STS suite (and SentEval transfer tasks), optionally against vanilla prompting",
        description="Evaluate a model on the STS tasks of a data directory (cosine vs gold, Spearman x 100, "
        "SentEval 'all' setting) and print a markdown table. --compare-vanilla adds the same template without TP "
        "at the same output layer and at the template's usual layer, so the effect of TP is separated from the "
        "effect of the exit layer; all rows share one loaded backbone.",
    )
    add_model_options(parser)
    parser.add_argument(
        "--data-dir", help="data root with sts/<task>/<split>.tsv (and classification/); needed for STS and transfer"
    )
    parser.add_argument(
        "--retrieval",
        metavar="FOLDER",
        help="also evaluate retrieval on a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): "
        "nDCG@10, MRR@10, Recall@10/100; --limit/--sample select queries",
    )
    parser.add_argument(
        "--retrieval-split", help="qrels split of --retrieval (default: test if present, else the only split)"
    )
    parser.add_argument(
        "--corpus-sample",
        type=int,
        metavar="N",
        help="retrieval: search only the relevant documents of the evaluated queries plus N random others (seeded "
        "by --seed; a quick run, scores are higher than on the full corpus)",
    )
    parser.add_argument(
        "--hybrid",
        action="store_true",
        help="with --retrieval: score BM25 (bm25s), the model (dense), the --sparse-model channel and their fusion "
        "in one run sharing the encodings, one row each; the fusion is --fusion/--fusion-weights, else the "
        "backbone preset's tuned 'hybrid' block, else chosen on half of the queries (held-out half recorded)",
    )
    parser.add_argument(
        "--sparse-model",
        metavar="PATH",
        help="--hybrid: a saved SparseEncoder for the sparse channel (loaded with trust_remote_code=True)",
    )
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="--hybrid: add the PromptReps sparse channel of the model's own backbone (from the same forward as the "
        "dense embedding)",
    )
    parser.add_argument("--fusion", choices=["rsf", "rrf"], help="--hybrid: the fusion rule (default: rsf)")
    parser.add_argument(
        "--fusion-weights",
        metavar="CHANNEL=W,...",
        help="--hybrid: fusion weights, e.g. dense=0.3,bm25=0.7 (channels: dense, sparse, bm25)",
    )
    parser.add_argument(
        "--hybrid-index",
        metavar="DIR",
        help="--hybrid: save the index (embeddings, sparse vectors, bm25s index) to DIR, or reuse it when DIR holds "
        "the index of the same corpus and models (a changed corpus or model is an error)",
    )
    parser.add_argument(
        "--hybrid-out",
        metavar="PRESET",
        help="--hybrid: store the fusion chosen on half of the queries (checked on the other half) as the 'hybrid' "
        "block of this preset YAML, e.g. the backbone's configs/<backbone>.yaml (the run ignores an existing block)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help="tasks to run: STS12..STS16, STS-B, SICK-R and/or MR, CR, SUBJ, MPQA, SST2, TREC, MRPC (default: every "
        "STS task that has the split, plus every transfer task with --transfer)",
    )
    parser.add_argument(
        "--split", default="test", help="STS split: test (the paper's protocol) or dev (SICK-R: trial); default test"
    )
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument(
        "--limit", type=int, help="use only the first N pairs of each STS task (N examples per transfer file)"
    )
    subset.add_argument(
        "--sample",
        type=int,
        help="use N pairs of each STS task drawn at random, seeded by --seed: a representative quick estimate of "
        "genre-ordered files such as STS-B dev (transfer tasks: N stratified examples per file)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default: 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default: 32)")
    parser.add_argument(
        "--senteval-text", action="store_true", help="use the tokenized .senteval.tsv text where present"
    )
    parser.add_argument(
        "--compare-vanilla",
        action="store_true",
        help="add rows without TP at the same output layer and at the template's usual layer (-1 PromptEOL/MetaEOL, "
        "-2 Pretended CoT/Knowledge)",
    )
    parser.add_argument("--transfer", action="store_true", help="also run the SentEval transfer tasks")
    parser.add_argument("--kfold", type=int, default=10, help="transfer tasks: cross-validation folds (default: 10)")
    parser.add_argument(
        "--mteb", action="store_true", help="also run the local STS suite (and --retrieval) through mteb.evaluate"
    )
    parser.add_argument(
        "--output-folder",
        metavar="DIR",
        help="with --mteb: write the MTEB results as DIR/results/<org__name>/<revision>/<Task>.json plus "
        "model_meta.json (the layout of the MTEB results repository; mteb.ResultCache(DIR) loads it)",
    )
    parser.add_argument(
        "--hub-name",
        metavar="ORG/REPO",
        help="with --mteb: the hub repository the model is published to; its MTEB results (the model row, not the "
        "--compare-vanilla rows) are filed under this name and --hub-revision with to_model_meta (default: the "
        "automatic local name and a settings hash)",
    )
    parser.add_argument(
        "--hub-revision", help="with --hub-name: the hub commit of the published model ('none': any revision)"
    )
    parser.add_argument("--no-sts", action="store_true", help="skip the direct STS evaluation")
    parser.add_argument("--json", metavar="FILE", help="write every result (one entry per row) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)


def partition_tasks(tasks: list[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """Split ``--tasks`` into STS and transfer task keys (``None``: not restricted).

    Raises:
        ValueError: For a name that is neither an STS nor a transfer task.
    """
    from sentence_transformers_tp.data import (
        STS_TASKS,
        TRANSFER_TASKS,
        normalize_sts_task,
        normalize_transfer_task,
    )

    if tasks is None:
        return None, None
    sts: list[str] = []
    transfer: list[str] = []
    for name in tasks:
        try:
            sts.append(normalize_sts_task(name))
            continue
        except ValueError:
            pass
        try:
            transfer.append(normalize_transfer_task(name))
        except ValueError:
            raise ValueError(
                f"unknown task {name!r}; STS tasks: {', '.join(STS_TASKS)}; "
                f"transfer tasks: {', '.join(TRANSFER_TASKS)}"
            ) from None
    return sts, transfer


def check_data(args: argparse.Namespace, sts_tasks: list[str] | None, run_sts: bool) -> None:
    """Fail early (before loading the model) on a missing data directory or STS split.

    Raises:
        FileNotFoundError: Naming what is missing.
    """
    from sentence_transformers_tp.data import list_sts_splits, load_sts, resolve_sts_split

    root = Path(args.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {args.data_dir}")
    if not run_sts:
        return
    if sts_tasks is None:
        if not any(resolve_sts_split(root, task, args.split) for task, _ in list_sts_splits(root)):
            held = ", ".join(f"{t}/{s}" for t, s in list_sts_splits(root)) or "nothing"
            raise FileNotFoundError(f"no STS task in {args.data_dir} has split {args.split!r} (it holds: {held})")
        return
    for task in sts_tasks:
        if resolve_sts_split(root, task, args.split) is None:
            load_sts(root, task, args.split)  # raises FileNotFoundError naming the available splits


def run(args: argparse.Namespace) -> int:
    """Evaluate every planned variant of the model; print the tables, write the JSON."""
    from sentence_transformers_tp.evaluation import (
        compare,
        evaluate_sts,
        evaluate_transfer,
        iter_variants,
        plan_variants,
        result_to_dict,
    )
    from sentence_transformers_tp.evaluation.model_meta import check_hub_name
    from sentence_transformers_tp.evaluation.variants import ROLE_MODEL

    for name in ("limit", "sample"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be positive, got {value}")
    sts_tasks, transfer_tasks = partition_tasks(args.tasks)
    has_data = args.data_dir is not None or args.tasks is not None or args.transfer or not args.retrieval
    run_sts = has_data and not args.no_sts and (sts_tasks is None or bool(sts_tasks))
    run_mteb_sts = has_data and args.mteb and (sts_tasks is None or bool(sts_tasks))
    run_transfer = bool(transfer_tasks) or (args.transfer and transfer_tasks is None)
    run_retrieval = args.retrieval is not None
    run_mteb = run_mteb_sts or (args.mteb and run_retrieval)
    if not (run_sts or run_mteb or run_transfer or run_retrieval):
        raise ValueError("nothing to evaluate: the selected tasks and --no-sts leave no evaluation")
    if args.output_folder and not args.mteb:
        raise ValueError("--output-folder writes MTEB results: add --mteb")
    if (args.hub_name or args.hub_revision) and not args.mteb:
        raise ValueError("--hub-name / --hub-revision name the MTEB results: add --mteb")
    if args.hub_name and args.hub_revision is None:
        raise ValueError("--hub-name needs --hub-revision: the hub commit of the published model (or 'none')")
    if args.hub_revision and not args.hub_name:
        raise ValueError("--hub-revision belongs to --hub-name (the hub repository of the published model)")
    if args.hub_name:
        check_hub_name(args.hub_name)
    if args.data_dir is None and (run_sts or run_mteb_sts or run_transfer):
        raise ValueError("--data-dir is required for STS and transfer tasks (or give only --retrieval FOLDER)")
    if run_sts or run_mteb_sts or run_transfer:
        check_data(args, sts_tasks, run_sts or run_mteb_sts)
    if run_retrieval:
        from sentence_transformers_tp.evaluation.retrieval import resolve_beir_split

        args.retrieval_split = resolve_beir_split(args.retrieval, args.retrieval_split)
        if args.corpus_sample is not None and args.corpus_sample < 0:
            raise ValueError(f"--corpus-sample must be non-negative, got {args.corpus_sample}")
    hybrid_weights = _check_hybrid_args(args, run_retrieval)
    # Dependencies and output paths are checked before any work starts.
    if run_mteb:
        require_module("mteb", "--mteb", "sentence-transformers-tp[eval]")
    if run_transfer:
        require_module("sklearn", "transfer tasks", "sentence-transformers-tp[eval]")
    check_output_path(args.json, "--json")
    check_output_folder(args.output_folder, "--output-folder")
    check_model_spec(args.model)

    model = model_from_args(args)
    variants = plan_variants(model, compare_vanilla=args.compare_vanilla)
    progress = not args.no_progress
    rows: dict[str, list[tuple[str, dict[str, Any]]]] = {"sts": [], "mteb": [], "transfer": [], "retrieval": []}
    for index, (variant, configured) in enumerate(iter_variants(model, variants), start=1):
        print(f"[{index}/{len(variants)}] {variant.label}", file=sys.stderr, flush=True)
        common = {"data_dir": str(args.data_dir), "split": args.split, "label": variant.label}
        if run_sts:
            start = time.perf_counter()
            result = evaluate_sts(
                configured,
                args.data_dir,
                tasks=sts_tasks,
                split=args.split,
                limit=args.limit,
                sample=args.sample,
                sample_seed=args.seed,
                senteval_text=args.senteval_text,
                batch_size=args.batch_size,
                show_progress_bar=progress,
                config=variant.config,
            )
            rows["sts"].append((variant.label, _entry(result_to_dict(result), common, start)))
        hybrid_setting = None
        if run_retrieval and args.hybrid:
            hybrid_rows, hybrid = _run_hybrid(configured, args, hybrid_weights, variant.config, common)
            rows["retrieval"].extend(hybrid_rows)
            hybrid_setting = hybrid.setting
            if args.hybrid_out is not None and ROLE_MODEL in variant.roles:
                _write_hybrid_block(hybrid, args)
        elif run_retrieval:
            rows["retrieval"].append((variant.label, _run_retrieval(configured, args, variant.config, common)))
        if run_mteb:
            tasks_for_mteb = sts_tasks if run_mteb_sts else []
            published = args.hub_name is not None and ROLE_MODEL in variant.roles
            data = _run_mteb(configured, args, tasks_for_mteb, variant.config, common, published=published)
            rows["mteb"].append((variant.label, data))
        if run_mteb and hybrid_setting is not None:
            rows["mteb"].append(_run_hybrid_mteb(configured, args, hybrid_setting, variant.config, common))
        if run_transfer:
            start = time.perf_counter()
            result = evaluate_transfer(
                configured,
                args.data_dir,
                tasks=transfer_tasks,
                limit=args.limit if args.sample is None else args.sample,
                kfold=args.kfold,
                batch_size=args.batch_size,
                show_progress_bar=progress,
                config=variant.config,
            )
            rows["transfer"].append((variant.label, _entry(result_to_dict(result), common, start)))

    titles = {
        "sts": "STS (Spearman x 100)",
        "mteb": "Via MTEB (main score x 100: cosine Spearman, nDCG@10)",
        "transfer": "Transfer",
        "retrieval": "Retrieval (x 100)",
    }
    tables = [(kind, entries) for kind, entries in rows.items() if entries]
    for number, (kind, entries) in enumerate(tables):
        if len(tables) > 1:
            print(("\n" if number else "") + f"### {titles[kind]}\n")
        if kind == "retrieval":
            from sentence_transformers_tp.evaluation.retrieval import retrieval_table

            print(retrieval_table(entries), end="")
        else:
            print(compare(entries, label_header="Model"), end="")
    if args.output_folder:
        print(f"Wrote MTEB results under {Path(args.output_folder) / 'results'}", file=sys.stderr)
    for kind, entries in tables:
        for label, data in entries:
            print(f"{kind}: {label}: {data['settings']['seconds']:.1f} s", file=sys.stderr)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = [data for _, entries in tables for _, data in entries]
        out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"Wrote {len(payload)} results to {out}", file=sys.stderr)
    return 0


def _entry(data: dict[str, Any], common: dict[str, Any], start: float) -> dict[str, Any]:
    """A result dict with the row label and the run's settings (wall time included)."""
    data["label"] = common["label"]
    data["settings"] = {
        **data.get("settings", {}),
        "data_dir": common["data_dir"],
        "split": common["split"],
        "seconds": round(time.perf_counter() - start, 2),
    }
    return data


def _run_mteb(
    model: Any,
    args: argparse.Namespace,
    sts_tasks: list[str] | None,
    config: dict[str, Any],
    common: dict[str, Any],
    *,
    published: bool = False,
) -> dict[str, Any]:
    """Run the local STS suite through ``mteb.evaluate`` and convert the result (``published``: under the hub
    name and revision of ``--name`` / ``--revision``)."""
    import mteb

    from sentence_transformers_tp.evaluation import local_sts_tasks, mteb_result_to_dict

    start = time.perf_counter()
    tasks = []
    if sts_tasks is None or sts_tasks:
        tasks = local_sts_tasks(
            args.data_dir,
            sts_tasks,
            args.split,
            senteval_text=args.senteval_text,
            limit=args.limit,
            sample=args.sample,
            sample_seed=args.seed,
        )
    if args.retrieval is not None:
        from sentence_transformers_tp.evaluation.mteb_retrieval import local_retrieval_task

        tasks.append(
            local_retrieval_task(
                args.retrieval,
                args.retrieval_split,
                limit=args.limit,
                sample=args.sample,
                sample_seed=args.seed,
                corpus_sample=args.corpus_sample,
            )
        )
    from sentence_transformers_tp.evaluation.model_meta import evaluate_to_results_folder, to_model_meta, wrap_for_mteb

    revision = None if (args.hub_revision or "").lower() == "none" else args.hub_revision
    meta = to_model_meta(model, name=args.hub_name, revision=revision) if published else None
    if args.output_folder:
        result = evaluate_to_results_folder(
            model,
            tasks,
            args.output_folder,
            meta=meta,
            encode_kwargs={"batch_size": args.batch_size},
            show_progress_bar=not args.no_progress,
        )
    else:
        # The model's own ModelMeta: mteb's default wrapper derives it with deprecated calls.
        result = mteb.evaluate(
            wrap_for_mteb(model, meta),
            tasks,
            cache=None,
            show_progress_bar=not args.no_progress,
            encode_kwargs={"batch_size": args.batch_size},
        )
    data = _entry(mteb_result_to_dict(result, config=config), common, start)
    data["settings"].update({"limit": args.limit, "senteval_text": args.senteval_text, "batch_size": args.batch_size})
    if args.sample is not None:
        data["settings"].update({"sample": args.sample, "sample_seed": args.seed})
    return data


def _run_retrieval(
    model: Any, args: argparse.Namespace, config: dict[str, Any], common: dict[str, Any]
) -> dict[str, Any]:
    """Evaluate retrieval on the ``--retrieval`` folder and return the result dict with the run's settings."""
    from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval

    start = time.perf_counter()
    result = evaluate_retrieval(
        model,
        args.retrieval,
        args.retrieval_split,
        limit=args.limit,
        sample=args.sample,
        sample_seed=args.seed,
        corpus_sample=args.corpus_sample,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
        config=config,
    )
    data = _entry(result.to_dict(), {**common, "data_dir": str(args.retrieval), "split": args.retrieval_split}, start)
    return data


def _check_hybrid_args(args: argparse.Namespace, run_retrieval: bool) -> dict[str, float] | None:
    """Validate the --hybrid options (before any model is loaded); return the parsed --fusion-weights."""
    given = [
        flag
        for flag, value in (
            ("--sparse-model", args.sparse_model),
            ("--sparse", args.sparse),
            ("--fusion", args.fusion),
            ("--fusion-weights", args.fusion_weights),
            ("--hybrid-index", args.hybrid_index),
            ("--hybrid-out", args.hybrid_out),
        )
        if value
    ]
    if not args.hybrid:
        if given:
            raise ValueError(f"{', '.join(given)} need(s) --hybrid")
        return None
    if not run_retrieval:
        raise ValueError("--hybrid needs --retrieval FOLDER")
    require_module("bm25s", "--hybrid", "sentence-transformers-tp[hybrid]")
    require_module("Stemmer", "--hybrid", "sentence-transformers-tp[hybrid]")
    if args.sparse and args.sparse_model is not None:
        raise ValueError("give --sparse (the model's own PromptReps channel) or --sparse-model PATH, not both")
    if args.sparse and args.mteb:
        raise ValueError(
            "--mteb --hybrid runs MTEB's HybridSearch on saved models: use --sparse-model PATH, not --sparse"
        )
    if args.hybrid_out is not None and (args.fusion is not None or args.fusion_weights is not None):
        raise ValueError("--hybrid-out stores a fusion chosen by this run: leave out --fusion and --fusion-weights")
    if args.hybrid_out is not None:
        from sentence_transformers_tp.presets import load_preset_file

        load_preset_file(args.hybrid_out)  # a missing or invalid preset fails before any encoding
    if args.sparse_model is not None and not Path(args.sparse_model).exists():
        raise FileNotFoundError(f"--sparse-model: {args.sparse_model} not found")
    if args.fusion_weights is None:
        return None
    weights: dict[str, float] = {}
    for part in args.fusion_weights.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("dense", "sparse", "bm25") or not value:
            raise ValueError(
                f"--fusion-weights: expected CHANNEL=WEIGHT with channel dense, sparse or bm25, got {part!r}"
            )
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--fusion-weights: {value!r} is not a number") from None
    if "sparse" in weights and args.sparse_model is None and not args.sparse:
        raise ValueError("--fusion-weights names the sparse channel: add --sparse or --sparse-model")
    return weights


def _load_sparse_model(args: argparse.Namespace) -> Any:
    if args.sparse_model is None:
        return None
    from sentence_transformers import SparseEncoder

    return SparseEncoder(args.sparse_model, trust_remote_code=True)


def _run_hybrid(
    model: Any,
    args: argparse.Namespace,
    weights: dict[str, float] | None,
    config: dict[str, Any],
    common: dict[str, Any],
) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """Score each channel alone and the hybrid on the --retrieval folder: one (label, result dict) per row."""
    from sentence_transformers_tp.evaluation.hybrid_retrieval import evaluate_hybrid_retrieval

    start = time.perf_counter()
    sparse = model if args.sparse else _load_sparse_model(args)
    channels = ["dense", *(["sparse"] if sparse is not None else []), "bm25"]
    if weights is not None and set(weights) != set(channels):
        raise ValueError(f"--fusion-weights must name exactly the channels of this run: {', '.join(channels)}")
    result = evaluate_hybrid_retrieval(
        model,
        args.retrieval,
        args.retrieval_split,
        sparse_model=sparse,
        fusion=args.fusion,
        weights=weights,
        limit=args.limit,
        sample=args.sample,
        sample_seed=args.seed,
        corpus_sample=args.corpus_sample,
        batch_size=args.batch_size,
        index_path=args.hybrid_index,
        use_preset=args.hybrid_out is None,
        show_progress_bar=not args.no_progress,
        model_name=common["label"],
        config=config,
    )
    shared = {**common, "data_dir": str(args.retrieval), "split": args.retrieval_split}
    rows = [(label, _entry(res.to_dict(), {**shared, "label": label}, start)) for label, res in result.rows]
    return rows, result


def _write_hybrid_block(result: Any, args: argparse.Namespace) -> None:
    """Store the fusion this run chose (--hybrid-out) as the preset's ``hybrid`` block, with where it was chosen."""
    from sentence_transformers_tp.hybrid.preset import HYBRID_KEY, tuned_fusion_block
    from sentence_transformers_tp.tuning.result import write_preset_block

    task = next(iter(result.rows[0][1].tasks.values()))
    record = {"task": task.task, "split": task.split, "documents": task.n_docs, "corpus_size": task.corpus_size}
    block = tuned_fusion_block(result.choice.to_preset(), record, command_line("evaluate"))
    path = write_preset_block(args.hybrid_out, HYBRID_KEY, block)
    print(f"hybrid: {result.choice.setting.label} written to {path}", file=sys.stderr, flush=True)


def _run_hybrid_mteb(
    model: Any, args: argparse.Namespace, setting: Any, config: dict[str, Any], common: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Run the hybrid setting through MTEB's own HybridSearch (MTEB's bm25s model) on the local retrieval task."""
    from sentence_transformers_tp.evaluation import mteb_result_to_dict
    from sentence_transformers_tp.evaluation.hybrid_retrieval import evaluate_hybrid_mteb

    start = time.perf_counter()
    result = evaluate_hybrid_mteb(
        setting,
        args.retrieval,
        args.retrieval_split,
        model=model,
        sparse_model=_load_sparse_model(args),
        limit=args.limit,
        sample=args.sample,
        sample_seed=args.seed,
        corpus_sample=args.corpus_sample,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
    )
    label = f"{common['label']} hybrid {setting.label} (MTEB HybridSearch)"
    data = _entry(mteb_result_to_dict(result, config=config), {**common, "label": label}, start)
    data["settings"]["hybrid"] = setting.to_dict()
    return label, data
