"""`/get_reward` driven the way the real OpenRLHF and MM-Eureka clients drive it, on a live reward process.

Each test re-enacts one client's request and reply handling step for step (its HTTP library, the body it
sends, the headers it sets, what it does with the JSON), with the token off and with the token on (given in
the URL: these clients set only `Content-Type`). The clients, read at these commits:
- MM-Eureka `qwen` (bccddd7) and `MM-EUREKA-Qwen` (fbd0fc0): openrlhf/utils/remote_rm_utils.py turns every
  reply field into a tensor; trainer/ppo_utils/experience_maker.py pops `rewards` and reads
  `accuracy_rewards` per group of `n_samples_per_prompt`.
- MM-Eureka `internvl` (129fc9e): no `labels`, the gold in `prompts[i]["answer"]`; `torch.tensor(rewards)`.
- OpenRLHF v0.6.0-v0.8.x: remote_rm_utils.py returns `torch.tensor(reply["rewards"])`.
- OpenRLHF v0.9.x: experience_maker.update_samples_with_rewards concatenates `rewards` and `scores` per server.
- OpenRLHF v0.9.5 to v0.11.0 (head 3c3be62): utils/agent.py posts one query per call with aiohttp, keeps
  `scores` (else `rewards`), and samples_generator's dynamic filter keeps a group when min < mean score < max.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests
import torch

from tests.reward.conftest import TOKEN, RewardProc, start_reward, stop_reward

PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "<|vision_start|><|image_pad|><|vision_end|>How many cats are in the image?<|im_end|>\n")
RIGHT = "<think>I count them one by one: three.</think><answer>3</answer>"
WRONG = "<think>I count them one by one: two.</think><answer>2</answer>"


def qwen_query(response: str) -> str:
    """What `tokenizer.batch_decode(sequences, skip_special_tokens=False)` gives for a Qwen2.5-VL sample."""
    return f"{PROMPT}<|im_start|>assistant\n{response}<|im_end|><|endoftext|><|endoftext|>"


def internvl_query(response: str) -> str:
    """An InternVL2.5 sample: InternLM2 chat markup, the response ending in `</s>` padding."""
    return f"<|im_start|>user\n<img><IMG_CONTEXT></img>\nHow many cats?<|im_end|><|im_start|>assistant\n{response}</s></s>"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RewardProc, Path]]:
    """A reward server with the token off, and the file its log lines go to."""
    log = tmp_path_factory.mktemp("reward") / "reward.log"
    proc = start_reward(token=None, log=log)
    yield proc, log
    stop_reward(proc)


@pytest.fixture(scope="module", params=["token-off", "token-in-url"])
def rm_url(request, reward_server, open_server) -> str:
    """The `--remote_rm_url` a user would pass: without a token on an open server, with `?token=` otherwise."""
    if request.param == "token-in-url":
        return f"{reward_server.url}/get_reward?token={TOKEN}"
    return f"{open_server[0].url}/get_reward"


def post_like_openrlhf_requests(url: str, body: dict) -> dict:
    """The request of OpenRLHF <= v0.9 and every MM-Eureka branch: requests.post with JSON, raise on 4xx/5xx."""
    r = requests.post(url=url, json=body, headers={"Content-Type": "application/json"}, timeout=180)
    r.raise_for_status()
    return r.json()


def test_mm_eureka_qwen_turns_every_field_into_a_tensor(rm_url) -> None:
    n = 4  # n_samples_per_prompt: two prompts, four samples each
    responses = [RIGHT, RIGHT, WRONG, "3"] + [WRONG, WRONG, WRONG, RIGHT]
    labels = ["3"] * 4 + [3] * 4  # an integer label from a JSON dataset
    reply = post_like_openrlhf_requests(rm_url, {"query": [qwen_query(x) for x in responses],
                                                 "prompts": [PROMPT] * 8, "labels": labels})
    assert "rewards" in reply
    r = {k: torch.tensor(v) for k, v in reply.items()}
    total = r.pop("rewards")
    info = {"reward": total, **r}
    accuracy = torch.cat([info["accuracy_rewards"]]).reshape(-1, n).mean(dim=-1)
    assert accuracy.tolist() == [0.5, 0.25]
    assert info["format_rewards"].tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    assert total.tolist() == [1.5, 1.5, 0.5, 0.0, 0.5, 0.5, 0.5, 1.5]
    assert all(t.shape == (8,) and t.dtype.is_floating_point for t in r.values())


def test_mm_eureka_internvl_reads_the_gold_from_prompts(rm_url) -> None:
    prompts = [{"answer": "3"}, {"answer": 3}, {"answer": "3"}]
    queries = [internvl_query(RIGHT), internvl_query(WRONG), internvl_query(RIGHT + " trailing")]
    rewards = torch.tensor(post_like_openrlhf_requests(rm_url, {"query": queries, "prompts": prompts})["rewards"])
    assert rewards.tolist() == [1.5, 0.5, 1.0]  # `</s>` stripped: the first two are well formatted


def test_openrlhf_v06_to_v08_reads_rewards(rm_url) -> None:
    reply = post_like_openrlhf_requests(rm_url, {"query": [qwen_query(RIGHT), qwen_query(WRONG)],
                                                 "prompts": [PROMPT] * 2, "labels": ["3", "3"]})
    assert "rewards" in reply
    assert torch.tensor(reply["rewards"]).tolist() == [1.5, 0.5]


def test_openrlhf_v09_concatenates_rewards_and_scores_across_servers(rm_url) -> None:
    shards = [[RIGHT, WRONG, RIGHT], [WRONG, "nonsense"]]  # two servers, one shard each
    infos = [post_like_openrlhf_requests(rm_url, {"query": [qwen_query(x) for x in s], "prompts": [PROMPT] * len(s),
                                                  "labels": ["3"] * len(s)}) for s in shards]
    samples_len = [3, 2]
    rewards = torch.cat([torch.as_tensor(i["rewards"]) for i in infos], dim=0).split(samples_len)
    assert "scores" in infos[0]
    scores = torch.cat([torch.as_tensor(i["scores"]) for i in infos], dim=0).split(samples_len)
    assert [t.tolist() for t in rewards] == [[1.5, 0.5, 1.5], [0.5, 0.0]]
    assert [t.tolist() for t in scores] == [[1.0, 0.0, 1.0], [0.0, 0.0]]


async def _post_like_openrlhf_head(url: str, query: str, prompt: str, label: object) -> dict:
    """OpenRLHF v0.11 SingleTurnAgentExecutor: one query per call, aiohttp with `json=`, raise on 4xx/5xx."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        async with session.post(url, json={"query": [query], "prompts": [prompt], "labels": [label]}) as response:
            response.raise_for_status()
            return await response.json()


