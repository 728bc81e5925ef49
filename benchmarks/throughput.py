"""Throughput of our ``encode`` against stock sentence-transformers and a raw Hugging Face forward (sentences/s).

The measurement of the GPU item of the issue "Performance: early exit, shared template-prefix KV cache, and a
benchmark suite" (Llama-2-7B shape, bf16, STS-B dev sentences in the PromptEOL prompt, batch 64 and 256):

    python benchmarks/throughput.py --device cuda --dtype bfloat16 --shape llama2-7b
    HF_HUB_OFFLINE=1 python benchmarks/throughput.py           # SmolLM2-135M on CPU (fp32), 256 sentences
    python benchmarks/throughput.py --shape thin32             # 32 layers of tiny width: the host work per batch

Every variant encodes the same sentences, at every batch size:

- ``stock``: ``SentenceTransformer([Transformer, Pooling("lasttoken")])`` on the vanilla PromptEOL prompts (rendered
  beforehand), all layers;
- ``raw``: the backbone alone over the same sorted batches, tokenized and moved to the device beforehand, all layers,
  the last token's state copied to the host after each batch (as ``encode`` does);
- ``ours``: ``SentenceTransformer([TokenPrependingTransformer])``, PromptEOL with TP before layers 1..6 and output
  layer 27 of 32 (``--output-layer``; scaled to the depth of other shapes), prefix cache on; also without the cache
  and at full depth.

Before timing, every variant makes one full untimed pass at every batch size, so every batch shape is warmed up
(kernels, allocator, the prefix cache). Then ``--repeats`` passes, the variants interleaved and the order reversed
every other repeat; the report gives medians, sentences/s, tokens per sentence, achieved TFLOP/s (model FLOPs of the
real tokens run), peak memory, the host work of tokenizing a batch, and the ratios against ``stock`` and ``raw``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_DATA,
    SHAPES,
    PeakMemory,
    batches_like_encode,
    build_random_checkpoint,
    fmt_bytes,
    layer_flops,
    load_sentences,
    median,
    smollm2_tokenizer_dir,
    synchronize,
    table,
    write_json,
)

#: The issue's target: our encode (TP, output layer 27) at batch 64 on an H100 with the Llama-2-7B shape.
TARGET_SENTENCES_PER_SECOND = 1100.0
TARGET_BATCH_SIZE = 64
#: Reference points the issue measured on an H100 (same shape and prompts): batch size -> sentences/s.
REFERENCE_STOCK = {64: 927.0, 256: 919.0}
REFERENCE_RAW = {64: 1062.0, 256: 1011.0}
TP_START, TP_EXIT = 1, 7


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults depend on the device: the issue's setting on CUDA, SmolLM2 on CPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--shape", choices=["smollm2", *SHAPES], help="default: llama2-7b on CUDA, smollm2 on CPU")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA")
    parser.add_argument("--sentences", type=int, help="STS-B dev sentences (default: all 3000 on CUDA, 256 on CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], help="default: 64 256")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default: 3)")
    parser.add_argument("--output-layer", type=int, help="our output layer (default: 27 of 32, scaled to the depth)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="STS-B dev.tsv")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder for the random shapes (default: SmolLM2's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.shape = args.shape or ("llama2-7b" if cuda else "smollm2")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.sentences is None and not cuda:
        args.sentences = 256
    if (args.sentences is not None and args.sentences < 1) or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--sentences, --repeats and --batch-sizes must be >= 1")
    import torch

    if cuda and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device} needs a CUDA GPU, but torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}). Leave --device out for the CPU run."
        )
    if not cuda and args.shape == "llama2-7b":
        print("note: a 7B model on CPU takes very long; --shape thin32 times the host work", file=sys.stderr)
    return args


@dataclass
class Variant:
    """One way of encoding the sentences, timed at one batch size."""

    key: str
    name: str
    work: Callable[[], Any]
    flops: float
    tokens: float
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    output: Any = None


def load_models(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any, Any]:
    """The stock sentence-transformers model, ours, and our module (same checkpoint, device and dtype)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers.utils import logging as hf_logging

    from sentence_transformers_tp import TokenPrependingTransformer
    from sentence_transformers_tp.backbones import resolve_backbone

    model_kwargs: dict[str, Any] = {"dtype": getattr(torch, args.dtype)}
    if args.shape == "smollm2":
        path = resolve_backbone("smollm2")
    else:
        path = str(build_random_checkpoint(args.shape, args.tokenizer or smollm2_tokenizer_dir(), workdir / "model"))
        if args.device != "cpu":
            model_kwargs["device_map"] = args.device  # initialise the random weights on the GPU directly
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the random shapes' "missing weights" load report
    try:
        # Plain text modality: with a chat template in the tokenizer, Transformer would otherwise wrap every
        # string in the chat template (SmolLM2's adds a system prompt: ~2x the tokens).
        transformer = Transformer(
            path,
            model_kwargs=dict(model_kwargs),
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        if transformer.tokenizer.pad_token is None:
            transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
        stock = SentenceTransformer(modules=[transformer, pooling], device=args.device)
        module = TokenPrependingTransformer(
            path, "prompteol", tp_start=TP_START, tp_exit=TP_EXIT, model_kwargs=dict(model_kwargs)
        )
        ours = SentenceTransformer(modules=[module], device=args.device)
    finally:
        hf_logging.set_verbosity(verbosity)
    stock.eval()
    ours.eval()
    return stock, ours, module


def host_milliseconds(preprocess: Callable[[list[str]], Any], batches: Sequence[list[str]]) -> float:
    """Median host time (ms) of tokenizing one batch into tensors: the work the device waits for between batches."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        preprocess(batch)
        times.append((time.perf_counter() - start) * 1e3)
    return median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and print the report; returns the results as a dict."""
    import numpy as np
    import torch
    import transformers

    from sentence_transformers_tp.prepending import resolve_output_layer
    from sentence_transformers_tp.templates import render, resolve_templates

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sentences = load_sentences(args.data, args.sentences)
    workdir = Path(tempfile.mkdtemp(prefix="st-tp-throughput-"))
    try:
        started = time.perf_counter()
        stock, ours, module = load_models(args, workdir)
        load_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    num_layers = module.num_layers
    output_layer = args.output_layer if args.output_layer is not None else max(1, round(num_layers * 27 / 32))
    output_layer = resolve_output_layer(output_layer, num_layers)
    (template,) = resolve_templates("prompteol")
    stock_texts = [render(template, sentence, None).text for sentence in sentences]
    backbone = stock[0].model
    layer_params = sum(p.numel() for p in module.decoder_layers[0].parameters())
    config = module.model.config
    peak = PeakMemory(device)
    results: dict[str, Any] = {"batch_sizes": {}}

    for batch_size in args.batch_sizes:
        stock_batches = batches_like_encode(stock_texts, batch_size)
        our_batches = batches_like_encode(sentences, batch_size)
        # Token counts and model FLOPs of what each variant runs.
        stock_rows: list[tuple[int, int]] = []
        raw_inputs = []
        for batch in stock_batches:
            features = stock.preprocess(batch)
            stock_rows += [(0, int(n)) for n in features["attention_mask"].sum(1).tolist()]
            raw_inputs.append((features["input_ids"].to(device), features["attention_mask"].to(device)))
        whole_rows: list[tuple[int, int]] = []
        cached_rows: list[tuple[int, int]] = []
        for batch in our_batches:
            features = module.preprocess(batch)
            whole_rows += [(0, int(n)) for n in features["attention_mask"].sum(1).tolist()]
            for group in features["prefix_groups"]:
                cached_rows += [(group.prefix_length, int(n)) for n in group.attention_mask.sum(1).tolist()]
            cached_rows += [(0, int(features["attention_mask"][r].sum())) for r in features["prefix_rest"]]

        def raw_forward() -> np.ndarray:
            states = []
            with torch.inference_mode():
                for input_ids, attention_mask in raw_inputs:
                    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    positions = torch.arange(attention_mask.shape[1], device=device)
                    last = (attention_mask * positions).argmax(1)
                    rows = torch.arange(hidden.last_hidden_state.shape[0], device=device)
                    states.append(hidden.last_hidden_state[rows, last].float().cpu())
            return torch.cat(states).numpy()

        def encode_ours(layer: int, cache: bool) -> Callable[[], np.ndarray]:
            def work() -> np.ndarray:
                module.output_layer, module.prefix_cache = layer, cache
                return ours.encode(sentences, batch_size=batch_size, convert_to_numpy=True)

            return work

        def tokens(rows: list[tuple[int, int]]) -> float:
            return sum(r for _, r in rows) / len(sentences)

        variants = [
            Variant(
                "stock",
                "stock sentence-transformers (last-token pooling)",
                lambda: stock.encode(stock_texts, batch_size=batch_size, convert_to_numpy=True),
                layer_flops(config, layer_params, stock_rows, num_layers),
                tokens(stock_rows),
            ),
            Variant(
                "raw",
                "raw HF forward (pre-tokenized, same batches)",
                raw_forward,
                layer_flops(config, layer_params, stock_rows, num_layers),
                tokens(stock_rows),
            ),
            Variant(
                "ours",
                f"ours: TP, output layer {output_layer}, cached",
                encode_ours(output_layer, True),
                layer_flops(config, layer_params, cached_rows, output_layer),
                tokens(cached_rows),
            ),
            Variant(
                "ours_uncached",
                f"ours: TP, output layer {output_layer}, uncached",
                encode_ours(output_layer, False),
                layer_flops(config, layer_params, whole_rows, output_layer),
                tokens(whole_rows),
            ),
            Variant(
                "ours_full",
                f"ours: TP, output layer {num_layers} (full depth), cached",
                encode_ours(num_layers, True),
                layer_flops(config, layer_params, cached_rows, num_layers),
                tokens(cached_rows),
            ),
        ]

        def measure(variant: Variant) -> None:
            with peak.measure() as memory:
                synchronize(device)
                start = time.perf_counter()
                output = variant.work()
                synchronize(device)
                seconds = time.perf_counter() - start
            variant.times.append(seconds)
            variant.peaks.append(memory[0])
            variant.output = output

        for variant in variants:  # one full untimed pass: every batch shape of every variant warmed up
            measure(variant)
            variant.times.clear()
            variant.peaks.clear()
        for repeat in range(args.repeats):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                measure(variant)
        print(f"  batch size {batch_size} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

        by_key = {variant.key: variant for variant in variants}
        module.output_layer, module.prefix_cache = output_layer, True
        host = {
            "stock": host_milliseconds(stock.preprocess, stock_batches),
            "ours": host_milliseconds(module.preprocess, our_batches),
        }
        cache_diff = float(np.abs(by_key["ours"].output - by_key["ours_uncached"].output).max())

        def rate(key: str) -> float:
            return len(sentences) / median(by_key[key].times)

        results["batch_sizes"][batch_size] = {
            "variants": {
                v.key: {
                    "name": v.name,
                    "times": v.times,
                    "sentences_per_second": rate(v.key),
                    "tokens_per_sentence": v.tokens,
                    "tflops": v.flops / median(v.times) / 1e12,
                    "peak_bytes": max(v.peaks),
                }
                for v in variants
            },
            "ours_over_stock": rate("ours") / rate("stock"),
            "ours_over_raw": rate("ours") / rate("raw"),
            "host_ms_per_batch": host,
            "cache_max_abs_diff": cache_diff,
            "embedding_max_abs": float(np.abs(by_key["ours_uncached"].output).max()),
        }

    # ----------------------------------------------------------------------------------------------------- report
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print()
    print("sentence-transformers-tp throughput")
    print(
        f"model: {args.shape} ({type(module.model).__name__}, {num_layers} layers, "
        f"{sum(p.numel() for p in module.model.parameters()) / 1e9:.2f}B parameters), device {args.device}"
        f"{f' ({gpu})' if gpu else ''}, dtype {args.dtype}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {torch.get_num_threads()} CPU threads, {platform.machine()}, "
        f"attention {getattr(module.model.config, '_attn_implementation', '?')}"
    )
    print(
        f"data: {len(sentences)} STS-B dev sentences, PromptEOL; TP before layers {TP_START}..{TP_EXIT - 1}; "
        f"{args.repeats} timed passes after one warm-up pass per variant and batch size; load {load_seconds:.1f} s"
    )
    rows = []
    for batch_size, result in results["batch_sizes"].items():
        for key, item in result["variants"].items():
            rows.append(
                [
                    batch_size,
                    item["name"],
                    f"{median(item['times']):.3f}",
                    f"{item['sentences_per_second']:.1f}",
                    f"{item['tokens_per_sentence']:.1f}",
                    f"{item['tflops']:.3f}" if item["tflops"] < 1 else f"{item['tflops']:.1f}",
                    fmt_bytes(item["peak_bytes"]),
                ]
            )
    print()
    print(table(["batch", "variant", "seconds", "sentences/s", "tokens/sent.", "TFLOP/s", "peak memory"], rows))
    print()
    rows = []
    for batch_size, result in results["batch_sizes"].items():
        rows.append(
            [
                batch_size,
                f"{result['ours_over_stock']:.3f}",
                f"{result['ours_over_raw']:.3f}",
                f"{result['host_ms_per_batch']['stock']:.2f}",
                f"{result['host_ms_per_batch']['ours']:.2f}",
                f"{result['cache_max_abs_diff']:.1e} (max |x| {result['embedding_max_abs']:.1f})",
            ]
        )
    print(
        table(
            [
                "batch",
                "ours / stock",
                "ours / raw",
                "host ms/batch stock",
                "host ms/batch ours",
                "max |cached - uncached|",
            ],
            rows,
        )
    )
    print()
    target = results["batch_sizes"].get(TARGET_BATCH_SIZE)
    is_h100 = bool(gpu and "H100" in gpu and args.shape == "llama2-7b" and args.dtype == "bfloat16")
    if not is_h100:
        verdict = (
            f"target: {TARGET_SENTENCES_PER_SECOND:.0f} sentences/s at batch {TARGET_BATCH_SIZE} applies to an H100 "
            "with --shape llama2-7b --dtype bfloat16; this run gives the ratios only"
        )
    elif target is None:
        verdict = f"target: not measured (needs --batch-sizes {TARGET_BATCH_SIZE})"
    else:
        measured = target["variants"]["ours"]["sentences_per_second"]
        met = "met" if measured >= TARGET_SENTENCES_PER_SECOND else "NOT MET"
        verdict = (
            f"target: ours at batch {TARGET_BATCH_SIZE} >= {TARGET_SENTENCES_PER_SECOND:.0f} sentences/s on an H100: "
            f"{measured:.0f}, {met} (issue's reference on an H100: stock {REFERENCE_STOCK}, raw {REFERENCE_RAW})"
        )
    print(verdict)
    results.update(
        {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "device_name": gpu,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "output_layer": output_layer,
            "num_layers": num_layers,
            "sentences": len(sentences),
            "verdict": verdict,
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
