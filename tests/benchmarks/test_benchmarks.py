"""The benchmark scripts run end to end on a tiny random model and report what the performance issue asks for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ..conftest import requires_smollm2

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures" / "data" / "sts" / "stsb" / "dev.tsv"


def load_script(name: str) -> ModuleType:
    """Import a script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(f"st_tp_benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@requires_smollm2
def test_throughput_reports_every_variant_and_batch_size(tmp_path):
    """throughput.py times stock, raw and our variants at each batch size; the cache matches the uncached path."""
    throughput = load_script("throughput")
    out = tmp_path / "throughput.json"
    throughput.main(
        ["--shape", "tiny", "--data", str(DATA), "--sentences", "10", "--batch-sizes", "4", "8", "--repeats", "1"]
        + ["--threads", "1", "--json", str(out)]
    )
    results = json.loads(out.read_text())
    assert results["output_layer"] == 7 and results["num_layers"] == 8  # 27 of 32, scaled to 8 layers
    assert sorted(results["batch_sizes"]) == ["4", "8"]
    for result in results["batch_sizes"].values():
        variants = result["variants"]
        assert sorted(variants) == ["ours", "ours_full", "ours_uncached", "raw", "stock"]
        assert all(v["sentences_per_second"] > 0 and len(v["times"]) == 1 for v in variants.values())
        # The cache runs fewer tokens per sentence than the whole prompt; stock runs the same prompt without TP's
        # placeholder (SmolLM2's tokenizer also splits off the space before it: 2 tokens).
        assert variants["ours"]["tokens_per_sentence"] < variants["ours_uncached"]["tokens_per_sentence"]
        added = variants["ours_uncached"]["tokens_per_sentence"] - variants["stock"]["tokens_per_sentence"]
        assert added == pytest.approx(2)
        assert result["cache_max_abs_diff"] <= 1e-4
        assert result["host_ms_per_batch"]["ours"] > 0
    assert "applies to an H100" in results["verdict"]


@requires_smollm2
def test_run_reports_the_ratios_with_bounds_and_targets(tmp_path):
    """run.py prints every ratio of the issue with its token bound and target, and checks the cache on the run."""
    run = load_script("run")
    out = tmp_path / "run.json"
    run.main(
        ["--shape", "tiny", "--data", str(DATA), "--sentences", "8", "--batch-size", "4", "--repeats", "1"]
        + ["--threads", "1", "--json", str(out)]
    )
    results = json.loads(out.read_text())
    names = [item["ratio"] for item in results["ratios"]]
    assert "TP on / TP off (PromptEOL, cached)" in names
    assert "MetaEOL+TP speed-up from the cache (uncached / cached)" in names
    assert all(item["measured"] > 0 and item["bound"] > 0 for item in results["ratios"])
    assert max(results["cache_max_abs_diff"].values()) <= 1e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("script", ["run", "throughput"])
def test_cuda_mode_without_a_gpu_says_so(script, capsys):
    """--device cuda on a machine without CUDA stops with a message that names the problem."""
    module = load_script(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--device", "cuda"])
    assert "needs a CUDA GPU" in capsys.readouterr().err


def teardown_module() -> None:
    """The scripts put benchmarks/ on sys.path for their shared helpers; take it off again."""
    while str(BENCHMARKS) in sys.path:
        sys.path.remove(str(BENCHMARKS))


@requires_smollm2
def test_documents_reports_every_variant_and_matching_embeddings(tmp_path):
    """documents.py times stock and our document variants on a corpus; cached and uncached embeddings agree."""
    documents = load_script("documents")
    corpus = Path(__file__).resolve().parents[1] / "evaluation" / "fixtures" / "beir" / "corpus.jsonl"
    out = tmp_path / "documents.json"
    documents.main(
        ["--shape", "tiny", "--corpus", str(corpus), "--documents", "4", "--batch-size", "2", "--repeats", "1"]
        + ["--threads", "1", "--json", str(out)]
    )
    results = json.loads(out.read_text())
    assert {"stock", "ours", "ours_full", "ours_256"} <= set(results["variants"])
    for variant in results["variants"].values():
        assert variant["documents_per_second"] > 0 and 0 <= variant["padding_share"] < 1
    assert results["variants"]["ours"]["layers_run"] < results["variants"]["ours_full"]["layers_run"]
    assert results["max_abs_diff"]["cached_vs_uncached"] < 1e-4
    assert results["documents"] == 4 and results["findings"]


def test_sts_baselines_scores_a_stock_model_on_each_task(tmp_path, capsys):
    """sts_baselines.py scores a stock sentence-transformers folder with evaluate_sts: one JSON line per task."""
    from ..evaluation.conftest import FIXTURE_DATA, build_tiny_sentence_transformer

    model = build_tiny_sentence_transformer(tmp_path / "backbone")
    model.save(str(tmp_path / "stock"))
    baselines = load_script("sts_baselines")
    assert baselines.main([str(FIXTURE_DATA), "--split", "dev", "--model", str(tmp_path / "stock")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {(row["task"], row["split"]) for row in rows} == {("stsb", "dev"), ("sickr", "trial")}
    assert all(row["n_pairs"] > 0 and -100 <= row["spearman"] <= 100 for row in rows)
