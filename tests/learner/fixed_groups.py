"""Fixed trajectory groups for the learner's helper processes (mini_batches.py, two_steps.py)."""

from __future__ import annotations

from collections.abc import Callable

from eureka.v1 import buffer_pb2, common_pb2


def fixed_groups(prompts: int, samples: int, response: Callable[[int, int], list[int]],
                 reward: Callable[[int], float]) -> list[buffer_pb2.TrajectoryGroup]:
    """`prompts` groups of `samples` responses (`response(k, i)` tokens, `reward(i)`), behaviour log-prob -6 a token."""
    out = []
    for k in range(prompts):
        group = [buffer_pb2.Sample(response_token_ids=response(k, i), behaviour_logprobs=[-6.0] * len(response(k, i)),
                                   reward=reward(i), accuracy=float(i % 2), finish_reason="stop")
                 for i in range(samples)]
        out.append(buffer_pb2.TrajectoryGroup(
            group_id=f"p{k}#1", prompt_id=f"p{k}", attempt=1, prompt=common_pb2.Prompt(prompt_id=f"p{k}"),
            prompt_token_ids=[30, 31, 32, 33 + k], samples=group))
    return out
