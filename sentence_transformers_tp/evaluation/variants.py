"""Model variants for "TP vs vanilla" comparisons that share one loaded backbone.

The TP paper compares "method + TP" at one output layer with "method" at that method's usual layer, which mixes the
effect of Token Prepending with the effect of the exit layer. :func:`plan_variants` separates the two: besides the
model as configured it plans the same template

* without TP (``tp_exit = tp_start``) at the **same** output layer, and
* without TP at the template's **usual** output layer (-1 for PromptEOL / MetaEOL / user templates, -2 for
  Pretended CoT and Knowledge; :data:`~sentence_transformers_tp.templates.USUAL_OUTPUT_LAYER`).

Variants that resolve to the same computation (e.g. TP already off, or the output layer already the usual one) are
merged into one, whose ``roles`` lists every role it plays. :func:`apply_variant` runs the model's :class:`~sentence_transformers_tp.module.
TokenPrependingTransformer` under a variant's ``tp_start`` / ``tp_exit`` / ``output_layer`` (``module.using``: no
second backbone is loaded and the module itself is not changed), and
:func:`iter_variants` yields ``(variant, model)`` pairs with each variant applied in turn::

    from sentence_transformers_tp.evaluation import evaluate_sts, iter_variants, plan_variants

    for variant, configured in iter_variants(model, plan_variants(model)):
        print(variant.label, evaluate_sts(configured, data_dir, split="dev", config=variant.config).avg)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sentence_transformers_tp.records import ROLE_MODEL, TEMPLATE_DISPLAY_NAMES, describe, label, template_display_name
from sentence_transformers_tp.settings import Setting

ROLE_VANILLA_SAME_LAYER = "vanilla_same_layer"
"""Role of the template without TP at the model's output layer."""
ROLE_VANILLA_USUAL_LAYER = "vanilla_usual_layer"
"""Role of the template without TP at the template's usual output layer."""
ROLES: tuple[str, ...] = (ROLE_MODEL, ROLE_VANILLA_SAME_LAYER, ROLE_VANILLA_USUAL_LAYER)


def tp_module(model: Any) -> Any:
    """Return the :class:`~sentence_transformers_tp.module.TokenPrependingTransformer` of a model.

    Args:
        model: A ``SentenceTransformer`` whose first module is a TP module, or the module itself.

    Returns:
        The module.

    Raises:
        ValueError: If the model has no TP module.
    """
    from sentence_transformers_tp.module import TokenPrependingTransformer

    if isinstance(model, TokenPrependingTransformer):
        return model
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        first = None
    if not isinstance(first, TokenPrependingTransformer):
        raise ValueError(
            f"{type(model).__name__} has no TokenPrependingTransformer as its first module; TP/vanilla variants "
            f"need a sentence-transformers-tp model."
        )
    return first


def usual_output_layer(template: str | Sequence[str]) -> int:
    """Return the output layer a template's original method uses (-1 for user templates).

    Args:
        template: A template spec.

    Returns:
        A Hugging Face ``hidden_states`` index.
    """
    from sentence_transformers_tp.templates import USUAL_OUTPUT_LAYER, canonical_template_name

    name = canonical_template_name(template) if isinstance(template, str) else None
    return USUAL_OUTPUT_LAYER.get(name, -1) if name is not None else -1


@dataclass(frozen=True)
class Variant:
    """One layer configuration of a TP module.

    Attributes:
        label: Table label, e.g. ``"PromptEOL + TP 1:7, L-1"`` or ``"Pretended CoT, L-2 (no TP, usual layer)"``.
        tp_start: ``tp_start`` to set.
        tp_exit: ``tp_exit`` to set (``<= tp_start``: TP off).
        output_layer: ``output_layer`` to set (as given, e.g. ``-2``).
        roles: The roles this configuration plays (:data:`ROLES`), several when planned variants coincide.
        config: Configuration recorded with its results (template, backbone, layers, roles, ...).
        template: A template to use instead of the module's, without its demonstrations and Contrastive Prompting
            (e.g. plain PromptEOL next to a tuned combination); None keeps the module's template and boosters.
    """

    label: str
    tp_start: int
    tp_exit: int
    output_layer: int
    roles: tuple[str, ...] = (ROLE_MODEL,)
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    template: str | None = None

    @property
    def tp_enabled(self) -> bool:
        """Whether Token Prepending is on (``tp_exit > tp_start``)."""
        return self.tp_exit > self.tp_start


