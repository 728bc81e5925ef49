"""One truncation report per call instead of one per batch.

``TokenPrependingTransformer.preprocess`` cuts sentences that do not fit in ``max_seq_length`` (the template and the
last token are kept) and reports how many it cut. sentence-transformers' ``encode`` calls ``preprocess`` once per batch
and gives a module no signal at the end of a call, so on its own the module can only report per batch. Inside
:func:`report_truncation` the batches are counted instead, and one warning with the totals is logged when the block
ends. The package's own entry points use it (every ``encode`` call of the evaluators, the tuners' passes, ``st-tp
encode``, the LangChain / LlamaIndex classes' ``embed_*`` calls), and users can wrap their own calls::

    from sentence_transformers_tp import report_truncation

    with report_truncation() as report:
        embeddings = model.encode_document(documents)
    print(report.truncated, "of", report.texts, "documents were cut")

Blocks nest: an inner block adds to the outer one, which logs once. The active report is a context variable, so
threads do not mix their counts.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_ACTIVE: contextvars.ContextVar[TruncationReport | None] = contextvars.ContextVar(
    "sentence_transformers_tp_truncation_report", default=None
)


@dataclass
class TruncationReport:
    """Counts of one :func:`report_truncation` block.

    Attributes:
        texts: Texts preprocessed in the block.
        truncated: Texts whose sentence was cut to fit.
        max_lengths: The token budgets that cut them (one per task setting that truncated).
    """

    texts: int = 0
    truncated: int = 0
    max_lengths: set[int] = field(default_factory=set)

    def message(self) -> str:
        """The warning logged for this report (empty when nothing was cut)."""
        if not self.truncated:
            return ""
        return truncation_message(self.truncated, self.texts, sorted(self.max_lengths))


def truncation_message(truncated: int, texts: int, max_lengths: list[int]) -> str:
    """The one-line report of ``truncated`` cut texts out of ``texts``.

    Args:
        truncated: Texts that were cut.
        texts: Texts preprocessed.
        max_lengths: The token budgets that cut them.
    """
    budget = "/".join(str(length) for length in max_lengths)
    return (
        f"{truncated} of {texts} texts did not fit in max_seq_length={budget} tokens with their prompt; their "
        "sentences were truncated (the template and the last token are kept)."
    )


def record_truncation(truncated: int, texts: int, max_length: int) -> bool:
    """Add one ``preprocess`` call's counts to the active report.

    Args:
        truncated: Texts of the call that were cut.
        texts: Texts of the call.
        max_length: The token budget of the call.

    Returns:
        True if a :func:`report_truncation` block is active (it will report), False if the caller must report itself.
    """
    report = _ACTIVE.get()
    if report is None:
        return False
    report.texts += texts
    if truncated:
        report.truncated += truncated
        report.max_lengths.add(max_length)
    return True


@contextmanager
def report_truncation() -> Iterator[TruncationReport]:
    """Count truncation over a block and log one warning at its end (see the module docstring).

    Yields:
        The block's :class:`TruncationReport` (an enclosing block's, when nested).
    """
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    report = TruncationReport()
    token = _ACTIVE.set(report)
    try:
        yield report
    finally:
        _ACTIVE.reset(token)
    if report.truncated:
        logger.warning(report.message())
