"""The worker loop: claim prompts, serve the newest weights, generate groups, score them, put them.

One thread runs `Worker.run`: claim, weights, generate. A second thread (`_finish_loop`) decodes, scores
and puts each generated batch while the first generates the next one, so the reward call and the put
do not leave the generator idle; at most one batch generates and one finishes at a time. Weights change
only between batches (in `_batch`), so every sample of a batch comes from one version. A claimed prompt
leaves the worker in exactly one of three ways: its group is put (which acks it in the buffer), it is
released (drain, unusable prompt, failed batch), or the process dies and the buffer reclaims it after
the lease.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, reward_pb2, reward_pb2_grpc, rollout_pb2

from services.rollout import metrics
from services.rollout.backends.base import Backend, Completion, GenerationAborted, GenRequest, SamplingSpec
from services.rollout.config import RolloutConfig
from services.rollout.weights import WeightSync
from shared.logs import get_logger

if TYPE_CHECKING:
    from shared.model.prompts import PromptInputs

log = get_logger("rollout")

_MISSING = reward_pb2.VerifyResult(status=reward_pb2.ITEM_STATUS_UNSPECIFIED)  # scored 0, counted
_REWARD_MODES = {"instruct": reward_pb2.REWARD_MODE_INSTRUCT, "pretrained": reward_pb2.REWARD_MODE_PRETRAINED}


@dataclass
class _Job:
    claimed: buffer_pb2.ClaimedPrompt
    inputs: PromptInputs

    @property
    def group_id(self) -> str:
        return f"{self.claimed.prompt.prompt_id}#{self.claimed.attempt}"


@dataclass
class _Generated:
    """A generated batch on its way to the finisher thread."""

    jobs: list[_Job]
    completions: list[list[Completion]]
    version: int
    generate_s: float


class Worker:
    """A rollout worker over a backend and channels to the buffer, reward and weight services."""

    def __init__(self, cfg: RolloutConfig, backend: Backend, buffer: grpc.Channel, reward: grpc.Channel,
                 weights: grpc.Channel, worker_id: str) -> None:
        self.cfg = cfg
        self.backend = backend
        self.worker_id = worker_id
        self.buffer = buffer_pb2_grpc.BufferServiceStub(buffer)
        self.reward = reward_pb2_grpc.RewardServiceStub(reward)
        self.weights = WeightSync(weights, backend, cfg.weight_pull_timeout_s, broadcast=cfg.broadcast,
                                  worker_id=worker_id)
        recipe = cfg.recipe
        self.spec = SamplingSpec(n=recipe.n_samples, temperature=recipe.temperature, top_p=recipe.top_p,
                                 max_new_tokens=recipe.max_response_tokens)
        self.state = rollout_pb2.WORKER_STATE_STARTING
        self.stop = threading.Event()  # no new claims
        self.abort = threading.Event()  # stop generating now and release the batch
        self.stopped = threading.Event()
        self.held: dict[str, buffer_pb2.ClaimedPrompt] = {}
        self.groups_done = 0
        self.released_total = 0
        self.failed = False
        self.tokens_per_second = 0.0
        self._finishing: queue.Queue[_Generated | None] = queue.Queue(maxsize=1)

    # ---- control (any thread) ----

    def drain(self, release_now: bool) -> None:
        """Stop claiming; with `release_now`, abort the batch in flight and release it."""
        if self.state in (rollout_pb2.WORKER_STATE_STARTING, rollout_pb2.WORKER_STATE_RUNNING):
            self.state = rollout_pb2.WORKER_STATE_DRAINING
        self.stop.set()
        if release_now:
            self.abort.set()

    def status(self) -> rollout_pb2.RolloutStatus:
        return rollout_pb2.RolloutStatus(
            worker_id=self.worker_id,
            state=self.state,
            policy_version=self.weights.version or 0,
            groups_done=self.groups_done,
            prompts_in_flight=len(self.held),
            tokens_per_second=self.tokens_per_second,
            weight_pull_failures_total=self.weights.failures,
        )

    # ---- the loop (worker thread) ----

    def run(self) -> None:
        finisher = threading.Thread(target=self._finish_loop, name=f"finish-{self.worker_id}", daemon=True)
        finisher.start()
        try:
            self._first_pull()
            if not self.stop.is_set():
                self.state = rollout_pb2.WORKER_STATE_RUNNING
                log.info("worker running", worker_id=self.worker_id, policy_version=self.weights.version)
            while not self.stop.is_set():
                if self.cfg.mode == "sync" and not self._in_sync():
                    self.stop.wait(self.cfg.weight_retry_s)
                    continue
                claimed = self._claim()
                if claimed:
                    self._batch(claimed)
                else:
                    self.weights.refresh()  # idle: be on the newest version before the next claim
        except Exception:  # a backend failure (CUDA OOM, a broken checkpoint): release, stop, exit non-zero
            self.failed = True
            log.exception("worker failed", worker_id=self.worker_id, policy_version=self.weights.version)
        finally:
            self._finishing.put(None)  # the finisher puts (or releases) what it holds, then exits
            finisher.join()
            self._release(list(self.held), "error" if self.failed else "drain")
            self.state = rollout_pb2.WORKER_STATE_STOPPED
            self.stopped.set()
            log.info("worker stopped", worker_id=self.worker_id, groups_done=self.groups_done)

    def _first_pull(self) -> None:
        """A new worker serves the current published version before its first claim."""
        while not self.stop.is_set():
            published = self.weights.published()
            if published is not None and self.weights.pull(published):
                return
            self.stop.wait(self.cfg.weight_retry_s)

    def _in_sync(self) -> bool:
        """Sync mode: serve exactly the learner's published version before claiming."""
        published = self.weights.published()
        if published is None:
            return False
        return published == self.weights.version or (self.weights.pull(published) and published == self.weights.version)

    def _claim(self) -> list[buffer_pb2.ClaimedPrompt]:
        request = buffer_pb2.ClaimPromptsRequest(
            worker_id=self.worker_id, max_prompts=self.cfg.claim_batch_prompts, wait_ms=self.cfg.claim_wait_ms
        )
        try:
            reply = self.buffer.ClaimPrompts(request, timeout=self.cfg.grpc.deadline_s + self.cfg.claim_wait_ms / 1000)
        except grpc.RpcError as e:
            self._backoff("claim", e)
            return []
        claimed = list(reply.prompts)
        self.held.update((c.claim_id, c) for c in claimed)
        return claimed

    def _batch(self, claimed: list[buffer_pb2.ClaimedPrompt]) -> None:
        if self.stop.is_set():
            self._release([c.claim_id for c in claimed], "drain")
            return
        self.weights.refresh()  # between batches, never mid-sequence
        if self.cfg.mode == "sync" and self.weights.last_published != self.weights.version:
            # The learner published during the claim and the pull failed: never generate off-version in sync mode.
            self._release([c.claim_id for c in claimed], "out_of_sync")
            self.stop.wait(self.cfg.weight_retry_s)
            return
        jobs = self._jobs(claimed)
        if not jobs:
            return
        version = self.weights.version or 0
        start = time.monotonic()
        try:
            requests = [GenRequest(j.claimed.prompt, j.inputs) for j in jobs]
            completions = self.backend.generate(requests, self.spec, self.abort)
        except GenerationAborted:
            self._release([j.claimed.claim_id for j in jobs], "drain")
            return
        generate_s = time.monotonic() - start
        self._finishing.join()  # the previous batch is put: one batch finishes while the next generates
        self._finishing.put(_Generated(jobs, completions, version, generate_s))

    # ---- the finisher (second thread) ----

    def _finish_loop(self) -> None:
        """Decode, score and put each generated batch; a batch that is not put releases what it still holds."""
        while (item := self._finishing.get()) is not None:
            try:
                self._finish(item)
            except grpc.RpcError as e:  # Verify or PutGroups failed: release the batch, back off, then go on
                self._release([j.claimed.claim_id for j in item.jobs if j.claimed.claim_id in self.held], "error")
                self._backoff("score_or_put", e)
            except Exception:  # a bug or a broken tokenizer: like a backend failure, the worker stops
                # Its claims stay held until the claim loop has exited (run() releases them then): released
                # now, the loop's pending long-poll claim would take them straight back.
                self.failed = True
                self.stop.set()
                self.abort.set()
                log.exception("worker failed while finishing a batch", worker_id=self.worker_id)
            finally:
                self._finishing.task_done()
        self._finishing.task_done()

    def _finish(self, item: _Generated) -> None:
        texts = [[self._text(c) for c in group] for group in item.completions]
        self._observe_generation(item.completions, texts, item.generate_s)
        groups, reward_s = self._score(item.jobs, item.completions, texts, item.version, item.generate_s)
        self._put(item.jobs, groups)
        metrics.REWARD_SECONDS.observe(reward_s)

    def _jobs(self, claimed: list[buffer_pb2.ClaimedPrompt]) -> list[_Job]:
        """Model inputs of each claimed prompt; an unusable prompt (too long, bad image) is released."""
        from shared.model.prompts import build_prompt_inputs

        jobs: list[_Job] = []
        for c in claimed:
            try:
                inputs = build_prompt_inputs(
                    c.prompt, self.backend.tokenizer, mode=self.cfg.recipe.reward_mode,
                    max_prompt_tokens=self.cfg.recipe.max_prompt_tokens, system_prompt=self.cfg.recipe.system_prompt,
                    min_pixels=self.cfg.recipe.min_pixels, max_pixels=self.cfg.recipe.max_pixels,
                )
            except (ValueError, OSError) as e:
                log.warning("prompt unusable, released", prompt_id=c.prompt.prompt_id, attempt=c.attempt, error=str(e))
                self._release([c.claim_id], "unusable")
                continue
            jobs.append(_Job(c, inputs))
        return jobs

    def _observe_generation(self, completions: list[list[Completion]], texts: list[list[str]], seconds: float) -> None:
        from shared.reflection import reflection_rate

        samples = [c for group in completions for c in group]
        tokens = sum(len(c.token_ids) for c in samples)
        metrics.GENERATE_SECONDS.observe(seconds)
        metrics.TOKENS.inc(tokens)
        metrics.SAMPLES.inc(len(samples))
        for c in samples:
            metrics.RESPONSE_LENGTH.observe(len(c.token_ids))
        if seconds > 0:
            self.tokens_per_second = tokens / seconds
            metrics.TOKENS_PER_SECOND.set(self.tokens_per_second)
            metrics.SAMPLES_PER_SECOND.set(len(samples) / seconds)
        if samples:
            metrics.REFLECTION_RATIO.set(reflection_rate([t for group in texts for t in group]))

    def _text(self, completion: Completion) -> str:
        return self.backend.tokenizer.decode(completion.token_ids, skip_special_tokens=True)

    def _score(
        self,
        jobs: list[_Job],
        completions: list[list[Completion]],
        texts: list[list[str]],
        version: int,
        generate_s: float,
    ) -> tuple[list[buffer_pb2.TrajectoryGroup], float]:
        """One batched Verify call for every sample of the batch; returns the groups and its wall time."""
        mode = _REWARD_MODES[self.cfg.recipe.reward_mode]
        items = [
            reward_pb2.VerifyItem(
                response=text, gold=job.claimed.prompt.answer, mode=mode, item_id=f"{job.group_id}/{i}"
            )
            for job, group_texts in zip(jobs, texts, strict=True)
            for i, text in enumerate(group_texts)
        ]
        start = time.monotonic()
        results: dict[str, reward_pb2.VerifyResult] = {}
        step = self.cfg.reward_batch_items
        weight = self.cfg.recipe.format_weight  # unset: the reward service's weight for the mode
        for first in range(0, len(items), step):  # one call per batch unless it is above the reward's item cap
            reply = self.reward.Verify(reward_pb2.VerifyRequest(
                items=items[first : first + step], **({} if weight is None else {"format_weight": weight})
            ))
            results.update((r.item_id, r) for r in reply.results)
        reward_s = time.monotonic() - start
        groups = []
        for job, group, group_texts in zip(jobs, completions, texts, strict=True):
            samples = []
            for i, (c, text) in enumerate(zip(group, group_texts, strict=True)):
                r = results.get(f"{job.group_id}/{i}", _MISSING)
                if r.status != reward_pb2.ITEM_STATUS_OK:
                    metrics.REWARD_ERRORS.labels(reward_pb2.ItemStatus.Name(r.status)).inc()
                samples.append(
                    buffer_pb2.Sample(
                        response_token_ids=c.token_ids, behaviour_logprobs=c.logprobs, response_text=text,
                        reward=r.total, accuracy=r.accuracy, format=r.format, finish_reason=c.finish_reason,
                    )
                )
            groups.append(
                buffer_pb2.TrajectoryGroup(
                    group_id=job.group_id, prompt_id=job.claimed.prompt.prompt_id, attempt=job.claimed.attempt,
                    prompt=job.claimed.prompt, prompt_token_ids=job.inputs.input_ids, samples=samples,
                    policy_version=version, worker_id=self.worker_id, generate_seconds=generate_s,
                    reward_seconds=reward_s, created_unix=time.time(),
                )
            )
        if items:
            metrics.REWARD_MEAN.set(sum(s.reward for g in groups for s in g.samples) / len(items))
        return groups, reward_s

    def _put(self, jobs: list[_Job], groups: list[buffer_pb2.TrajectoryGroup]) -> None:
        """Put the batch's groups in one call (each acks its prompt); a claim no longer ours drops its group."""
        request = buffer_pb2.PutGroupsRequest(
            puts=[buffer_pb2.PutGroupRequest(group=g, claim_id=j.claimed.claim_id, worker_id=self.worker_id)
                  for j, g in zip(jobs, groups, strict=True)]
        )
        reply = self.buffer.PutGroups(request)
        for job, group, result in zip(jobs, groups, reply.results, strict=True):
            self.held.pop(job.claimed.claim_id, None)
            if result.rejected:
                metrics.GROUPS.labels("lost_claim").inc()
                log.warning("group dropped: claim no longer ours", group_id=group.group_id, detail=result.rejected)
                continue
            self.groups_done += 1
            metrics.GROUPS.labels("duplicate" if result.duplicate else "put").inc()
        log.info("groups put", n=len(groups), group_ids=",".join(g.group_id for g in groups),
                 policy_version=groups[0].policy_version, samples=sum(len(g.samples) for g in groups),
                 rejected=sum(bool(r.rejected) for r in reply.results))

    def _release(self, claim_ids: list[str], reason: str) -> None:
        """Hand claims back to the buffer (best effort: if this fails, the lease reclaims them)."""
        if not claim_ids:
            return
        try:
            request = buffer_pb2.ReleasePromptsRequest(worker_id=self.worker_id, claim_ids=claim_ids)
            reply = self.buffer.ReleasePrompts(request)
            released = reply.released
        except grpc.RpcError as e:
            log.warning("release failed; the buffer lease will reclaim", claims=len(claim_ids), error=e.code().name)
            released = 0
        for claim_id in claim_ids:
            self.held.pop(claim_id, None)
        self.released_total += released
        metrics.PROMPTS_RELEASED.labels(reason).inc(released)
        log.info("prompts released", reason=reason, claims=len(claim_ids), released=released)

    def _backoff(self, stage: str, error: grpc.RpcError) -> None:
        metrics.BATCH_ERRORS.labels(stage).inc()
        log.warning("rpc failed, backing off", stage=stage, code=error.code().name, detail=error.details())
        self.stop.wait(self.cfg.rpc_backoff_s)

