"""Document-encoding throughput for retrieval (documents/s): where the time of a corpus pass goes.

The measurement of the issue item "a full-corpus SciFact document pass takes ~70 min on 2 CPU threads for SmolLM2
(793 s per 1000 abstracts)": BEIR SciFact abstracts (``title + " " + text``, stripped, as
``sentence_transformers_tp.evaluation.retrieval.load_beir(...).documents()`` gives them), encoded with the backbone
preset's document setting next to stock sentence-transformers on the same checkpoint:

    HF_HUB_OFFLINE=1 python benchmarks/documents.py --threads 2            # SmolLM2-135M on CPU, 128 abstracts
    HF_HUB_OFFLINE=1 python benchmarks/documents.py --model gemma3-270m    # another embedded backbone
    python benchmarks/documents.py --shape tiny --documents 8 --repeats 1  # smoke run of the code path

Every variant encodes the same documents (``--documents`` of them, evenly spaced over the corpus sorted by length,
so that short and long abstracts are represented as in the full corpus), at ``--batch-size`` (16: what the hybrid
retriever uses), through the public API:

- ``stock``: ``SentenceTransformer([Transformer(max_seq_length=512), Pooling("lasttoken")])`` on the plain document
  text (no prompt, plain text modality), all layers;
- ``ours``: ``SentenceTransformer([TokenPrependingTransformer])`` with the backbone preset's document setting
  (SmolLM2: template ``retrieval_document``, TP off, output layer 29 of 30, ``max_seq_length`` 512), dense only,
  ``encode_document`` (the forward stops at the output layer);
- ``ours_full``: the same setting read at the final layer (all layers run): what the early exit saves;
- ``ours_256``: the same setting with ``max_seq_length`` 256 (scores differ: longer abstracts are cut);
- ``ours_sparse``: dense + PromptReps sparse from one forward per batch (``encode_dense_and_sparse``, what
  ``st-tp evaluate --hybrid --sparse`` does per document); it runs to the final layer (the LM head reads it). Skipped
  with a note when the backbone has no LM head (the random shapes are untied and have no head weights);
- ``ours_uncached``: ``prefix_cache=False`` (the template prefix run in every row instead of from cached keys).

Random shapes (``--shape tiny`` ...) get SmolLM2's document setting with the output layer scaled to their depth.

Before timing, every variant encodes one batch of the longest documents untimed (kernels, allocator, the prefix
cache). Then ``--repeats`` passes, the variants interleaved and the order reversed every other repeat (ABBA); the
report gives medians, documents/s, tokens per document (prompt after truncation; run after the cached prefix),
positions run including padding, the padding share of the batches as ``encode`` forms them, model GFLOPs per document,
peak memory, the ratios against ``stock`` and the documents' token-length distribution. The last lines are computed
from these numbers: what the early exit, truncation, the prompt, padding, the sparse channel and the cache cost or
save, and the full-corpus time this rate gives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO,
    SHAPES,
    PeakMemory,
    batches_like_encode,
    build_random_checkpoint,
    fmt_bytes,
    layer_flops,
    median,
    smollm2_tokenizer_dir,
    synchronize,
    table,
    write_json,
)

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "retrieval" / "scifact" / "corpus.jsonl"
#: The issue's measurement: seconds per 1000 SciFact abstracts, SmolLM2, 2 CPU threads.
ISSUE_SECONDS_PER_1000 = 793.0
STOCK_MAX_SEQ_LENGTH = 512
SHORT_MAX_SEQ_LENGTH = 256
#: The preset whose document setting the random shapes use.
RANDOM_SHAPE_PRESET = "smollm2"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=["smollm2", *SHAPES], default="smollm2", help="default: smollm2")
    parser.add_argument("--model", help="another built-in backbone in place of smollm2 (e.g. gemma3-270m)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl (default: SciFact)")
    parser.add_argument("--documents", type=int, default=128, help="documents encoded (default: 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="default: 16 (the hybrid retriever's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder for the random shapes (default: SmolLM2's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    if args.documents < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--documents, --repeats and --batch-size must be >= 1")
    if args.model and args.shape != "smollm2":
        parser.error("--model replaces the real smollm2 backbone; it does not combine with a random --shape")
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus} is not a file")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device} needs a CUDA GPU, but torch.cuda.is_available() is False here")
    return args


def read_corpus(path: Path) -> list[str]:
    """The corpus's document texts, ``(title + " " + text).strip()``, exactly as ``BEIRData.documents()`` builds
    them (read here without the queries and qrels ``load_beir`` needs)."""
    documents = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                documents.append((str(row.get("title") or "") + " " + str(row.get("text") or "")).strip())
    return documents


def pick_documents(corpus: Sequence[str], count: int) -> list[str]:
    """``count`` documents evenly spaced over the corpus sorted by character length (ties: corpus order), returned
    in corpus order: a fixed subset whose lengths follow the corpus's distribution."""
    if count > len(corpus):
        raise SystemExit(f"--documents {count} is more than the {len(corpus)} documents of the corpus")
    by_length = sorted(range(len(corpus)), key=lambda i: (len(corpus[i]), i))
    step = len(corpus) / count
    picked = sorted(by_length[int((i + 0.5) * step)] for i in range(count))
    return [corpus[i] for i in picked]


