"""``st-tp tune``: pick the TP layers and the output layer on STS data and write them as a preset.

A thin layer over :func:`sentence_transformers_tp.tuning.tune` (the layer grid).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand."""
    parser = subparsers.add_parser(
        "tune",
        help="choose tp_exit and output_layer on STS-B dev (TP off is always a candidate) and write a preset",
        description="Search TP off plus TP before layers tp_start..tp_exit-1 for every tp_exit candidate, each with "
        "every output layer 0..L (L = final normed output, written -1), on an STS split (default: STS-B dev, as the "
        "TP paper). Each TP setting costs one forward pass over the distinct sentences, which yields all layers at "
        "once. Prints the grid, writes the winner as a preset (--out) and optionally saves the tuned model (--save). "
        "The winner is never worse on the tuning data than the best vanilla layer; ties go to TP off.",
    )
    parser.add_argument(
        "--model",
        default="smollm2",
        help="backbone: hub id, local checkpoint, .gguf or named backbone (default: smollm2)",
    )
    parser.add_argument(
        "--template", default="prompteol", help="prompteol, metaeol, pretended_cot or knowledge (default: prompteol)"
    )
    parser.add_argument("--data-dir", required=True, help="evaluation data directory (holding sts/<task>/<split>.tsv)")
    parser.add_argument("--task", default="stsb", help="STS task to tune on (default: stsb)")
    parser.add_argument("--split", default="dev", help="split to tune on (default: dev)")
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument(
        "--limit", type=int, help="use only the first N pairs (faster, noisier; files may be genre-ordered)"
    )
    subset.add_argument("--sample", type=int, help="use N pairs drawn at random (seeded by --seed; faster, noisier)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default: 0)")
    parser.add_argument(
        "--tp-start",
        default="1",
        help="first prepending layer (0-based) of the TP candidates, or several, e.g. 0,1 (default: 1)",
    )
    parser.add_argument(
        "--tp-exits",
        help="tp_exit candidates, e.g. 2-12 or 2,3,4,6,8 (default: tp_start+1 .. min(12, number of layers))",
    )
    parser.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="TP must beat the best vanilla layer by more than this many Spearman points to be chosen (default: 0)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default: 32)")
    parser.add_argument("--max-seq-length", type=int, help="truncate prompts to this many tokens (sentence only)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: automatic)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: float32)")
    parser.add_argument(
        "--out",
        help="write the winner into this preset YAML (an existing file is updated: its other templates are kept); "
        "a user preset, used with --preset FILE (it never replaces a built-in preset)",
    )
    parser.add_argument("--name", help="preset name for a new --out file (default: the backbone name)")
    parser.add_argument("--alias", action="append", default=[], help="alias of a new preset (repeatable)")
    parser.add_argument("--save", help="also save the tuned SentenceTransformer to this folder")
    parser.add_argument("--json", help="write the full grid as JSON to this file")
    parser.add_argument("--markdown", help="write the tables as markdown to this file")
    parser.add_argument("--checkpoint", help="folder of finished passes (one file each); rerunning with it skips them")
    parser.set_defaults(func=run)


def reproduce_command(args: argparse.Namespace) -> str:
    """The ``st-tp tune`` command line that reproduces a run (stored in the preset)."""
    parts = ["st-tp", "tune", "--model", args.model, "--template", args.template, "--data-dir", args.data_dir]
    parts += ["--task", args.task, "--split", args.split]
    if args.limit is not None:
        parts += ["--limit", str(args.limit)]
    if args.sample is not None:
        parts += ["--sample", str(args.sample), "--seed", str(args.seed)]
    if args.tp_start != "1":
        parts += ["--tp-start", args.tp_start]
    if args.tp_exits:
        parts += ["--tp-exits", args.tp_exits]
    if args.min_gain:
        parts += ["--min-gain", str(args.min_gain)]
    if args.max_seq_length is not None:
        parts += ["--max-seq-length", str(args.max_seq_length)]
    if args.dtype:
        parts += ["--dtype", args.dtype]
    if args.out:
        parts += ["--out", args.out]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Tune, print the tables, write the preset / model / JSON that were asked for."""
    from sentence_transformers_tp.cli.options import check_output_folder, check_output_path, load_module
    from sentence_transformers_tp.presets import check_preset_destination, load_preset_file, save_preset
    from sentence_transformers_tp.tuning import parse_int_list, tune

    # Everything that can fail is checked before the (long) passes start.
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir}: no such folder")
    if args.out:
        check_preset_destination(args.out)
    for flag, path in (("--out", args.out), ("--json", args.json), ("--markdown", args.markdown)):
        check_output_path(path, flag)
    check_output_folder(args.checkpoint, "--checkpoint")
    check_output_folder(args.save, "--save")

    model_kwargs = None
    if args.dtype:
        import torch

        model_kwargs = {"dtype": getattr(torch, args.dtype)}
    tp_starts = parse_int_list(args.tp_start)
    tp_exits = parse_int_list(args.tp_exits) if args.tp_exits else None
    base = load_preset_file(args.out) if args.out and Path(args.out).is_file() else None

    kwargs = {"max_seq_length": args.max_seq_length, "model_kwargs": model_kwargs}
    module = load_module(args.model, args.template, **{k: v for k, v in kwargs.items() if v})
    if args.device:
        module.to(args.device)
    result = tune(
        module,
        args.data_dir,
        task=args.task,
        split=args.split,
        limit=args.limit,
        sample=args.sample,
        sample_seed=args.seed,
        tp_start=tp_starts if len(tp_starts) > 1 else tp_starts[0],
        tp_exits=tp_exits,
        min_gain=args.min_gain,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    text = result.to_markdown()
    print(text)
    for path in (args.json, args.markdown):
        if path:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if args.json:
        result.save_json(args.json)
        print(f"Wrote the grid to {args.json}", file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
        print(f"Wrote the tables to {args.markdown}", file=sys.stderr)
    best = result.best
    if args.out:
        preset = result.to_preset(
            args.name, args.model, base=base, command=reproduce_command(args), aliases=args.alias or None
        )
        save_preset(preset, args.out)
        print(f"Wrote {result.template} -> {best.settings()} to the preset {args.out}", file=sys.stderr)
    if args.save:
        from sentence_transformers import SentenceTransformer

        module.set_setting(module.setting.replace(**best.settings()))
        model = SentenceTransformer(modules=[module], device=args.device)
        model.save(args.save)
        print(f"Saved the tuned model {module!r} to {args.save}", file=sys.stderr)
    return 0
