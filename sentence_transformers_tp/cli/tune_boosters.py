"""``st-tp tune-boosters``: search templates, ensembles, demonstrations, TP, Contrastive Prompting, output layer and
centering together on STS data.

A thin layer over :func:`sentence_transformers_tp.tuning.tune_joint`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune-boosters`` subcommand."""
    parser = subparsers.add_parser(
        "tune-boosters",
        help="search templates, ensembles, demonstrations, TP bands, Contrastive Prompting, layers and centering",
        description="A staged search (sentence_transformers_tp.tuning.joint): templates x TP bands on a seeded sample "
        "of the tuning pairs, then in-context demonstrations on the best settings, then Contrastive Prompting on the "
        "best one, then the finalists and vanilla PromptEOL on all pairs and on a second dev set, then centering. "
        "Each pass scores every output layer at once. The winner is never below vanilla PromptEOL's best layer on "
        "the tuning data, nor (at its layer) below vanilla PromptEOL's best layer on the second dev set.",
    )
    parser.add_argument("--model", default="smollm2", help="backbone (default: smollm2)")
    parser.add_argument("--data-dir", required=True, help="evaluation data directory (holding sts/<task>/<split>.tsv)")
    parser.add_argument("--task", default="stsb", help="tuning task (default: stsb)")
    parser.add_argument("--split", default="dev", help="tuning split (default: dev)")
    parser.add_argument("--sample", type=int, default=300, help="pairs of the seeded coarse sample (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    parser.add_argument(
        "--templates",
        default="prompteol,pretended_cot,knowledge,ck",
        help="comma-separated built-in templates of stage 1 (default: prompteol,pretended_cot,knowledge,ck)",
    )
    parser.add_argument("--tp-bands", default="1-3,1-4,1-7", help="TP bands tp_start-tp_exit (default: 1-3,1-4,1-7)")
    parser.add_argument(
        "--demonstrations",
        default="paper",
        help="'paper' (the six of Jiang et al.), 'pool' (every shipped candidate), 'pool+N' (the shipped pool plus N "
        "sentences drawn, seeded by --seed, from STS-B train and SICK-R train of --data-dir, never from STS-B dev or "
        "SICK-R trial, labelled with the backbone's own greedy one-word answer), 'none', or words of the pool, "
        "comma-separated (default: paper)",
    )
    parser.add_argument(
        "--screen-sample",
        type=int,
        help="first score every candidate demonstration with the best stage-1 setting on a seeded sample of this "
        "many pairs (one pass each); only the best --screen-top go on to stage 2",
    )
    parser.add_argument("--screen-top", type=int, default=8, help="candidates the screen keeps (default: 8)")
    parser.add_argument("--top-k", type=int, default=2, help="stage-1 settings that get demonstrations (default: 2)")
    parser.add_argument("--cp-layers", default="2,4,6", help="CP layers, 0-based, or 'none' (default: 2,4,6)")
    parser.add_argument("--cp-alphas", default="0.5,1,2", help="CP ns scales (default: 0.5,1,2)")
    parser.add_argument("--finalists", type=int, default=3, help="settings rescored on all pairs (default: 3)")
    parser.add_argument(
        "--layer-spans",
        default="2,3,4",
        help="vanilla and each finalist also with the mean of this many consecutive layers ending at each layer "
        "(layer_span; from the same passes), comma-separated, or 'none' (default: 2,3,4)",
    )
    parser.add_argument(
        "--final-sample",
        type=int,
        help="score stages 4-5 on a seeded sample of this many pairs instead of all pairs (for slow machines)",
    )
    parser.add_argument(
        "--centering-sentences", type=int, default=1000, help="unlabeled STS-B train sentences (0: skip; default 1000)"
    )
    parser.add_argument(
        "--second",
        default="sickr:trial",
        help="second dev set TASK:SPLIT: a finalist below vanilla PromptEOL's best layer there cannot win; 'none' "
        "tunes on the tuning data alone (default: sickr:trial)",
    )
    parser.add_argument("--min-gain", type=float, default=0.2, help="points a more complex setting must gain (0.2)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default: 32)")
    parser.add_argument(
        "--out", help="store the winner as the 'combination' of this existing preset YAML (other entries are kept)"
    )
    parser.add_argument("--json", help="write the full result as JSON to this file")
    parser.add_argument("--markdown", help="write the report as markdown to this file")
    parser.add_argument("--checkpoint", help="folder of finished passes (one file each); rerunning with it skips them")
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
    from sentence_transformers_tp.demonstrations import PAPER_DEMONSTRATIONS, POOL, draw_sentences, find_demonstration
    from sentence_transformers_tp.tuning import parse_int_list, tune_joint, write_combination

    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir}: no such folder")
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        check_output_path(path, flag)
    check_output_folder(args.checkpoint, "--checkpoint")
    if args.out and not Path(args.out).is_file():
        raise FileNotFoundError(f"--out {args.out}: no such preset file (the combination is added to an existing one)")
    templates = parse_template_names(args.templates, "--templates")
    drawn = drawn_count(args.demonstrations)
    if drawn is not None:
        demos, sentences = list(POOL), draw_sentences(args.data_dir, drawn, seed=args.seed)
    elif args.demonstrations == "paper":
        demos = list(PAPER_DEMONSTRATIONS)
    elif args.demonstrations == "pool":
        demos = list(POOL)
    elif args.demonstrations == "none":
        demos = []
    else:
        demos = [find_demonstration(word.strip()) for word in args.demonstrations.split(",") if word.strip()]
    cp_layers = [] if args.cp_layers == "none" else [int(x) for x in args.cp_layers.split(",") if x.strip()]
    spans = [] if args.layer_spans == "none" else parse_int_list(args.layer_spans)
    if any(span < 1 for span in spans):
        raise ValueError(f"--layer-spans {args.layer_spans}: a span is a number of layers, 1 or more")
    alphas = [float(x) for x in args.cp_alphas.split(",") if x.strip()]
    second_task, second_split = ("", "") if args.second == "none" else args.second.split(":", 1)

    module = load_module(args.model, "prompteol")
    labelling = None
    if drawn is not None:
        from sentence_transformers_tp.labeling import label_with_backbone

        labelled = label_with_backbone(module, sentences, batch_size=args.batch_size)
        demos += labelled
        labelling = {
            "drawn": drawn,
            "labelled": len(labelled),
            "seed": args.seed,
            "seconds": round(labelled.seconds, 1),
        }
        print(
            f"labelled {len(labelled)} of {drawn} drawn sentences with the backbone's own answer in "
            f"{labelled.seconds:.0f} s: {len(demos)} candidates",
            file=sys.stderr,
            flush=True,
        )
    result = tune_joint(
        module,
        args.data_dir,
        task=args.task,
        split=args.split,
        sample=args.sample,
        sample_seed=args.seed,
        templates=templates,
        tp_bands=parse_tp_bands(args.tp_bands),
        demonstrations=demos,
        screen_sample=args.screen_sample,
        screen_top=args.screen_top,
        top_k=args.top_k,
        cp_layers=cp_layers,
        cp_alphas=alphas,
        finalists=args.finalists,
        layer_spans=spans,
        final_sample=args.final_sample,
        centering_sentences=args.centering_sentences,
        second_task=second_task,
        second_split=second_split,
        min_gain=args.min_gain,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    report = result.to_markdown()
    if labelling is not None:
        report += (
            f"\nCandidates: the shipped pool ({len(POOL)}) and {labelling['labelled']} of {drawn} drawn sentences "
            f"labelled by the backbone ({labelling['seconds']:.0f} s).\n"
        )
    print(report)
    print(
        "Build the winner with: TokenPrependingTransformer("
        + repr(args.model)
        + ", **"
        + repr(result.module_kwargs())
        + ")"
    )
    data = result.to_dict()
    data["command"] = command_line("tune-boosters")
    if labelling is not None:
        data["drawn_demonstrations"] = labelling
    if args.out:
        write_combination(data, args.out, data["command"])
    write_outputs([(args.json, json.dumps(data, indent=2)), (args.markdown, report)])
    return 0


def drawn_count(value: str) -> int | None:
    """N of a ``--demonstrations pool+N`` value (None for any other value).

    Raises:
        ValueError: If N is not a positive integer.
    """
    if not value.startswith("pool+"):
        return None
    count = value.removeprefix("pool+")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--demonstrations {value}: pool+N needs a positive number of sentences N, e.g. pool+216.")
    return int(count)
