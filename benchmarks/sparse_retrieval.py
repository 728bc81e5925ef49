"""A small real check of the sparse (PromptReps) channel: dense and sparse nDCG@10 from one forward, next to BM25.

SciFact train claims against a corpus subset (their relevant abstracts plus random others), the backbone's default
(preset) settings; queries and documents each go through ``encode_dense_and_sparse`` once. BM25 is ``bm25s`` with
the English stemmer and stopwords on the same subset. Numbers on a subset are higher than on the full corpus.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/sparse_retrieval.py --sample 20 --corpus-sample 180
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sentence_transformers_tp.evaluation.retrieval import load_beir, rank_documents, ranking_metrics  # noqa: E402
from sentence_transformers_tp.factory import build_model  # noqa: E402
from sentence_transformers_tp.sparse import encode_dense_and_sparse  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "retrieval" / "scifact"


def _rank(scores: np.ndarray, doc_ids: list[str], top_k: int) -> list[list[str]]:
    keep = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    return [[doc_ids[i] for i in row] for row in order]


def _minmax(scores: np.ndarray) -> np.ndarray:
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    return (scores - low) / np.where(high > low, high - low, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--split", default="train")
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--corpus-sample", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=None, help="sparse tokens per vector (default 128)")
    parser.add_argument("--query-template", default=None)
    parser.add_argument("--document-template", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    data = load_beir(args.data, args.split).subset(
        sample=args.sample, seed=args.seed, corpus_sample=args.corpus_sample
    )
    query_ids = list(data.queries)
    queries = [data.queries[q] for q in query_ids]
    documents = data.documents()
    started = time.perf_counter()
    kwargs = {"query_template": args.query_template, "document_template": args.document_template}
    model = build_model(args.model, **{k: v for k, v in kwargs.items() if v is not None})
    load_seconds = time.perf_counter() - started

    started = time.perf_counter()
    q_dense, q_sparse = encode_dense_and_sparse(
        model, queries, task="query", batch_size=args.batch_size, top_k=args.top_k
    )
    query_seconds = time.perf_counter() - started
    started = time.perf_counter()
    d_dense, d_sparse = encode_dense_and_sparse(
        model, documents, task="document", batch_size=args.batch_size, top_k=args.top_k
    )
    document_seconds = time.perf_counter() - started

    dense_scores = _normalized(q_dense) @ _normalized(d_dense).T
    sparse_scores = (q_sparse.to_dense() @ d_sparse.to_dense().T).numpy()
    runs = {
        "dense": rank_documents(q_dense, d_dense, data.doc_ids, top_k=100),
        "sparse": _rank(sparse_scores, data.doc_ids, 100),
        "dense+sparse rsf 0.5": _rank(0.5 * _minmax(dense_scores) + 0.5 * _minmax(sparse_scores), data.doc_ids, 100),
    }
    try:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(documents, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
        )
        results, _ = retriever.retrieve(
            bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False),
            k=min(100, len(documents)),
            show_progress=False,
        )
        runs["bm25 (bm25s)"] = [[data.doc_ids[i] for i in row] for row in results]
    except ImportError:
        pass

    table = {}
    for name, ranked in runs.items():
        means, _ = ranking_metrics(dict(zip(query_ids, ranked)), data.qrels, (10, 100))
        table[name] = {"ndcg_at_10": 100 * means["ndcg_at_10"], "recall_at_100": 100 * means["recall_at_100"]}
    active = float((d_sparse.to_dense() > 0).sum(1).float().mean())
    report = {
        "model": args.model,
        "queries": len(queries),
        "documents": len(documents),
        "scores": table,
        "sparse_active_dims_per_document": active,
        "load_seconds": round(load_seconds, 1),
        "query_seconds": round(query_seconds, 1),
        "document_seconds": round(document_seconds, 1),
    }
    print(f"{args.model}: {len(queries)} {args.split} claims x {len(documents)} documents")
    print("| run | nDCG@10 | Recall@100 |\n|---|---:|---:|")
    for name, row in table.items():
        print(f"| {name} | {row['ndcg_at_10']:.2f} | {row['recall_at_100']:.2f} |")
    print(
        f"dense + sparse from one forward: queries {query_seconds:.1f} s, documents {document_seconds:.1f} s "
        f"({len(documents) / document_seconds:.2f} documents/s); load {load_seconds:.1f} s; "
        f"{active:.1f} active tokens per document"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")


def _normalized(array: np.ndarray) -> np.ndarray:
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)


if __name__ == "__main__":
    main()