def plan_variants(model: Any, *, compare_vanilla: bool = True) -> list[Variant]:
    """Plan the model as configured and, optionally, its vanilla counterparts (see the module docstring).

    Args:
        model: A ``SentenceTransformer`` with a TP module (or the module).
        compare_vanilla: Add the template without TP at the same output layer and at the template's usual layer.

    Returns:
        One to three variants, the model as configured first; coinciding configurations are merged (their
        ``roles`` combined), so every variant is a distinct computation.
    """
    from sentence_transformers_tp.prepending import resolve_output_layer

    module = tp_module(model)
    wanted: list[tuple[str, int, int, int]] = [(ROLE_MODEL, module.tp_start, module.tp_exit, module.output_layer)]
    if compare_vanilla:
        wanted.append((ROLE_VANILLA_SAME_LAYER, module.tp_start, module.tp_start, module.output_layer))
        wanted.append(
            (ROLE_VANILLA_USUAL_LAYER, module.tp_start, module.tp_start, usual_output_layer(module.template))
        )

    def key(tp_start: int, tp_exit: int, output_layer: int) -> tuple[Any, ...]:
        layer = resolve_output_layer(output_layer, module.num_layers)
        return (tp_start, tp_exit, layer) if tp_exit > tp_start else ("off", layer)

    merged: dict[tuple[Any, ...], list[Any]] = {}
    for role, tp_start, tp_exit, output_layer in wanted:
        entry = merged.setdefault(key(tp_start, tp_exit, output_layer), [tp_start, tp_exit, output_layer, []])
        entry[3].append(role)

    variants: list[Variant] = []
    for tp_start, tp_exit, output_layer, roles in merged.values():
        config = {
            **describe(module, tp_start=tp_start, tp_exit=tp_exit, output_layer=output_layer),
            "roles": list(roles),
        }
        notes = ["usual layer"] if ROLE_VANILLA_USUAL_LAYER in roles and tp_exit <= tp_start else []
        variants.append(Variant(label(config, notes), tp_start, tp_exit, output_layer, tuple(roles), config))
    return variants


@contextmanager
def apply_variant(model: Any, variant: Variant) -> Iterator[Any]:
    """Run the model's TP module under a variant's layer settings (``module.using``) for the ``with`` block, in this
    thread: the module's own settings are never changed.

    The module's template-prefix KV cache (if any) is kept: its entries are keyed by the prefix token ids and the
    number of layers they cover, and the prefix never contains the placeholder, so they are valid for every variant.

    While applied, an automatic model name (``model.model_card_data.model_name`` as set by the module) follows the
    variant, so MTEB files results under a name unique to the configuration.

    Args:
        model: A ``SentenceTransformer`` with a TP module (or the module).
        variant: The settings to apply.

    Yields:
        ``model`` itself, configured as ``variant``.

    Raises:
        ValueError: If the settings are invalid for the backbone.
    """
    module = tp_module(model)
    setting = module.setting
    if variant.template is not None:
        setting = Setting(template=variant.template, cp_prompt=setting.cp_prompt)
    setting = setting.replace(tp_start=variant.tp_start, tp_exit=variant.tp_exit, output_layer=variant.output_layer)
    card = getattr(model, "model_card_data", None)
    saved_name = getattr(card, "model_name", None)
    auto_name = _auto_model_name(module)
    with module.using(setting, module.tasks_on(setting)):
        try:
            if card is not None and auto_name is not None and saved_name == auto_name:
                card.model_name = _auto_model_name(module)
            yield model
        finally:
            if card is not None and getattr(card, "model_name", None) != saved_name:
                card.model_name = saved_name


def iter_variants(model: Any, variants: Sequence[Variant] | None = None) -> Iterator[tuple[Variant, Any]]:
    """Yield ``(variant, model)`` with each variant applied in turn (settings restored between and after).

    Args:
        model: A ``SentenceTransformer`` with a TP module.
        variants: Variants to apply (default: :func:`plan_variants` with ``compare_vanilla=True``).

    Yields:
        The variant and the model configured as it; use the model only until the next iteration.
    """
    for variant in plan_variants(model) if variants is None else variants:
        with apply_variant(model, variant) as configured:
            yield variant, configured


def _auto_model_name(module: Any) -> str | None:
    try:
        from sentence_transformers_tp.model_card import MODEL_NAME_PREFIX
    except ImportError:  # pragma: no cover
        return None
    return f"{MODEL_NAME_PREFIX}/{module.model_slug()}"


__all__ = [
    "ROLES",
    "ROLE_MODEL",
    "ROLE_VANILLA_SAME_LAYER",
    "ROLE_VANILLA_USUAL_LAYER",
    "TEMPLATE_DISPLAY_NAMES",
    "Variant",
    "apply_variant",
    "iter_variants",
    "plan_variants",
    "template_display_name",
    "tp_module",
    "usual_output_layer",
]
