"""Weight versions the running vLLM engine accepts: names mapped and checked against the engine's own parameters.

The learner sends `state_dict()` names (`model.language_model.*`, `model.visual.*`, a tied `lm_head.weight`);
a checkpoint on disk may use the older `model.layers.*` / `visual.*`. vLLM's model class maps both
(`hf_to_vllm_mapper`, then its packed q/k/v and gate/up modules), so every incoming name goes through that
same mapping and must land on a parameter of the engine, with the shape the served checkpoint has for it.
The first tensor that does not is named in the refusal; nothing has been copied by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.rollout.backends.base import WeightLoadError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EngineLayout:
    """What a check needs from the engine: its parameter names, its name mapping, tied embeddings."""

    parameters: frozenset[str]
    mapper: Any  # vllm.model_executor.models.utils.WeightsMapper
    packed: dict[str, list[str]]  # packed module -> the checkpoint modules it holds (qkv_proj: q/k/v_proj)
    tied: bool


def engine_layout(worker: Any) -> EngineLayout:
    """Runs inside vLLM's worker (`LLM.collective_rpc`): the served model's layout."""
    model = worker.model_runner.get_model()
    config = worker.model_runner.model_config.hf_config
    tied = bool(getattr(config, "tie_word_embeddings", False) or getattr(config.get_text_config(),
                                                                        "tie_word_embeddings", False))
    return EngineLayout(
        parameters=frozenset(name for name, _ in model.named_parameters()),
        mapper=type(model).hf_to_vllm_mapper,
        packed=dict(getattr(type(model), "packed_modules_mapping", {})),
        tied=tied,
    )


def reload_in_place(worker: Any, weights: list[tuple[str, Any]]) -> None:
    """Runs inside vLLM's worker: vLLM's own in-place `reload_weights`, then the tied output head re-processed.

    A tied head shares the embedding's tensor but loads nothing itself, so the reload keeps its kernel state;
    on the CPU backend that state is a packed copy of the old embedding (the logits would stay old)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    for module in worker.model_runner.get_model().modules():
        if isinstance(module, ParallelLMHead) and module.quant_method is not None:
            module.quant_method.process_weights_after_loading(module)


def engine_name(layout: EngineLayout, name: str) -> str | None:
    """The engine parameter a checkpoint-named tensor loads into (None: vLLM drops the name)."""
    mapped = layout.mapper.map_name(name)
    if mapped is None:
        return None
    for packed, shards in layout.packed.items():
        for shard in shards:
            if shard != packed and f".{shard}." in mapped:
                return mapped.replace(f".{shard}.", f".{packed}.")
    return mapped


def reference_shapes(layout: EngineLayout, checkpoint: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The served checkpoint's tensor shapes keyed by vLLM's mapped (unpacked) name."""
    out = {}
    for name, shape in checkpoint.items():
        mapped = layout.mapper.map_name(name)
        if mapped is not None:
            out[mapped] = shape
    return out


def _is_lm_head(mapped: str) -> bool:
    return mapped.endswith("lm_head.weight")


def check_version(layout: EngineLayout, shapes: dict[str, tuple[int, ...]],
                  incoming: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The tensors to hand to the engine, or WeightLoadError naming the first one that does not fit.

    A tied `lm_head.weight` must equal the embedding it is tied to and is not sent (the engine holds one
    tensor for both)."""
    import torch

    if not incoming:
        raise WeightLoadError("the pulled state dict is empty")
    embed_name = next((n for n in incoming if (layout.mapper.map_name(n) or "").endswith("embed_tokens.weight")), None)
    out = []
    for name, tensor in incoming.items():
        mapped = layout.mapper.map_name(name)
        target = engine_name(layout, name)
        if mapped is None or target is None:
            raise WeightLoadError(f"tensor {name} is dropped by vLLM's name mapping for this model; send the"
                                  " names of the model's state_dict() or of its checkpoint")
        tied_head = layout.tied and _is_lm_head(mapped)
        if target not in layout.parameters and not tied_head:
            raise WeightLoadError(f"tensor {name} is not a parameter of the served model (vLLM maps it to {target},"
                                  " which the engine does not have); send the names of the model's state_dict()")
        expected = shapes.get(mapped)
        if expected is None and tied_head:
            expected = next((s for n, s in shapes.items() if n.endswith("embed_tokens.weight")), None)
        if expected is None:
            raise WeightLoadError(f"tensor {name} ({target}) is not in the served checkpoint; send the names of the"
                                  " model's state_dict()")
        if tuple(tensor.shape) != tuple(expected):
            raise WeightLoadError(f"tensor {name} has shape {tuple(tensor.shape)}, the served model's {target} has"
                                  f" {tuple(expected)}; send a version of the same architecture")
        if tied_head:
            if embed_name is not None and not torch.equal(tensor, incoming[embed_name]):
                raise WeightLoadError(f"tensor {name} is tied to {embed_name} in the served model but arrived with"
                                      " different values")
            continue
        out.append((name, tensor))
    return out
