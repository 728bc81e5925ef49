"""Helpers shared by the benchmark scripts: data, random-weight model shapes, timing, memory, FLOPs, tables."""

from __future__ import annotations

import contextlib
import csv
import json
import resource
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "sts" / "stsb" / "dev.tsv"

#: Random-weight model shapes (Llama architecture). ``smollm2`` is the real embedded default instead.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
    },
    "smollm2-random": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "thin32": {  # Llama-2-7B's depth (32 layers) at a tiny width: times the host work of a forward
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    },
    "llama2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
    },
}


def load_sentences(path: Path, count: int | None) -> list[str]:
    """A fixed subset of STS-B dev sentences: evenly spaced over both columns, so every genre is represented.

    Args:
        path: The dev.tsv (header, tab separated, no quoting).
        count: How many sentences (None: all of them, both columns).

    Returns:
        The sentences.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    first, second = header.index("sentence1"), header.index("sentence2")
    pool = [row[column] for row in body for column in (first, second)]
    if count is None:
        return pool
    if count > len(pool):
        raise SystemExit(f"--sentences {count} is more than the {len(pool)} sentences of {path}")
    step = len(pool) / count
    return [pool[int(i * step)] for i in range(count)]


def smollm2_tokenizer_dir() -> Path:
    """The folder holding the embedded SmolLM2 checkpoint (its tokenizer files are used for random shapes)."""
    from sentence_transformers_tp.backbones import resolve_backbone

    return Path(resolve_backbone("smollm2"))


def build_random_checkpoint(shape: str, tokenizer_dir: Path, directory: Path) -> Path:
    """Write a Llama config of ``shape``, the tokenizer and an empty weights file: loading initialises randomly.

    Args:
        shape: A key of :data:`SHAPES`.
        tokenizer_dir: Folder with the tokenizer files.
        directory: Where to write.

    Returns:
        ``directory``.
    """
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.save_pretrained(str(directory))
    # Room for the placeholder token, so that no embedding resize is needed.
    vocab = (len(tokenizer) + 1 + 63) // 64 * 64
    LlamaConfig(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id, **SHAPES[shape]).save_pretrained(str(directory))
    save_file({}, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the process's peak RSS (reset through /proc on Linux)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[int]]:
        """Yield a one-item list that receives the peak in bytes."""
        import torch

        result = [0]
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        yield result
        if self.cuda:
            torch.cuda.synchronize(self.device)
            result[0] = torch.cuda.max_memory_allocated(self.device)
        else:
            result[0] = _peak_rss()


def _peak_rss() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def batches_like_encode(sentences: Sequence[str], batch_size: int) -> list[list[str]]:
    """The batches ``SentenceTransformer.encode`` forms: sorted by decreasing text length, then chunked."""
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    ordered = [sentences[i] for i in order]
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def synchronize(device: Any) -> None:
    """Wait for the device (CUDA kernels run asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Sequence[float]) -> float:
    """Median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


def fmt_bytes(value: float) -> str:
    """Bytes as MiB/GiB."""
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def layer_flops(config: Any, layer_params: int, rows: Sequence[tuple[int, int]], depth: int) -> float:
    """Model FLOPs of running rows of real (unpadded) tokens through ``depth`` decoder layers.

    Per token and layer: 2 x the layer's parameters (the matrix products) + 4 x heads x head_dim x keys attended
    (scores and weighted values).

    Args:
        config: The backbone's config (heads, head_dim).
        layer_params: Parameters of one decoder layer.
        rows: ``(cached prefix attended, tokens run)`` of each row.
        depth: Decoder layers run.

    Returns:
        The FLOPs.
    """
    heads = config.num_attention_heads
    attention_width = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    return sum(depth * (2 * layer_params * r + 4 * attention_width * (r * p + r * (r + 1) / 2)) for p, r in rows)


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """Write a benchmark's results as JSON (nothing when ``path`` is None), creating the folder.

    Args:
        path: The file, or None.
        results: JSON-serialisable results.
    """
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
