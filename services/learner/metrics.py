"""The learner's Prometheus metrics (`eureka_learner_*`) and the per-step record written to metrics.jsonl."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.metrics import counter, gauge, histogram
from shared.reflection import is_effective_reflection, reflection_rate, style_shares

if TYPE_CHECKING:
    from eureka.v1 import buffer_pb2

LOSS = gauge("eureka_learner_loss", "loss of the last step (token mean)")
POLICY_LOSS = gauge("eureka_learner_policy_loss", "policy (PPO) part of the loss of the last step")
CLIP_FRACTION = gauge("eureka_learner_clip_fraction_ratio", "share of tokens whose PPO ratio was clipped")
IMPORTANCE_MEAN = gauge("eureka_learner_importance_weight_mean_ratio", "mean truncated proximal/behaviour weight")
IMPORTANCE_MAX = gauge("eureka_learner_importance_weight_max_ratio", "largest truncated proximal/behaviour weight")
KL = gauge("eureka_learner_kl", "k3 KL to the reference (0 when kl_coef is 0)")
ENTROPY = gauge("eureka_learner_entropy_nats", "mean token entropy of the policy on the batch")
GRAD_NORM = gauge("eureka_learner_grad_norm", "global gradient norm before clipping")
LR = gauge("eureka_learner_lr", "learning rate of the last step")
STEP_SECONDS = histogram("eureka_learner_step_seconds", "forward/backward/step time of one batch")
WAIT_SECONDS = histogram("eureka_learner_sample_wait_seconds", "time waiting for a full batch from the buffer")
SAMPLES_PER_SECOND = gauge("eureka_learner_samples_per_second", "responses trained per second of step time")
STALENESS = histogram("eureka_learner_staleness_versions", "policy versions a trained group lags the learner",
                      buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32))
REWARD = gauge("eureka_learner_batch_reward", "mean reward of the batch")
ACCURACY = gauge("eureka_learner_batch_accuracy_ratio", "mean accuracy of the batch")
FORMAT = gauge("eureka_learner_batch_format_ratio", "mean format score of the batch")
RESPONSE_TOKENS = gauge("eureka_learner_batch_response_tokens", "mean response length of the batch")
REFLECTION = gauge("eureka_learner_batch_reflection_ratio", "share of the batch's responses with a reflective phrase")
EFFECTIVE_REFLECTION = gauge("eureka_learner_batch_effective_reflection_ratio",
                             "share of the batch's responses whose reflection turned a wrong value into a right answer")
STYLE = gauge("eureka_learner_batch_style_ratio", "share of the batch's responses of each style (shared/reflection.py)",
              ["style"])
POLICY_VERSION = gauge("eureka_learner_policy_version", "published policy version")
STEPS = counter("eureka_learner_steps_total", "optimizer steps done")
GROUPS_TRAINED = counter("eureka_learner_groups_trained_total", "groups trained")
GROUPS_DROPPED = counter("eureka_learner_groups_dropped_total", "groups the buffer dropped while sampling", ["reason"])
PROMPTS_ENQUEUED = counter("eureka_learner_prompts_enqueued_total", "prompts enqueued from the dataset")
CHECKPOINT_SECONDS = histogram("eureka_learner_checkpoint_seconds", "time to write and fsync a checkpoint")
PUBLISH_SECONDS = histogram("eureka_learner_publish_seconds", "time to gather and serialize a weights version")


def batch_stats(groups: list[buffer_pb2.TrajectoryGroup], version: int) -> dict[str, Any]:
    """Reward, accuracy, format, response length and staleness of a batch (before the step, at `version`)."""
    samples = [s for g in groups for s in g.samples]
    n = max(len(samples), 1)
    staleness = [version - g.policy_version for g in groups]
    return {
        "reward": sum(s.reward for s in samples) / n,
        "accuracy": sum(s.accuracy for s in samples) / n,
        "format": sum(s.format for s in samples) / n,
        "response_tokens": sum(len(s.response_token_ids) for s in samples) / n,
        "reflection_rate": reflection_rate([s.response_text for s in samples]),
        "effective_reflection": sum(is_effective_reflection(s.response_text, s.accuracy > 0) for s in samples) / n,
        "styles": style_shares([s.response_text for s in samples]),
        "samples": len(samples),
        "staleness": staleness,
        "staleness_mean": sum(staleness) / max(len(staleness), 1),
    }


def observe(record: dict[str, Any]) -> None:
    """Set every metric from one step's record (the same record goes to metrics.jsonl)."""
    for metric, key in ((LOSS, "loss"), (POLICY_LOSS, "policy_loss"), (CLIP_FRACTION, "clip_fraction"),
                        (IMPORTANCE_MEAN, "importance_mean"), (IMPORTANCE_MAX, "importance_max"), (KL, "kl"),
                        (ENTROPY, "entropy"), (GRAD_NORM, "grad_norm"), (LR, "lr"), (REWARD, "reward"),
                        (ACCURACY, "accuracy"), (FORMAT, "format"), (RESPONSE_TOKENS, "response_tokens"),
                        (SAMPLES_PER_SECOND, "samples_per_second"), (POLICY_VERSION, "policy_version"),
                        (REFLECTION, "reflection_rate"), (EFFECTIVE_REFLECTION, "effective_reflection")):
        metric.set(record[key])
    for style, share in record["styles"].items():
        STYLE.labels(style).set(share)
    STEP_SECONDS.observe(record["step_seconds"])
    WAIT_SECONDS.observe(record["wait_seconds"])
    for lag in record["staleness"]:
        STALENESS.observe(lag)
    STEPS.inc()
    GROUPS_TRAINED.inc(record["groups"])
