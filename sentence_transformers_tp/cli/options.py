"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import Any


def add_model_options(parser: argparse.ArgumentParser, *, model_flag: bool = True) -> None:
    """Options that choose and configure a model.

    Args:
        parser: The subcommand parser.
        model_flag: Add ``--model`` (False when the subcommand takes the model as a positional argument).
    """
    if model_flag:
        parser.add_argument(
            "--model",
            help="a saved model folder, a hub id or local checkpoint, a .gguf file, or a named offline backbone "
            "(default: the preset's backbone, else smollm2)",
        )
    parser.add_argument(
        "--template",
        help="prompteol, metaeol, pretended_cot, knowledge, or a template with a {sentence} slot (default: prompteol)",
    )
    parser.add_argument("--preset", help="a preset name or YAML file from configs/ (sets the TP layers)")
    parser.add_argument("--tp-start", type=int, help="first decoder layer (0-based) whose placeholder is replaced")
    parser.add_argument(
        "--tp-exit", type=int, help="first layer after tp-start without replacement (<= start: TP off)"
    )
    parser.add_argument("--output-layer", type=int, help="hidden_states index of the embedding (-1: final layer)")
    parser.add_argument("--max-seq-length", type=int, help="truncate prompts to this many tokens (sentence only)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: automatic)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: float32)")


def model_from_args(args: argparse.Namespace, spec: str | None = None) -> Any:
    """Load or build the model the options describe.

    Args:
        args: Parsed arguments of :func:`add_model_options`.
        spec: The model spec (default: ``args.model``; None: the preset's backbone, else smollm2).

    Returns:
        A ``SentenceTransformer``.
    """
    from sentence_transformers_tp.factory import load_model

    model_kwargs = None
    if args.dtype:
        import torch

        model_kwargs = {"dtype": getattr(torch, args.dtype)}
    return load_model(
        spec if spec is not None else getattr(args, "model", None),
        args.template,
        preset=args.preset,
        device=args.device,
        tp_start=args.tp_start,
        tp_exit=args.tp_exit,
        output_layer=args.output_layer,
        max_seq_length=args.max_seq_length,
        model_kwargs=model_kwargs,
    )
