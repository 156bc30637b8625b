"""The policy in its training dtype; under ZeRO-3 built partitioned and loaded tensor by tensor.

ZeRO 0-2 hold the whole model on every rank by design: it is loaded in the training dtype (bf16 on
GPU), never fp32 there. Under ZeRO-3 the model is built inside `deepspeed.zero.Init` (each parameter
partitioned as it is created) and the safetensors files are read on rank 0 one tensor at a time, each
copied into its gathered parameter and re-partitioned, so no rank holds the full model. The frozen vision
tower is then gathered once and replicated (see `Engine.vision`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# Hub checkpoints of Qwen2.5-VL name the language model `model.*` and the tower `visual.*`.
_KEY_MAP = ((re.compile(r"^visual\."), "model.visual."),
            (re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model."))


def module_key(name: str) -> str:
    """A checkpoint tensor's name in the module tree of transformers' Qwen2.5-VL."""
    for pattern, repl in _KEY_MAP:
        name = pattern.sub(repl, name)
    return name


def load_policy(model_path: Path, dtype: str, zero_stage: int, ds_config: dict[str, Any],
                freeze_vision: bool) -> tuple[Any, Any | None]:
    """(model, vision tower kept apart or None)."""
    from shared.model.io import load_model

    if zero_stage != 3:
        return load_model(model_path, dtype=dtype, freeze_vision=freeze_vision), None
    model = _zero3_model(model_path, dtype, ds_config)
    return model, _replicated_tower(model, dtype)


def _zero3_model(model_path: Path, dtype: str, ds_config: dict[str, Any]) -> Any:
    import deepspeed
    import torch
    import torch.distributed as dist
    from safetensors import safe_open
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.initialization import no_init_weights

    config = AutoConfig.from_pretrained(str(model_path))
    torch_dtype = getattr(torch, dtype)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, dtype=torch_dtype), no_init_weights():
        model = Qwen2_5_VLForConditionalGeneration(config)  # weights come from the files: no init pass
    model.tie_weights()  # lm_head is the embedding when the config ties them (as from_pretrained does)
    params = dict(model.named_parameters())
    rank0 = dist.get_rank() == 0
    names: list[str] = []
    files = sorted(model_path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_path} has no *.safetensors weights; save the model in safetensors")
    for file in files:  # every rank walks the same names: the gathers are collective
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                name = module_key(key)
                if name not in params:
                    continue
                names.append(name)
                with deepspeed.zero.GatheredParameters([params[name]], modifier_rank=0):
                    if rank0:
                        params[name].data.copy_(f.get_tensor(key).to(torch_dtype))
    missing = set(params) - set(names)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if missing - tied:
        raise ValueError(f"{model_path} lacks {len(missing - tied)} weights (e.g. {sorted(missing - tied)[0]}); "
                         "is it a Qwen2.5-VL checkpoint?")
    model.eval()
    return model


def _replicated_tower(model: Any, dtype: str) -> Any:
    """Gather the partitioned vision tower into a plain, frozen module and take it out of the ZeRO-3 model."""
    import deepspeed
    import torch

    tower = model.model.visual
    with deepspeed.zero.GatheredParameters(list(tower.parameters()), modifier_rank=None):
        weights = {k: v.detach().clone() for k, v in tower.state_dict().items()}
    del model.model.visual
    from transformers.initialization import no_init_weights

    with no_init_weights():
        vision = type(tower)(model.config.vision_config).to(getattr(torch, dtype))
    vision.load_state_dict(weights)
    vision.requires_grad_(False)
    vision.eval()
    return vision
