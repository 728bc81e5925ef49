"""``st-tp demo``: the default model next to the vanilla prompt on a few sentence pairs (offline)."""

from __future__ import annotations

import argparse

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
        help="compare the default TP model with the vanilla prompt on a few sentence pairs",
        description="Build the default model of a backbone (its preset's tuned settings, if it has a preset) and the "
        "same template without TP at the template's usual layer, and print the cosine similarity of a few "
        "paraphrase and unrelated pairs under both.",
    )
    parser.add_argument("--model", default="smollm2", help="backbone (default: smollm2, offline)")
    parser.add_argument("--template", default="prompteol", help="template (default: prompteol)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the comparison table."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from sentence_transformers_tp.module import TokenPrependingTransformer
    from sentence_transformers_tp.templates import USUAL_OUTPUT_LAYER, canonical_template_name

    default = TokenPrependingTransformer(args.model, args.template)
    usual = USUAL_OUTPUT_LAYER.get(canonical_template_name(args.template) or "", -1)
    vanilla = TokenPrependingTransformer(
        args.model, args.template, tp_start=default.tp_start, tp_exit=default.tp_start, output_layer=usual
    )
    rows = []
    for label, module in (("default", default), ("vanilla", vanilla)):
        model = SentenceTransformer(modules=[module])
        first = model.encode([a for a, _, _ in DEMO_PAIRS], convert_to_tensor=True)
        second = model.encode([b for _, b, _ in DEMO_PAIRS], convert_to_tensor=True)
        scores = model.similarity_pairwise(first, second).cpu().numpy()
        rows.append((label, module, scores))

    print(f"Backbone {args.model}, template {args.template}")
    for label, module, _ in rows:
        print(f"  {label:8s}: {module.model_slug()}")
    print()
    print(f"| {'pair':78s} | same | " + " | ".join(f"{label:>8s}" for label, _, _ in rows) + " |")
    print(f"|{'-' * 80}|------|" + "|".join("-" * 10 for _ in rows) + "|")
    for index, (a, b, same) in enumerate(DEMO_PAIRS):
        pair = f"{a} / {b}"
        cells = " | ".join(f"{scores[index]:8.3f}" for _, _, scores in rows)
        print(f"| {pair:78s} | {'yes' if same else 'no':4s} | {cells} |")
    same = np.array([pair[2] for pair in DEMO_PAIRS])
    print()
    for label, _, scores in rows:
        margin = scores[same].min() - scores[~same].max()
        print(f"{label}: lowest paraphrase minus highest unrelated similarity = {margin:+.3f}")
    return 0
