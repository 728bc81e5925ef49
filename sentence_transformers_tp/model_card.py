"""Model-card data for Token Prepending models: usage snippet, the whole setting, hub metadata and results.

The card a saved or pushed model carries (``README.md``) has the hub metadata the Hugging Face Hub and the MTEB
leaderboard read: ``base_model`` (the backbone's hub id), ``license`` and ``language`` (the backbone's, when known),
``library_name: sentence-transformers``, ``pipeline_tag: sentence-similarity``, tags, and, after
:func:`~sentence_transformers_tp.evaluation.add_evaluation_results`, a ``model-index`` with the scores ``st-tp evaluate --json`` measured (in the form
sentence-transformers writes for its evaluators: metric values as fractions, e.g. ``spearman_cosine: 0.7653``)::

    from sentence_transformers_tp.evaluation import add_evaluation_results

    model = SentenceTransformer("my-tp-model", trust_remote_code=True)
    add_evaluation_results(model, "results.json")  # rows of `st-tp evaluate --model my-tp-model --json results.json`
    model.push_to_hub("org/my-tp-model")

Only rows measured with the model's own setting are accepted (a row of another setting, e.g. a
``--compare-vanilla`` row, is skipped; a row whose setting differs from the model's is an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub.repocard_data import EvalResult, eval_results_to_model_index, model_index_to_eval_results
from sentence_transformers import SentenceTransformerModelCardData

from sentence_transformers_tp.centering import centering_module
from sentence_transformers_tp.provenance import backbone_card_language, backbone_license, backbone_source
from sentence_transformers_tp.records import label

if TYPE_CHECKING:
    from sentence_transformers_tp.module import TokenPrependingTransformer

#: The organisation prefix of generated model names (MTEB files results under ``<org>/<name>``).
MODEL_NAME_PREFIX = "sentence-transformers-tp"


@dataclass
class TokenPrependingModelCardData(SentenceTransformerModelCardData):
    """Model-card data of a ``SentenceTransformer`` whose first module is a ``TokenPrependingTransformer``.

    Compared to the stock card, the usage snippet installs the package and passes ``trust_remote_code=True``
    (sentence-transformers 6 requires it for custom modules), and the card states the backbone, the template(s),
    the TP layer band and the output layer.

    Args:
        tp_settings: The TP settings shown in the card (filled in automatically from the module).
        evaluation_results: ``st-tp evaluate`` result dicts of the model's own setting, attached by
            :func:`~sentence_transformers_tp.evaluation.add_evaluation_results`, which also sets
            ``evaluation_index`` (their ``model-index`` entries) and ``evaluation_section`` (their Evaluation
            section).
        **kwargs: The fields of :class:`~sentence_transformers.SentenceTransformerModelCardData`.
    """

    tp_settings: dict[str, Any] = field(default_factory=dict)
    evaluation_results: list[dict[str, Any]] = field(default_factory=list)
    evaluation_index: list[EvalResult] = field(default_factory=list, init=False, repr=False)
    evaluation_section: str = field(default="", init=False, repr=False)
    template_path: Path = field(default=Path(__file__).parent / "model_card_template.md", init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.add_tags(["token-prepending", "sentence-transformers-tp"])

    def to_dict(self) -> dict[str, Any]:
        """The stock card data plus the ``model-index`` entries and Evaluation section of ``evaluation_results``."""
        data = super().to_dict()
        data.pop("evaluation_index", None)
        data.pop("evaluation_section", None)
        if self.evaluation_index:
            name = self.model_id or self.model_name or "model"
            ours = list(self.evaluation_index)
            existing = data.get("model-index") or []
            if existing:  # results of sentence-transformers evaluators, kept next to ours
                ours = [*model_index_to_eval_results(list(existing))[1], *ours]
            data["model-index"] = eval_results_to_model_index(name, ours)
            data["tp_evaluation"] = self.evaluation_section
        return data

    def get_model_specific_metadata(self) -> dict[str, Any]:
        """The stock metadata plus ``centering``: what the model's ``Centering`` module does (None without one)."""
        metadata = super().get_model_specific_metadata()
        if self.model is not None:
            module = centering_module(self.model)
            metadata["centering"] = module.describe() if module is not None else None
        return metadata

    def generate_usage_snippet(self) -> str:
        """The usage snippet: ``pip install`` and ``SentenceTransformer(..., trust_remote_code=True)``."""
        model_id = self.model_id or "path/to/this-model"
        examples = (self.usage_examples_display or self.usage_examples or [])[:3] or [
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ]
        lines = [
            "```bash",
            "pip install -U sentence-transformers-tp",
            "```",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            "# trust_remote_code=True lets sentence-transformers import the installed TokenPrependingTransformer module",
            f'model = SentenceTransformer("{model_id}", trust_remote_code=True)',
            "sentences = [",
            *[f"    {self._format_snippet_value(example)}," for example in examples],
            "]",
            "embeddings = model.encode(sentences)",
            "print(embeddings.shape)",
            f"# [{len(examples)}, {self._get_snippet_output_dimensionality()}]",
            "",
            "# Get the similarity scores for the embeddings",
            "similarities = model.similarity(embeddings, embeddings)",
        ]
        if self.similarities:
            lines.append("print(similarities)")
            lines.append(self.similarities)
        else:
            lines.extend(["print(similarities.shape)", f"# [{len(examples)}, {len(examples)}]"])
        lines.append("```")
        return "\n".join(lines)


