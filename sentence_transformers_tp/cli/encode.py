"""``st-tp encode``: embed sentences from the command line, a file or stdin."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sentence_transformers_tp.cli.options import (
    add_model_options,
    check_model_spec,
    check_output_path,
    model_from_args,
)
from sentence_transformers_tp.truncation import report_truncation

#: Inputs at least this long get a progress bar.
PROGRESS_BAR_MIN_INPUTS = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``encode`` subcommand."""
    parser = subparsers.add_parser(
        "encode",
        help="embed sentences and write them as .npy or JSON lines",
        description="Embed sentences given as arguments, or one per line of --input (every line is an input, empty "
        "lines included, so output row i belongs to input line i). Writes a .npy matrix when --output ends in .npy, "
        'otherwise JSON lines {"text": ..., "embedding": [...]} (to stdout without --output).',
    )
    parser.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to embed")
    parser.add_argument("--input", help="UTF-8 text file with one sentence per line ('-' for stdin)")
    parser.add_argument("--output", help="output file: .npy, or JSON lines for any other name (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default: 32)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    add_model_options(parser)
    parser.set_defaults(func=run)


def read_inputs(args: argparse.Namespace) -> list[str]:
    """The sentences from the positional arguments and ``--input``.

    Raises:
        ValueError: If there is nothing to embed.
    """
    sentences = list(args.sentences)
    if args.input:
        if args.input == "-":
            text = _decode_utf8(_read_stdin_bytes(), "stdin")
        elif not Path(args.input).is_file():
            raise FileNotFoundError(f"--input {args.input}: no such file")
        else:
            text = _decode_utf8(Path(args.input).read_bytes(), args.input)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        sentences.extend(line.rstrip("\r") for line in lines)
    if not sentences:
        raise ValueError("nothing to embed: give sentences as arguments or with --input FILE")
    return sentences


def _read_stdin_bytes() -> bytes:
    """The raw bytes of standard input (a text-only stand-in such as ``io.StringIO`` is encoded back as UTF-8).

    Python decodes stdin with ``errors="surrogateescape"`` under most locales, so reading text would turn invalid
    bytes into lone surrogates that fail much later in the tokenizer; the bytes are read and decoded strictly instead.
    """
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return buffer.read()
    text = sys.stdin.read()
    return text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text


def _decode_utf8(data: bytes, source: str) -> str:
    """Decode input bytes as UTF-8 (a leading byte-order mark is dropped).

    Args:
        data: The bytes read.
        source: What they were read from, for the message (``"stdin"`` or a file name).

    Returns:
        The text.

    Raises:
        ValueError: If the bytes are not UTF-8; the message names the line and the offending byte.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"--input {source} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); convert it first, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Embed and write the result."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    check_model_spec(args.model)
    check_output_path(args.output, "--output")
    sentences = read_inputs(args)
    model = model_from_args(args)
    with report_truncation():
        embeddings = model.encode(
            sentences,
            batch_size=args.batch_size,
            normalize_embeddings=args.normalize,
            show_progress_bar=len(sentences) >= PROGRESS_BAR_MIN_INPUTS,
            convert_to_numpy=True,
        )
    if args.output:
        Path(args.output).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, embeddings)
        print(f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {args.output}", file=sys.stderr)
        return 0
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for sentence, vector in zip(sentences, embeddings):
            out.write(json.dumps({"text": sentence, "embedding": [float(x) for x in vector]}) + "\n")
    finally:
        if args.output:
            out.close()
            print(f"Wrote {len(sentences)} embeddings to {args.output}", file=sys.stderr)
    return 0
