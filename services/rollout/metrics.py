"""Prometheus metrics of a rollout worker (`eureka_rollout_*`)."""

from __future__ import annotations

from shared.metrics import counter, gauge, histogram

TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

TOKENS = counter("eureka_rollout_tokens_total", "response tokens generated")
TOKENS_PER_SECOND = gauge("eureka_rollout_tokens_per_second", "response tokens per second of the last batch")
SAMPLES = counter("eureka_rollout_samples_total", "responses generated")
SAMPLES_PER_SECOND = gauge("eureka_rollout_samples_per_second", "responses per second of the last batch")
GROUPS = counter("eureka_rollout_groups_total", "groups put to the buffer", ["result"])  # put | duplicate | lost_claim
GENERATE_SECONDS = histogram("eureka_rollout_generate_seconds", "wall time of one generation batch")
REWARD_SECONDS = histogram("eureka_rollout_reward_seconds", "wall time of one batched Verify call")
RESPONSE_LENGTH = histogram(
    "eureka_rollout_response_length_tokens", "response length in tokens", buckets=TOKEN_BUCKETS
)
REFLECTION_RATIO = gauge(
    "eureka_rollout_reflection_ratio", "share of the last batch's responses with a reflective phrase"
)
REWARD_MEAN = gauge("eureka_rollout_reward_mean", "mean reward of the last batch")
POLICY_VERSION = gauge("eureka_rollout_policy_version", "weight version being served")
PULL_SECONDS = histogram("eureka_rollout_weight_pull_seconds", "time to pull and load one weight version")
PULL_FAILURES = counter(
    "eureka_rollout_weight_pull_failures_total", "weight pulls that kept the old version", ["reason"]
)
PULLS = counter("eureka_rollout_weight_pulls_total", "verified gRPC pulls loaded", ["kind"])  # full | trainable
PULL_BYTES = counter("eureka_rollout_weight_pull_bytes_total", "chunk bytes received by the pulls loaded", ["kind"])
UPDATES = counter("eureka_rollout_weight_updates_total", "weight versions loaded", ["path"])  # grpc | broadcast
BROADCAST_MISSED = counter(
    "eureka_rollout_weight_broadcast_missed_total", "versions pulled over gRPC because no broadcast brought them"
)
PROMPTS_RELEASED = counter("eureka_rollout_prompts_released_total", "claimed prompts handed back", ["reason"])
REWARD_ERRORS = counter("eureka_rollout_reward_item_errors_total", "Verify items not OK (scored 0)", ["status"])
BATCH_ERRORS = counter("eureka_rollout_batch_errors_total", "batches abandoned on an RPC error", ["stage"])
