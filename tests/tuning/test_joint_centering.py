"""The joint search measures centering with the Centering module itself: its reported gain is what a model with
``st-tp center``'s module (fitted on the same unlabeled sentences) scores."""

from __future__ import annotations

import pytest
from sentence_transformers import SentenceTransformer

from sentence_transformers_tp import TokenPrependingTransformer
from sentence_transformers_tp.centering import fit, read_sentences
from sentence_transformers_tp.evaluation import evaluate_sts
from sentence_transformers_tp.tuning import tune_joint

from ..test_joint_tuning import data_dir  # noqa: F401 - the fixture


def test_centering_gain_is_what_the_fitted_module_scores(tiny_llama, data_dir):  # noqa: F811
    """Winner score + centering_gain equals evaluate_sts of the winner with Centering fitted by centering.fit."""
    module = TokenPrependingTransformer(str(tiny_llama), "prompteol")
    result = tune_joint(
        module,
        data_dir,
        sample=12,
        templates=("prompteol", "knowledge"),
        tp_bands=[(1, 3)],
        demonstrations=[],
        cp_layers=[],
        finalists=2,
        centering_sentences=15,
        second_task="",
        batch_size=6,
    )
    model = SentenceTransformer(modules=[TokenPrependingTransformer(str(tiny_llama), **result.module_kwargs())])
    fit(model, read_sentences("stsb:train", data_dir=data_dir, max_sentences=15, seed=0), batch_size=6)
    centered = evaluate_sts(model, data_dir, tasks=["stsb"], split="dev", batch_size=6).tasks["stsb"].spearman
    assert centered == pytest.approx(result.winner.best + result.centering_gain, abs=1e-4)