def tp_settings(module: TokenPrependingTransformer) -> dict[str, Any]:
    """The settings of a module as shown in its model card.

    Args:
        module: The TP module.

    Returns:
        A dict with backbone, templates, TP band, output layer, boosters, task settings and the setting's label.
    """
    return {
        "label": label(module),
        "backbone": str(module.backbone_name),
        "template": module.template,
        "query_template": module.query_template,
        "document_template": module.document_template,
        "templates": list(module.templates),
        "tp_enabled": module.tp_enabled,
        "tp_start": module.tp_start,
        "tp_exit": module.tp_exit,
        "output_layer": module.output_layer,
        "num_layers": module.num_layers,
        "placeholder": module.placeholder,
        "clean_sentences": module.clean_sentences,
        "demonstrations": module.demonstrations or [],
        "cp_layer": module.cp_layer,
        "cp_alpha": module.cp_alpha,
        "cp_mode": module.cp_mode,
        "cp_prompt": module.cp_prompt,
        "task_settings": module.task_settings,
    }


def install_model_card_data(model: Any, module: TokenPrependingTransformer) -> None:
    """Give ``model`` a :class:`TokenPrependingModelCardData` and a unique model name.

    The stock card data is replaced by the TP one (keeping every field the user set). Unless the user named the
    model, ``model_name`` becomes ``sentence-transformers-tp/<backbone>-<template>-<tp>-L<layer>``, which is also
    the name MTEB files results under, so results of different TP settings never collide with each other or with
    the base model's.

    Args:
        model: The owning ``SentenceTransformer``.
        module: Its TP module.
    """
    card = model.model_card_data
    if not isinstance(card, TokenPrependingModelCardData):
        if not isinstance(card, SentenceTransformerModelCardData):
            return
        values = {f.name: getattr(card, f.name) for f in fields(card) if f.init and hasattr(card, f.name)}
        card = TokenPrependingModelCardData(**values)
        card.register_model(model)
        model.model_card_data = card
    card.tp_settings = tp_settings(module)
    if not card.model_name:
        card.model_name = f"{MODEL_NAME_PREFIX}/{module.model_slug()}"
    # Hub metadata of the backbone, unless the user set it: never a local path.
    if not card.base_model:
        card.base_model = backbone_source(module)
    if not card.license:
        card.license = backbone_license(module)
    if not card.language:
        card.language = backbone_card_language(module) or []
