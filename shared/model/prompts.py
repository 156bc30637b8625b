"""Prompts for Qwen2.5-VL: the MM-Eureka instruct chat, the `\\boxed{}` chat, the pretrained (zero) mode's
plain-text template, and `build_prompt_inputs`, which renders one with each image's placeholder tokens
expanded to its grid.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.model.images import MAX_PIXELS, MIN_PIXELS

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from eureka.v1 import common_pb2

# Qwen2.5-VL's chat template adds this system message to a chat that has none (MM-Eureka renders with it).
QWEN_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# MM-Eureka's instruct prompt (the Qwen2.5-VL-Instruct runs): think, then answer, in tags.
INSTRUCT_SYSTEM_PROMPT = (
    "Solve the question. The user asks a question, and you solves it. You first thinks about the reasoning "
    "process in the mind and then provides the user with the answer. The reasoning process and answer are "
    "enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> Since 1+1=2, "
    "so the answer is 2. </think><answer> 2 </answer>, which means assistant's output should start with "
    "<think> and end with </answer>."
)
# The `\boxed{}` chat prompt: no system prompt, the final answer in the last \boxed{} (the instruct base's
# other prompt, and the baseline "best prompt" an RL gain must beat).
PRETRAINED_PROMPT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
# Pretrained (zero) mode: plain text, no chat template (DeepSeek-R1-Zero's template, as MM-Eureka-Zero uses
# it), stating the layout its format reward asks for: think, then the answer in \boxed{} inside the answer tag.
PRETRAINED_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. The "
    "Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, with the final answer in \\boxed{} inside the answer tags, i.e., <think> reasoning process "
    "here </think><answer> \\boxed{answer here} </answer>.\nUser: {question}\nAssistant: "
)
MODES = ("instruct", "pretrained")  # reward modes, and the prompt each one's policy sees
# Prompt kinds: the two modes' prompts, the \boxed{} chat, and the bare question in plain text (the plain corpus).
PROMPTS = ("instruct", "pretrained", "boxed", "question")
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass
class PromptInputs:
    input_ids: list[int]
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None


def parse_messages(messages_json: str) -> list[dict[str, Any]]:
    """The MM-Eureka chat: a JSON list of {"role", "content"} where content is a string or a list of parts."""
    try:
        messages = json.loads(messages_json)
    except json.JSONDecodeError as e:
        raise ValueError(f"messages_json is not valid JSON ({e.msg} at char {e.pos}); send a JSON list of messages") from e
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages_json must be a non-empty JSON list of {\"role\", \"content\"} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} needs \"role\" and \"content\" keys")
        if not isinstance(m["content"], (str, list)):
            raise ValueError(f"message {i} content must be a string or a list of parts")
    return messages


def _parts(content: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out = []
    for part in content:
        if isinstance(part, str):
            out.append({"type": "text", "text": part})
        elif isinstance(part, dict) and part.get("type") in ("image", "text"):
            out.append(part)
        else:
            raise ValueError(f"message part {part!r:.80} is neither text nor image; use {{\"type\": \"text\"|\"image\"}}")
    return out


def render_chat(
    messages: list[dict[str, Any]], image_tokens: list[int], mode: str = "instruct",
    system_prompt: str | None = None, add_system: bool = True,
) -> str:
    """Qwen2-VL chat text ending with the assistant header; image k gets image_tokens[k] pad tokens.

    `mode` is instruct or boxed. A chat without a system message gets `system_prompt` (the recipe's; ""
    for none) or, when that is None, Qwen's default QWEN_DEFAULT_SYSTEM_PROMPT in instruct mode and none
    in boxed mode, which also appends PRETRAINED_PROMPT_SUFFIX to the last user message. `add_system=False` leaves the system
    prompt out (the base-model corpus renders plain chats this way). Images in the chat take the images
    in order; images without a chat part go in front of the first user message.
    """
    if mode not in ("instruct", "boxed"):
        raise ValueError(f"chat prompt {mode!r} is unknown; use instruct or boxed")
    msgs = [{"role": m["role"], "parts": _parts(m["content"])} for m in messages]
    if system_prompt is None:
        system_prompt = QWEN_DEFAULT_SYSTEM_PROMPT if mode == "instruct" else ""
    if add_system and system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "parts": [{"type": "text", "text": system_prompt}]})
    users = [m for m in msgs if m["role"] == "user"]
    if not users:
        raise ValueError("the chat has no user message; add one with the question")
    if mode == "boxed":
        users[-1]["parts"].append({"type": "text", "text": PRETRAINED_PROMPT_SUFFIX})
    n_parts = sum(p["type"] == "image" for m in msgs for p in m["parts"])
    if n_parts > len(image_tokens):
        raise ValueError(f"the chat refers to {n_parts} images but the prompt carries {len(image_tokens)}")
    users[0]["parts"][:0] = [{"type": "image"}] * (len(image_tokens) - n_parts)
    out, k = [], 0
    for m in msgs:
        body = []
        for p in m["parts"]:
            if p["type"] == "image":
                body.append("<|vision_start|>" + "<|image_pad|>" * image_tokens[k] + "<|vision_end|>")
                k += 1
            else:
                body.append(str(p.get("text", "")))
        out.append(f"<|im_start|>{m['role']}\n{''.join(body)}<|im_end|>\n")
    return "".join(out) + "<|im_start|>assistant\n"


def render_plain(messages: list[dict[str, Any]], image_tokens: list[int], template: bool = True) -> str:
    """Plain text, no chat tokens: the user turns' images and text, in PRETRAINED_TEMPLATE or bare
    (`template=False`: the question then a newline, as the plain corpus writes its documents)."""
    parts = [p for m in messages if m["role"] == "user" for p in _parts(m["content"])]
    n_parts = sum(p["type"] == "image" for p in parts)
    if n_parts > len(image_tokens):
        raise ValueError(f"the chat refers to {n_parts} images but the prompt carries {len(image_tokens)}")
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("the chat has no user message; add one with the question")
    parts[:0] = [{"type": "image"}] * (len(image_tokens) - n_parts)
    body, k = [], 0
    for p in parts:
        if p["type"] == "image":
            body.append("<|vision_start|>" + "<|image_pad|>" * image_tokens[k] + "<|vision_end|>")
            k += 1
        else:
            body.append(str(p.get("text", "")))
    question = "".join(body)
    return PRETRAINED_TEMPLATE.replace("{question}", question) if template else question + "\n"


def render_prompt(messages: list[dict[str, Any]], image_tokens: list[int], prompt: str = "instruct",
                  system_prompt: str | None = None) -> str:
    """The text a policy continues, for a prompt kind of PROMPTS: the instruct or boxed chat (with
    `system_prompt` as render_chat takes it), the pretrained-mode template, or the bare question in plain text."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt mode {prompt!r} is unknown; use one of {', '.join(PROMPTS)}")
    if prompt in ("pretrained", "question"):
        return render_plain(messages, image_tokens, template=prompt == "pretrained")
    return render_chat(messages, image_tokens, prompt, system_prompt)


