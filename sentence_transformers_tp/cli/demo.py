"""``st-tp demo``: the default model, the paper's TP setting and the vanilla prompt on a few sentence pairs."""

from __future__ import annotations

import argparse
import sys

#: Sentence pairs of the demo: (first, second, whether they mean the same).
DEMO_PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", True),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", True),
    ("A dog is running through the grass.", "A dog runs across a lawn.", True),
    ("A man is playing a guitar.", "The stock market fell sharply on Monday.", False),
    ("A woman is slicing an onion.", "The spacecraft reached orbit after launch.", False),
    ("A dog is running through the grass.", "Parliament passed the new budget law.", False),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="compare the default model, the paper's TP setting and the vanilla prompt on a few sentence pairs",
        description="Load a backbone once and embed a few paraphrase and unrelated pairs with (1) its default "
        "settings (its preset's tuned settings, if it has a preset), (2) the paper's default TP band (before layers "
        "1-6) at the template's usual layer and (3) the vanilla prompt (no TP) at the template's usual layer.",
    )
    parser.add_argument(
        "--model",
        default="smollm2",
        help="backbone: a built-in backbone, .gguf, checkpoint or hub id (default: smollm2)",
    )
    parser.add_argument(
        "--template", help="built-in template name (default: the backbone's tuned combination, else prompteol)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the comparison table."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    from sentence_transformers_tp.cli.options import check_model_spec, load_module
    from sentence_transformers_tp.evaluation.variants import Variant, apply_variant, usual_output_layer

    check_model_spec(args.model)
    print(f"Loading {args.model} (a GGUF backbone is converted once, with a progress bar) ...", file=sys.stderr)
    module = load_module(args.model, args.template)
    model = SentenceTransformer(modules=[module])
    # The baselines use the plain template (no demonstration, no CP) when the default is a tuned combination.
    plain = args.template or "prompteol"
    usual = usual_output_layer(plain)
    variants = [
        Variant("default", module.tp_start, module.tp_exit, module.output_layer),
        Variant("paper TP", 1, min(7, module.num_layers), usual, template=plain),
        Variant("vanilla", 1, 1, usual, template=plain),
    ]
    columns = []
    for variant in tqdm(variants, desc="Embedding the demo pairs", unit="setting", file=sys.stderr):
        with apply_variant(model, variant):
            first = model.encode([a for a, _, _ in DEMO_PAIRS], convert_to_tensor=True)
            second = model.encode([b for _, b, _ in DEMO_PAIRS], convert_to_tensor=True)
            columns.append((variant.label, module.model_slug(), model.similarity_pairwise(first, second).numpy()))

    print(f"Backbone {args.model}; default: {module.model_slug()}; cosine similarity of each pair:")
    for label, slug, _ in columns:
        print(f"  {label:9s} = {slug}")
    print()
    print(f"| {'pair':78s} | same | " + " | ".join(f"{label:>9s}" for label, _, _ in columns) + " |")
    print(f"|{'-' * 80}|------|" + "|".join("-" * 11 for _ in columns) + "|")
    for index, (a, b, same) in enumerate(DEMO_PAIRS):
        cells = " | ".join(f"{scores[index]:9.3f}" for _, _, scores in columns)
        print(f"| {a + ' / ' + b:78s} | {'yes' if same else 'no':4s} | {cells} |")
    same = np.array([pair[2] for pair in DEMO_PAIRS])
    print()
    print("Margin (lowest paraphrase similarity minus highest unrelated one; higher separates better):")
    for label, _, scores in columns:
        print(f"  {label:9s} {scores[same].min() - scores[~same].max():+.3f}")
    return 0