def _group_scores(url: str, responses: list[str], label: object) -> list[float]:
    async def run() -> list[dict]:
        return await asyncio.gather(*(_post_like_openrlhf_head(url, qwen_query(x), PROMPT, label) for x in responses))

    scores = []
    for info in asyncio.run(run()):
        score = info.get("scores")
        if score is None:
            score = info.get("rewards")
        scores.append(torch.tensor([score])[0].item())
    return scores


def test_openrlhf_head_dynamic_filter_keeps_groups_by_accuracy(rm_url) -> None:
    min_r, max_r = 0.0, 1.0  # OpenRLHF's default dynamic_filtering_range

    def kept(scores: list[float]) -> bool:
        return min_r < sum(scores) / len(scores) < max_r

    seven_of_eight = _group_scores(rm_url, [RIGHT] * 7 + [WRONG], "3")
    all_wrong = _group_scores(rm_url, [WRONG] * 8, 3)
    assert seven_of_eight == [1.0] * 7 + [0.0] and kept(seven_of_eight)
    assert all_wrong == [0.0] * 8 and not kept(all_wrong)


def test_null_and_odd_labels_score_per_item(rm_url) -> None:
    queries = [qwen_query(RIGHT)] * 6
    labels = ["3", None, 3, 3.0, True, {"a": 1}]
    reply = post_like_openrlhf_requests(rm_url, {"query": queries, "prompts": [PROMPT] * 6, "labels": labels})
    assert reply["accuracy_rewards"] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert set(reply) == {"rewards", "scores", "accuracy_rewards", "format_rewards"}


def test_token_in_the_url_is_checked(reward_server) -> None:
    body = {"query": [qwen_query(RIGHT)], "labels": ["3"]}
    for url in (f"{reward_server.url}/get_reward", f"{reward_server.url}/get_reward?token=wrong"):
        r = requests.post(url, json=body, timeout=60)
        assert r.status_code == 401 and "?token=" in r.json()["error"]
    # the URL token opens /get_reward only
    assert requests.get(f"{reward_server.url}/metrics?token={TOKEN}", timeout=60).status_code == 401


def _empty_gold_count(url: str) -> float:
    page = requests.get(f"{url}/metrics", timeout=60).text
    line = [x for x in page.splitlines() if x.startswith('eureka_reward_empty_gold_requests_total{door="get_reward"}')]
    return float(line[0].split()[-1]) if line else 0.0


def test_a_request_whose_golds_are_all_empty_is_counted_and_logged(open_server) -> None:
    """OpenRLHF without a label key sends `""` labels: every item scores 0, and the service says so."""
    proc, log = open_server
    before = _empty_gold_count(proc.url)
    url = f"{proc.url}/get_reward"
    one_gold = post_like_openrlhf_requests(url, {"query": [qwen_query(RIGHT)] * 2, "labels": ["", "3"]})
    no_gold = post_like_openrlhf_requests(url, {"query": [qwen_query(RIGHT)] * 2, "labels": ["", None]})
    assert one_gold["accuracy_rewards"] == [0.0, 1.0] and no_gold["accuracy_rewards"] == [0.0, 0.0]
    assert _empty_gold_count(proc.url) == before + 1
    deadline = time.monotonic() + 30
    while "every gold answer of the request is empty" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    warning = [x for x in log.read_text().splitlines() if "every gold answer" in x]
    assert len(warning) == 1 and "warning" in warning[0] and "door=get_reward" in warning[0], warning