def encode_batches(model: Any, texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """The batches ``SentenceTransformer.encode`` forms: ``np.argsort`` of minus the input length (its sort, ties
    included), interleaved long/short when the model flattens inputs, then chunked."""
    import numpy as np

    length = getattr(model, "_input_length", len)
    order = np.argsort([-length(text) for text in texts])
    flatten = getattr(model, "_can_flatten_inputs", None)
    if callable(flatten) and flatten() and hasattr(model, "_interleave_sorted_indices"):
        order = model._interleave_sorted_indices(order)
    ordered = [texts[i] for i in order]
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


@dataclass
class Count:
    """Token accounting of one variant over all its batches."""

    prompt: int = 0  # real prompt tokens (after truncation)
    run: int = 0  # real tokens run (after the cached prefix)
    positions: int = 0  # positions run, padding included
    truncated: int = 0
    real_rows: list[tuple[int, int]] = field(default_factory=list)  # (cached prefix, real tokens run)
    padded_rows: list[tuple[int, int]] = field(default_factory=list)  # (cached prefix, padded width run)
    batch_padding: list[float] = field(default_factory=list)  # padded / real tokens per batch

    def add_rows(self, prefix: int, mask: Any) -> tuple[int, int]:
        """Add the rows of one attention mask run on top of ``prefix`` cached tokens; returns (real, positions)."""
        lengths = [int(n) for n in mask.sum(1).tolist()]
        width = int(mask.shape[1])
        self.real_rows += [(prefix, n) for n in lengths]
        self.padded_rows += [(prefix, width) for _ in lengths]
        return sum(lengths), width * len(lengths)


def count_stock(stock: Any, batches: Sequence[list[str]]) -> Count:
    """Tokens of the stock model's batches."""
    count = Count()
    for batch in batches:
        mask = stock.preprocess(batch)["attention_mask"]
        real, positions = count.add_rows(0, mask)
        count.prompt += real
        count.run += real
        count.positions += positions
        count.batch_padding.append((positions - real) / real)
    return count


def count_ours(module: Any, batches: Sequence[list[str]], prompt: str | None, cached: bool) -> Count:
    """Tokens of our batches (under the active setting): whole prompts, or remainders after the cached prefix."""
    from sentence_transformers_tp.truncation import report_truncation

    count = Count()
    with report_truncation() as report:
        for batch in batches:
            features = module.preprocess(batch, prompt=prompt, task="document")
            mask = features["attention_mask"]
            count.prompt += int(mask.sum())
            if cached and features.get("prefix_groups") is not None:
                real = positions = 0
                for group in features["prefix_groups"]:
                    r, p = count.add_rows(group.prefix_length, group.attention_mask)
                    real, positions = real + r, positions + p
                rest = list(features["prefix_rest"])
                if rest:
                    r, p = count.add_rows(0, mask[rest])
                    real, positions = real + r, positions + p
            else:
                real, positions = count.add_rows(0, mask)
            count.run += real
            count.positions += positions
            count.batch_padding.append((positions - real) / real)
        count.truncated = report.truncated
    return count


@dataclass
class Variant:
    """One way of encoding the documents."""

    key: str
    name: str
    work: Callable[[list[str]], Any]
    count: Count
    depth: int
    note: str = ""
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    output: Any = None


def load_models(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any, Any, str]:
    """The stock model, ours and our module (same checkpoint, device and dtype), and the backbone's name."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from sentence_transformers_tp import TokenPrependingTransformer
    from sentence_transformers_tp.backbones import resolve_backbone
    from sentence_transformers_tp.presets import get_preset

    model_kwargs: dict[str, Any] = {"dtype": getattr(torch, args.dtype)}
    our_kwargs: dict[str, Any] = {}
    if args.shape == "smollm2":
        name = args.model or "smollm2"
        path = resolve_backbone(name)
        source = name  # the named backbone: its preset supplies the document setting
    else:
        name = args.shape
        path = str(build_random_checkpoint(args.shape, args.tokenizer or smollm2_tokenizer_dir(), workdir / "model"))
        if args.device != "cpu":
            model_kwargs["device_map"] = args.device
        source = path
        document = dict(get_preset(RANDOM_SHAPE_PRESET).task_settings_config()["document"])
        layers = AutoConfig.from_pretrained(path).num_hidden_layers
        preset_layers = get_preset(RANDOM_SHAPE_PRESET).num_layers
        if isinstance(document.get("output_layer"), int) and document["output_layer"] > 0:
            # Rounded down: an early exit of the preset stays one (at least) at the smaller depth.
            document["output_layer"] = max(1, layers * document["output_layer"] // preset_layers)
        our_kwargs["task_settings"] = {"document": document}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the random shapes' "missing weights" load report
    try:
        transformer = Transformer(
            path,
            max_seq_length=STOCK_MAX_SEQ_LENGTH,
            model_kwargs=dict(model_kwargs),
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        if transformer.tokenizer.pad_token is None:
            transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
        stock = SentenceTransformer(modules=[transformer, pooling], device=args.device)
        module = TokenPrependingTransformer(source, model_kwargs=dict(model_kwargs), **our_kwargs)
        ours = SentenceTransformer(modules=[module], device=args.device)
    finally:
        hf_logging.set_verbosity(verbosity)
    stock.eval()
    ours.eval()
    return stock, ours, module, name


@contextlib.contextmanager
def quiet() -> Any:
    """Silence warnings of a block: transformers' and the package's (one truncation report per encode call)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    package = logging.getLogger("sentence_transformers_tp")
    level = package.level
    hf_logging.set_verbosity_error()
    package.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        package.setLevel(level)


def document_prompt(model: Any) -> str | None:
    """The prompt ``encode_document`` passes (the first of ``document`` / ``passage`` / ``corpus`` in prompts)."""
    prompts = getattr(model, "prompts", None) or {}
    return next((prompts[n] for n in ("document", "passage", "corpus") if n in prompts), None)


def distribution(values: Sequence[int]) -> dict[str, float]:
    """min / median / mean / max."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and print the report; returns the results as a dict."""
    import numpy as np
    import torch
    import transformers

    from sentence_transformers_tp.prepending import resolve_output_layer
    from sentence_transformers_tp.sparse import encode_dense_and_sparse, sparse_head

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    corpus = read_corpus(args.corpus)
    documents = pick_documents(corpus, args.documents)
    workdir = Path(tempfile.mkdtemp(prefix="st-tp-documents-"))
    try:
        started = time.perf_counter()
        stock, ours, module, backbone = load_models(args, workdir)
        load_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    num_layers = module.num_layers
    batch_size = args.batch_size
    prompt = document_prompt(ours)
    setting = module.task_settings_for("document")
    budget = setting.max_seq_length or module.max_seq_length
    settings = {
        "ours": setting,
        "ours_full": setting.replace(output_layer=-1),
        "ours_256": setting.replace(max_seq_length=SHORT_MAX_SEQ_LENGTH),
    }
    depth = resolve_output_layer(setting.output_layer, num_layers)
    config = module.model.config
    layer_params = sum(p.numel() for p in module.decoder_layers[0].parameters())
    peak = PeakMemory(device)

    # Token lengths of the documents themselves (the stock tokenizer with its special tokens, no truncation).
    with quiet():  # "sequence longer than the model's maximum" and truncation reports
        text_tokens = [len(ids) for ids in stock.tokenizer(documents, truncation=False)["input_ids"]]
        stock_batches = encode_batches(stock, documents, batch_size)
        our_batches = encode_batches(ours, documents, batch_size)
        with torch.inference_mode():  # whether encode's forwards run on the cached prefix
            cache_active = module.prefix_cache_active(depth)
        counts = {"stock": count_stock(stock, stock_batches)}
        for key, value in settings.items():
            with module.using(value):
                counts[key] = count_ours(module, our_batches, prompt, cached=cache_active)
        with module.using(setting):
            counts["ours_uncached"] = count_ours(module, our_batches, prompt, cached=False)
            # encode_dense_and_sparse sorts with Python's stable sort (common.batches_like_encode).
            sparse_batches = batches_like_encode(documents, batch_size)
            counts["ours_sparse"] = count_ours(module, sparse_batches, prompt, cached=cache_active)
    has_prefix = counts["ours"].run < counts["ours"].prompt

    def encode_ours(key: str) -> Callable[[list[str]], np.ndarray]:
        def work(texts: list[str]) -> np.ndarray:
            with module.using(settings[key]):
                return ours.encode_document(texts, batch_size=batch_size, convert_to_numpy=True)

        return work

    def encode_uncached(texts: list[str]) -> np.ndarray:
        cache = module.prefix_cache
        module.prefix_cache = False
        try:
            with module.using(setting):
                return ours.encode_document(texts, batch_size=batch_size, convert_to_numpy=True)
        finally:
            module.prefix_cache = cache

    def encode_joint(texts: list[str]) -> np.ndarray:
        with module.using(setting):
            dense, _ = encode_dense_and_sparse(ours, texts, "document", batch_size=batch_size)
        return dense

    out_layer = setting.output_layer
    variants = [
        Variant(
            "stock",
            f"stock sentence-transformers (plain text, max_seq_length {STOCK_MAX_SEQ_LENGTH}, all layers)",
            lambda texts: stock.encode_document(texts, batch_size=batch_size, convert_to_numpy=True),
            counts["stock"],
            num_layers,
        ),
        Variant(
            "ours",
            f"ours: preset document setting (output layer {out_layer})",
            encode_ours("ours"),
            counts["ours"],
            depth,
        ),
        Variant(
            "ours_full",
            f"ours: same at full depth (output layer -1, {num_layers} layers)",
            encode_ours("ours_full"),
            counts["ours_full"],
            num_layers,
        ),
        Variant(
            "ours_256",
            f"ours: same, max_seq_length {SHORT_MAX_SEQ_LENGTH} (scores differ)",
            encode_ours("ours_256"),
            counts["ours_256"],
            depth,
        ),
    ]
    skipped: dict[str, str] = {}
    try:
        sparse_head(ours)
    except Exception as error:  # untied backbone without LM head weights (the random shapes)
        skipped["ours_sparse"] = f"no LM head for the sparse channel ({type(error).__name__}: {error})"
    else:
        variants.append(
            Variant(
                "ours_sparse",
                "ours: dense + PromptReps sparse, one forward (runs to the final layer)",
                encode_joint,
                counts["ours_sparse"],
                num_layers,
            )
        )
    note = "" if (has_prefix and cache_active) else " (no cached prefix here: same path as ours)"
    variants.append(
        Variant(
            "ours_uncached",
            f"ours: preset setting, prefix_cache=False{note}",
            encode_uncached,
            counts["ours_uncached"],
            depth,
        )
    )

    def measure(variant: Variant, texts: list[str], timed: bool = True) -> None:
        with peak.measure() as memory:
            synchronize(device)
            start = time.perf_counter()
            output = variant.work(texts)
            synchronize(device)
            seconds = time.perf_counter() - start
        if timed:
            variant.times.append(seconds)
            variant.peaks.append(memory[0])
            variant.output = output

    with quiet():  # one truncation warning per encode call otherwise
        # Warm-up: one batch of the longest documents per variant, untimed (kernels, allocator, the prefix cache).
        longest = sorted(documents, key=len, reverse=True)[:batch_size]
        for variant in variants:
            measure(variant, longest, timed=False)
        for repeat in range(args.repeats):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                measure(variant, documents)
            print(
                f"  repeat {repeat + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr
            )

    by_key = {variant.key: variant for variant in variants}

    def rate(key: str) -> float:
        return len(documents) / median(by_key[key].times)

    def ratio(key: str, base: str) -> float:
        """Median over repeats of the time ratio base / key within a repeat (>1: key is faster)."""
        return median([b / k for b, k in zip(by_key[base].times, by_key[key].times)])

    def max_diff(a: str, b: str) -> float | None:
        if a not in by_key or b not in by_key:
            return None
        return float(np.abs(np.asarray(by_key[a].output) - np.asarray(by_key[b].output)).max())

    def mean_cosine(a: str, b: str) -> float:
        x, y = (np.asarray(by_key[k].output, dtype=np.float64) for k in (a, b))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        return float((x * y).sum(1).mean())

    n = len(documents)
    results: dict[str, Any] = {
        "variants": {
            v.key: {
                "name": v.name,
                "times": v.times,
                "documents_per_second": rate(v.key),
                "prompt_tokens_per_document": v.count.prompt / n,
                "run_tokens_per_document": v.count.run / n,
                "positions_per_document": v.count.positions / n,
                "padding_share": (v.count.positions - v.count.run) / v.count.run,
                "padding_share_per_batch": v.count.batch_padding,
                "truncated": v.count.truncated,
                "layers_run": v.depth,
                "gflops_per_document": layer_flops(config, layer_params, v.count.real_rows, v.depth) / n / 1e9,
                "gflops_per_document_with_padding": layer_flops(config, layer_params, v.count.padded_rows, v.depth)
                / n
                / 1e9,
                "peak_bytes": max(v.peaks),
                "speedup_over_stock": ratio(v.key, "stock"),
            }
            for v in variants
        },
        "skipped": skipped,
        "max_abs_diff": {
            "cached_vs_uncached": max_diff("ours", "ours_uncached"),
            "sparse_dense_vs_ours": max_diff("ours", "ours_sparse"),
        },
        "mean_cosine_ours_256_vs_ours": mean_cosine("ours", "ours_256"),
        "embedding_max_abs": float(np.abs(np.asarray(by_key["ours"].output)).max()),
    }
    items = results["variants"]
    # Stock truncates documents longer than its budget; text_tokens include the tokenizer's special tokens.
    stock_truncated = sum(t > STOCK_MAX_SEQ_LENGTH for t in text_tokens)
    items["stock"]["truncated"] = stock_truncated
    results["document_tokens"] = {
        **distribution(text_tokens),
        "share_over_512": stock_truncated / n,
        "ours_prompt_share_truncated": counts["ours"].truncated / n,
        "ours_prompt_share_truncated_at_256": counts["ours_256"].truncated / n,
        "ours_budget": budget,
    }

    # ----------------------------------------------------------------------------------------------------- report
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print()
    print("sentence-transformers-tp document encoding (retrieval)")
    print(
        f"model: {backbone} ({type(module.model).__name__}, {num_layers} layers, "
        f"{sum(p.numel() for p in module.model.parameters()) / 1e9:.3f}B parameters), device {args.device}"
        f"{f' ({gpu})' if gpu else ''}, dtype {args.dtype}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {torch.get_num_threads()} CPU threads, {platform.machine()}, attention ours "
        f"{getattr(module.model.config, '_attn_implementation', '?')} / stock "
        f"{getattr(stock[0].model.config, '_attn_implementation', '?')}"
    )
    print(
        f"data: {n} of the {len(corpus)} documents of {args.corpus} (evenly spaced by length); batch size "
        f"{batch_size}; {args.repeats} timed passes after one warm-up batch per variant; load {load_seconds:.1f} s"
    )
    print(
        f"our document setting: {setting.label()}"
        f"{'' if setting.max_seq_length else f', max_seq_length {budget} (the module)'}; "
        f"encode_document prompt {repr(prompt) if prompt else 'none'}; prefix cache "
        f"{'active' if cache_active else 'inactive'}{'' if has_prefix else ' (no cacheable prefix in the prompt)'}"
    )
    tokens = results["document_tokens"]
    print(
        f"document tokens (stock tokenizer, no truncation): min {tokens['min']}, median {tokens['median']:.0f}, "
        f"mean {tokens['mean']:.1f}, max {tokens['max']}; over {STOCK_MAX_SEQ_LENGTH}: "
        f"{tokens['share_over_512']:.1%}; our prompt truncated at {budget}: "
        f"{tokens['ours_prompt_share_truncated']:.1%}, at {SHORT_MAX_SEQ_LENGTH}: "
        f"{tokens['ours_prompt_share_truncated_at_256']:.1%}"
    )
    rows = []
    for key, item in items.items():
        rows.append(
            [
                key,
                f"{median(item['times']):.3f}",
                f"{item['documents_per_second']:.2f}",
                f"{item['speedup_over_stock']:.3f}",
                f"{item['prompt_tokens_per_document']:.1f}",
                f"{item['run_tokens_per_document']:.1f}",
                f"{item['positions_per_document']:.1f}",
                f"{item['padding_share']:.1%}",
                item["layers_run"],
                f"{item['gflops_per_document']:.2f}",
                fmt_bytes(item["peak_bytes"]),
            ]
        )
    print()
    print(
        table(
            [
                "variant",
                "seconds",
                "docs/s",
                "x stock",
                "prompt tok/doc",
                "run tok/doc",
                "positions/doc",
                "padding",
                "layers",
                "GFLOP/doc",
                "peak memory",
            ],
            rows,
        )
    )
    print()
    for v in variants:
        print(f"  {v.key}: {v.name}")
    for key, why in skipped.items():
        print(f"  {key}: skipped: {why}")
    print(
        "  x stock: median over repeats of stock time / variant time (>1: faster than stock); run tok/doc: after "
        "the cached prefix; positions/doc: with padding; padding: padded / real tokens run; GFLOP/doc: real tokens"
    )
    diffs = results["max_abs_diff"]
    print(
        f"  max |cached - uncached| {diffs['cached_vs_uncached']:.1e}; max |joint dense - ours| "
        + (f"{diffs['sparse_dense_vs_ours']:.1e}" if diffs["sparse_dense_vs_ours"] is not None else "n/a")
        + f" (max |x| {results['embedding_max_abs']:.1f}); mean cosine ours_256 vs ours "
        f"{results['mean_cosine_ours_256_vs_ours']:.4f}"
    )

    # What the numbers say (every figure below comes from this run).
    print()
    findings = []
    ours_item, stock_item = items["ours"], items["stock"]
    findings.append(
        f"ours: {ours_item['documents_per_second']:.2f} documents/s = {1000 / ours_item['documents_per_second']:.0f} s "
        f"per 1000 documents (issue: {ISSUE_SECONDS_PER_1000:.0f} s on 2 CPU threads for SmolLM2); the full corpus of "
        f"{len(corpus)} documents at this rate: {len(corpus) / ours_item['documents_per_second'] / 60:.1f} min; "
        f"stock: {stock_item['documents_per_second']:.2f} documents/s"
    )
    extra_prompt = ours_item["prompt_tokens_per_document"] - stock_item["prompt_tokens_per_document"]
    flop_ratio = stock_item["gflops_per_document"] / ours_item["gflops_per_document"]
    findings.append(
        f"prompt: ours runs {ours_item['run_tokens_per_document']:.1f} tokens per document against stock's "
        f"{stock_item['run_tokens_per_document']:.1f} ({extra_prompt:+.1f} prompt tokens, "
        f"{ours_item['prompt_tokens_per_document'] - ours_item['run_tokens_per_document']:.1f} of them from the "
        f"cache) over {ours_item['layers_run']} vs {stock_item['layers_run']} layers: FLOPs predict ours at "
        f"{flop_ratio:.3f}x stock's speed, measured {ours_item['speedup_over_stock']:.3f}x"
    )
    full = items["ours_full"]
    if full["layers_run"] == ours_item["layers_run"]:
        findings.append(f"early exit: the output layer is the last one here ({num_layers} layers): nothing to save")
    else:
        findings.append(
            f"early exit at layer {ours_item['layers_run']} of {num_layers}: {ratio('ours', 'ours_full'):.3f}x the "
            f"full-depth speed (layer count predicts {num_layers / ours_item['layers_run']:.3f}x)"
        )
    short = items["ours_256"]
    findings.append(
        f"truncation to {SHORT_MAX_SEQ_LENGTH} tokens: {ratio('ours_256', 'ours'):.3f}x the speed at {budget} "
        f"({short['run_tokens_per_document']:.1f} vs {ours_item['run_tokens_per_document']:.1f} tokens per document; "
        f"{tokens['ours_prompt_share_truncated_at_256']:.1%} of documents cut vs {tokens['ours_prompt_share_truncated']:.1%}"
        f"; embeddings change: mean cosine {results['mean_cosine_ours_256_vs_ours']:.4f}), so scores differ"
    )
    findings.append(
        f"padding: the length-sorted batches run {ours_item['padding_share']:.1%} padded positions on top of the "
        f"real tokens (ours), {stock_item['padding_share']:.1%} (stock); FLOPs with padding are "
        f"{ours_item['gflops_per_document_with_padding'] / ours_item['gflops_per_document']:.3f}x those without"
    )
    if "ours_sparse" in items:
        findings.append(
            f"dense + sparse in one forward: {ratio('ours_sparse', 'ours'):.3f}x the dense-only speed "
            f"({items['ours_sparse']['layers_run']} layers and the LM head over the word ids, vs "
            f"{ours_item['layers_run']} layers)"
        )
    cache_ratio = ratio("ours", "ours_uncached")
    findings.append(
        f"prefix cache: cached is {cache_ratio:.3f}x the uncached speed "
        f"({ours_item['prompt_tokens_per_document'] - ours_item['run_tokens_per_document']:.1f} tokens per document "
        "served from the cache)"
    )
    for line in findings:
        print(line)

    results.update(
        {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "backbone": backbone,
            "device_name": gpu,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "threads": torch.get_num_threads(),
            "setting": setting.label(),
            "output_layer": setting.output_layer,
            "num_layers": num_layers,
            "documents": n,
            "corpus_size": len(corpus),
            "prefix_cache_active": cache_active,
            "findings": findings,
        }
    )
    write_json(args.json, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