def load_image(data: bytes = b"", uri: str = "") -> Image.Image:
    """An image from inline bytes, or from a `file://` URI or a path."""
    from PIL import Image, UnidentifiedImageError

    try:
        if data:
            img = Image.open(io.BytesIO(data))
        else:
            path = uri[len("file://") :] if uri.startswith("file://") else uri
            if not path:
                raise ValueError("image reference has neither data nor uri; inline the bytes or give a path")
            img = Image.open(Path(path))
        img.load()
        return img
    except FileNotFoundError as e:
        raise ValueError(f"image {uri} does not exist; fix the path or inline the image bytes") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"image {uri or '(inline bytes)'} is not a readable image file") from e


def build_prompt_inputs(
    prompt: common_pb2.Prompt, tokenizer: Any, mode: str = "instruct", max_prompt_tokens: int = 3000,
    system_prompt: str | None = None, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
) -> PromptInputs:
    """Token ids (image pads expanded to each grid) plus pixel_values/image_grid_thw for one prompt; images are
    resized into [min_pixels, max_pixels] (the recipe's bounds). `mode` is a prompt kind of PROMPTS (a reward
    mode names its own prompt)."""
    from shared.model.images import image_token_count, preprocess_images

    messages = parse_messages(prompt.messages_json)
    images = [load_image(ref.data, ref.uri) for ref in prompt.images]
    pixel_values = grid = None
    counts: list[int] = []
    if images:
        pixel_values, grid = preprocess_images(images, min_pixels, max_pixels)
        counts = image_token_count(grid)
    text = render_prompt(messages, counts, mode, system_prompt)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_prompt_tokens:
        raise ValueError(
            f"prompt {prompt.prompt_id} has {len(ids)} tokens, above max_prompt_tokens={max_prompt_tokens}; "
            "shorten the question, use smaller images or raise the limit"
        )
    return PromptInputs(input_ids=list(ids), pixel_values=pixel_values, image_grid_thw=grid)


def mm_token_type_ids(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """1 on image placeholder tokens, 0 elsewhere: transformers computes Qwen2.5-VL's 3-D (M-RoPE) positions only
    when it is given these (without them an image prompt gets text positions, unlike vLLM and the real model)."""
    return (input_ids == image_token_id).int()


def batch_inputs(prompts: list[PromptInputs], pad_id: int, device: str = "cpu", dtype: Any = None,
                 image_token_id: int | None = None) -> dict[str, Any]:
    """Model kwargs for several prompts in one `generate` call: ids left-padded to one width (mask 0 on the
    padding; Qwen2.5-VL's rope positions follow the mask), every image's patches concatenated in prompt order,
    and `mm_token_type_ids` (from `image_token_id`, the model's `config.image_token_id`) for the M-RoPE positions.
    Generated tokens then start at column `input_ids.shape[1]` in every row."""
    import torch

    width = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p.input_ids) :] = torch.tensor(p.input_ids, dtype=torch.long)
        mask[row, width - len(p.input_ids) :] = 1
    kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    with_images = [p for p in prompts if p.pixel_values is not None]
    if with_images:
        pixel_values = torch.cat([p.pixel_values for p in with_images])
        kwargs["pixel_values"] = pixel_values.to(device, dtype=dtype or pixel_values.dtype)
        kwargs["image_grid_thw"] = torch.cat([p.image_grid_thw for p in with_images]).to(device)
        if image_token_id is None:
            raise ValueError("batch_inputs needs image_token_id (the model's config.image_token_id) for image prompts")
        kwargs["mm_token_type_ids"] = mm_token_type_ids(kwargs["input_ids"], image_token_id)
    return kwargs
