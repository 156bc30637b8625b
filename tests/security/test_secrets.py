"""The service token and the Redis password never appear in logs, /metrics pages or process argv: the stack
is exercised (good calls, failed auth, a wrong Redis password, bad configurations) and everything is grepped."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import httpx
from eureka.v1 import buffer_pb2, buffer_pb2_grpc, common_pb2, reward_pb2, reward_pb2_grpc

from eureka_cli.local.supervisor import eureka_argv
from shared.logs import _KeyValueFormatter
from tests.security.conftest import FRAGMENTS, REDIS_PASSWORD, SECRETS, TOKEN, reward_argv


def exercise(stack) -> None:
    """Good calls and refused calls on every door."""
    verify = reward_pb2.VerifyRequest(items=[reward_pb2.VerifyItem(response="<answer>2</answer>", gold="2")])
    assert reward_pb2_grpc.RewardServiceStub(stack.channel("reward")).Verify(verify).results[0].accuracy == 1.0
    buffer = buffer_pb2_grpc.BufferServiceStub(stack.channel("buffer"))
    cursor = buffer.GetCursor(buffer_pb2.GetCursorRequest()).cursor
    prompt = common_pb2.Prompt(prompt_id=f"sec:{cursor}", messages_json="[]", answer="2", cursor=cursor)
    buffer.EnqueuePrompts(
        buffer_pb2.EnqueuePromptsRequest(prompts=[prompt], cursor_start=cursor, cursor_end=cursor + 1))
    for token in (None, "wrong"):
        try:
            buffer_pb2_grpc.BufferServiceStub(stack.channel("buffer", token)).GetStats(buffer_pb2.GetStatsRequest())
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
    with httpx.Client(base_url=stack.reward_url, timeout=30) as http:
        assert http.post("/v1/reward", json={"items": []}, headers={"authorization": "Bearer nope"}).status_code == 401
        bad_json = http.post("/get_reward", content=b"{bad", headers={"authorization": f"Bearer {TOKEN}"})
        assert bad_json.status_code == 422


def bad_configs(stack) -> None:
    """Services started with secrets and a broken configuration, or a wrong Redis password; they must say why."""
    sup, redis = stack.sup, stack.redis
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": TOKEN}
    ports = {n: 0 for n in ("reward", "reward_http", "reward_metrics")}
    sup.start("bad-tls-pair", reward_argv(ports), {**env, "EUREKA_SECURITY__TLS_CERT": "/nowhere.pem"}, exits=True)
    sup.start("bad-workers", reward_argv(ports, "--workers", "0"), env, exits=True)
    sup.start("bad-redis-url", eureka_argv("buffer", "serve", "--port", "0", "--metrics-port", "0"),
              {**env, "EUREKA_REDIS__URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/x",
               "EUREKA_REDIS__KEY_PREFIX": ""}, exits=True)
    for name in ("bad-tls-pair", "bad-workers", "bad-redis-url"):
        assert sup.wait(name, 60) == 2, sup.procs[name].tail()
    sup.start("wrong-redis-pw", eureka_argv("buffer", "serve", "--port", "0", "--metrics-port", "0", "--redis.url",
                                            redis.url), {**env, "EUREKA_REDIS__PASSWORD": REDIS_PASSWORD[::-1]})
    log = sup.procs["wrong-redis-pw"].log_path
    end = time.monotonic() + 30
    while "waiting for redis" not in log.read_text() and time.monotonic() < end:
        time.sleep(0.2)
    sup.stop("wrong-redis-pw", grace_s=10)
    assert "waiting for redis" in log.read_text()
    assert "invalid configuration" in sup.procs["bad-tls-pair"].log_path.read_text()


def metrics_pages(stack) -> dict[str, str]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    pages = {"reward /metrics": httpx.get(f"{stack.reward_url}/metrics", headers=headers, timeout=10).text}
    for name in ("reward_metrics", "buffer_metrics"):
        pages[name] = httpx.get(f"http://127.0.0.1:{stack.ports[name]}/metrics", timeout=10).text
    return pages


def test_no_secret_in_logs_metrics_or_argv(stack) -> None:
    exercise(stack)
    bad_configs(stack)
    pages = metrics_pages(stack)
    assert all("eureka_" in text for text in pages.values()), "a metrics page is empty"
    logs = sorted(Path(stack.run_dir, "logs").glob("*.log"))
    assert len(logs) >= 7, logs
    hits = [(str(p), s) for p in logs for s in FRAGMENTS if s in p.read_text(errors="replace")]
    hits += [(name, s) for name, text in pages.items() for s in FRAGMENTS if s in text]
    assert hits == []
    total = sum(p.stat().st_size for p in logs)
    print(f"grepped {len(logs)} logs ({total} bytes) and {len(pages)} metrics pages: 0 secrets")
    for name, m in stack.sup.procs.items():
        if m.alive:  # secrets travel in the environment, never in argv (visible to every user in `ps`)
            argv = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
            assert not any(s.encode() in argv for s in FRAGMENTS), name
            assert TOKEN.encode() in Path(f"/proc/{m.proc.pid}/environ").read_bytes(), name
    assert REDIS_PASSWORD.encode() not in Path(f"/proc/{stack.redis.proc.pid}/cmdline").read_bytes()


def test_log_fields_named_like_secrets_are_masked() -> None:
    record = logging.LogRecord("eureka.x", logging.INFO, __file__, 1, "connected", None, None)
    record.fields = {"service_token": TOKEN, "redis_password": REDIS_PASSWORD, "Authorization": f"Bearer {TOKEN}",
                     "group_id": "p#1"}
    line = _KeyValueFormatter("test").format(record)
    assert not any(s in line for s in SECRETS) and "group_id=p#1" in line and "service_token=***" in line
