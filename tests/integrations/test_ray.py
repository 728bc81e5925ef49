"""Ray: the TokenPrependingEncoder actor class, model specs sent by value, and embed_dataset on a local cluster."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

pytest.importorskip("ray")

import ray  # noqa: E402

from sentence_transformers_tp.factory import load_model  # noqa: E402
from sentence_transformers_tp.integrations import ModelSpec  # noqa: E402
from sentence_transformers_tp.integrations.ray import TokenPrependingEncoder, embed_dataset  # noqa: E402
from tests.integrations.conftest import ATOL, LAYERS, QUERY_TEMPLATE, TEXTS, max_diff, run_example  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def asymmetric(asymmetric_model_dir):
    """The saved asymmetric tiny model, loaded once."""
    return load_model(str(asymmetric_model_dir), device="cpu")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local 2-CPU Ray instance without dashboard or usage stats (session files under pytest's temporary
    folder), shut down after the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        try:
            yield
        finally:
            ray.shutdown()


def test_model_spec_is_small_picklable_and_coercible(asymmetric_model_dir):
    """ModelSpec pickles by value and coerces names, dicts and specs (overrides win, None is ignored)."""
    spec = ModelSpec("smollm2", template=["a {sentence}", "b {sentence}"], tp_start=1, module_kwargs={"x": 1})
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.template == ("a {sentence}", "b {sentence}")
    assert ModelSpec.coerce(str(asymmetric_model_dir)) == ModelSpec(str(asymmetric_model_dir))
    assert ModelSpec.coerce({"preset": "p"}, template="metaeol", tp_exit=None) == ModelSpec(
        preset="p", template="metaeol"
    )
    assert ModelSpec.coerce(spec, tp_start=2).tp_start == 2
    with pytest.raises(ValueError, match="saved model"):
        ModelSpec(str(asymmetric_model_dir), template="metaeol").load()


def test_encoder_embeds_batches_with_the_chosen_task(asymmetric_model_dir, tp_backbone, tiny_preset, asymmetric):
    """The actor class (called in-process) adds the task's vectors as the output column and keeps the others."""
    batch = {"id": np.arange(len(TEXTS)), "body": np.array(TEXTS, dtype=object)}
    expected = {
        "document": asymmetric.encode_document(TEXTS),
        "query": asymmetric.encode_query(TEXTS),
        None: asymmetric.encode(TEXTS),
    }
    backbone_spec = ModelSpec(
        str(tp_backbone), template="prompteol", module_kwargs={"query_template": QUERY_TEMPLATE}, **LAYERS
    )
    for task, vectors in expected.items():
        encoder = TokenPrependingEncoder(str(asymmetric_model_dir), text_column="body", output_column="vec", task=task)
        out = encoder(batch)
        assert set(out) == {"id", "body", "vec"} and out["vec"].dtype == np.float32
        assert max_diff(out["vec"], vectors) <= ATOL, task
    from_backbone = TokenPrependingEncoder(backbone_spec, text_column="body", task="query")
    assert max_diff(from_backbone(batch)["embedding"], expected["query"]) <= ATOL
    preset = TokenPrependingEncoder({"preset": str(tiny_preset)}, text_column="body")
    assert max_diff(preset(batch)["embedding"], expected["document"]) <= ATOL
    assert preset({"body": np.array([], dtype=object)})["embedding"].shape == (0, 32)
    with pytest.raises(KeyError, match="text"):
        TokenPrependingEncoder(str(asymmetric_model_dir))(batch)
    with pytest.raises(ValueError, match="task"):
        TokenPrependingEncoder(str(asymmetric_model_dir), task="passage")


def test_docs_example_embeds_a_dataset_on_a_local_cluster(local_ray, asymmetric_model_dir, asymmetric, substitutions):
    """The docs' Ray example (2 actors, saved model by path) gives the local encode_document vectors per id."""
    namespace = run_example("ray", substitutions(asymmetric_model_dir))
    texts, vectors, rows = namespace["texts"], namespace["vectors"], namespace["rows"]
    assert [row["id"] for row in rows] == list(range(len(texts)))
    assert [row["text"] for row in rows] == texts
    assert vectors.shape == (len(texts), 32) and vectors.dtype == np.float32
    assert max_diff(vectors, asymmetric.encode_document(texts)) <= ATOL
    assert isinstance(namespace["lazy"], ray.data.Dataset)  # built, not run (see the next test for a run)


def test_backbone_spec_with_query_task_on_a_local_cluster(local_ray, tp_backbone, asymmetric):
    """A backbone + template spec (built by each actor) with task="query" gives the local encode_query vectors."""
    spec = ModelSpec(
        str(tp_backbone), template="prompteol", module_kwargs={"query_template": QUERY_TEMPLATE}, **LAYERS
    )
    ds = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(TEXTS)])
    out = embed_dataset(ds, spec, task="query", output_column="q", batch_size=2, concurrency=1, num_cpus=1)
    rows = sorted(out.take_all(), key=lambda row: row["id"])
    assert max_diff(np.stack([row["q"] for row in rows]), asymmetric.encode_query(TEXTS)) <= ATOL
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"
