"""`eureka up`: redis-server, reward, buffer, learner (torchrun) and rollout workers on 127.0.0.1.

Top to bottom: prepare data and the base model, evaluate the base on the held-out split, start every
process with health checks, follow training with a progress bar, stop everything in order, evaluate
the final policy, write `curves.png` and `summary.json`. Ctrl-C stops cleanly; `--resume` continues.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from eureka_cli.local import run_folder
from eureka_cli.local.config import UpConfig
from eureka_cli.local.progress import Progress, scrape_total
from eureka_cli.local.supervisor import ProcessDied, Supervisor, eureka_argv
from shared.logs import get_logger, setup_logging
from shared.redis_proc import RedisProc, free_port, start_redis

if TYPE_CHECKING:
    from shared.model.pretrain import BaseRecipe

log = get_logger("up")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during the run."""


def raise_interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(cfg: UpConfig) -> int:
    setup_logging("up")
    try:
        run_dir = run_folder.claim(cfg.run_dir, "demo", resume=cfg.resume, holds_run="learner/checkpoint.json",
                                   command="up")
    except run_folder.RunFolderRefused as e:
        print(e)
        return 2
    print(f"eureka up: run folder {run_dir}", flush=True)
    cfg = cfg.model_copy(update={"run_dir": run_dir})
    learner_dir = run_dir / "learner"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"service_token"})))
    signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)
    started = time.time()
    sup = Supervisor(run_dir)
    redis: RedisProc | None = None
    try:
        train, heldout, base = prepare(cfg)
        base_eval = evaluate(sup, "eval-base", base, heldout, cfg, run_dir / "eval_base.json")
        other = OTHER_PROMPT[cfg.recipe.reward_mode]
        base_other = evaluate(sup, "eval-base-other", base, heldout, cfg, run_dir / f"eval_base_{other}.json", other)
        token = cfg.service_token.get_secret_value() if cfg.service_token else secrets.token_urlsafe(24)
        redis = start_redis(run_dir / "redis", password=secrets.token_urlsafe(24), fsync=cfg.redis_fsync)
        ports = start_services(sup, cfg, redis, token, train, base, learner_dir)
        train_start = time.time()
        _follow(sup, cfg, learner_dir, ports)
        train_s = time.time() - train_start
        stop_services(sup, redis)
        redis = None
        final_eval = evaluate(sup, "eval-final", learner_dir / "final", heldout, cfg, run_dir / "eval_final.json")
    except Interrupted as e:
        log.warning("interrupted, stopping every process", signal=str(e))
        stop_services(sup, redis)
        print(f"stopped; continue with: eureka up --run-dir {cfg.run_dir} --resume")
        return 130
    except ProcessDied as e:
        stop_services(sup, redis)
        print(f"eureka up: {e}")
        return 1
    summary = _summary(cfg, run_dir, learner_dir, base_eval, base_other, final_eval, time.time() - started, train_s)
    print(json.dumps(summary, indent=2))
    return 0


def prepare(cfg: UpConfig) -> tuple[Path, Path, Path]:
    """The train/held-out files (the synthetic world, made once into the cache) and the base model."""
    from shared.model.cache import ensure_base_model, synthetic_dir
    from shared.model.cli import SyntheticSettings, make_synthetic

    train, heldout = cfg.train_data, cfg.heldout_data
    if train is None or heldout is None:
        world = base_recipe(cfg).world
        synth = SyntheticSettings(out=synthetic_dir(cfg.seed, world), seed=cfg.seed, generator=world)
        if not (synth.out / "heldout.jsonl").exists():
            make_synthetic(synth)
        train, heldout = train or synth.out / "train.jsonl", heldout or synth.out / "heldout.jsonl"
    return train, heldout, cfg.model_path or ensure_base_model(base_recipe(cfg))


def _system_prompt_flag(cfg: UpConfig) -> list[str]:
    return [] if cfg.recipe.system_prompt is None else ["--system-prompt", json.dumps(cfg.recipe.system_prompt)]


def _backend_flags(cfg: UpConfig) -> list[str]:
    vllm = [f"--vllm.{k.replace('_', '-')}={json.dumps(v)}" for k, v in cfg.rollout_vllm.model_dump(mode="json").items()
            if v is not None]
    return ["--backend", cfg.rollout_backend, *(vllm if cfg.rollout_backend == "vllm" else [])]


def base_recipe(cfg: UpConfig) -> BaseRecipe:
    """The base a run starts from: `world`'s chat base, or in pretrained mode the v3 base pretrained without
    chat data (the plain corpus is written for world 3)."""
    from shared.model.pretrain import BaseRecipe

    if cfg.recipe.reward_mode == "pretrained":
        return BaseRecipe(world=3, corpus="plain")
    return BaseRecipe(world=cfg.world)


# The base's other prompt, evaluated too: a gain must beat the base's best prompt, not only its own.
OTHER_PROMPT = {"instruct": "boxed", "pretrained": "question"}


def evaluate(sup: Supervisor, name: str, model: Path, data: Path, cfg: UpConfig, out: Path,
             prompt: str | None = None) -> dict:
    """Greedy held-out evaluation (`eureka eval`, the run's mode, `prompt` or the mode's own) as a child
    process; cached in `out`."""
    if not out.exists():
        sup.start(name, eureka_argv("eval", "--model", str(model), "--data", str(data), "--limit", str(cfg.eval_limit),
                                    "--greedy", "--mode", cfg.recipe.reward_mode, "--prompt",
                                    prompt or cfg.recipe.reward_mode, "--max-new-tokens",
                                    str(cfg.recipe.max_response_tokens), "--out", str(out),
                                    "--pretrain-min-think-chars", str(cfg.pretrain_min_think_chars),
                                    *(_system_prompt_flag(cfg) if (prompt or cfg.recipe.reward_mode) == "instruct" else [])),
                  exits=True)
        if sup.wait(name) != 0 or not out.exists():
            raise ProcessDied(f"{name} failed; see {sup.procs[name].log_path}:\n{sup.procs[name].tail()}")
    return json.loads(out.read_text())


def start_services(sup: Supervisor, cfg: UpConfig, redis: RedisProc, token: str, train: Path, base: Path,
                    learner_dir: Path, learner_extra: list[str] | None = None) -> dict[str, int]:
    from shared.config import GrpcConfig, SecurityConfig
    from shared.grpc_client import create_channel, wait_serving

    p = {k: free_port() for k in ("reward", "reward_http", "buffer", "weights", "m_reward", "m_buffer", "m_learner",
                                  "broadcast")}
    env = {"EUREKA_SECURITY__SERVICE_TOKEN": token}
    broadcast = [f"--broadcast.enabled={json.dumps(cfg.broadcast)}", f"--broadcast.address=127.0.0.1:{p['broadcast']}"]
    recipe = [f"--recipe.{k.replace('_', '-')}={json.dumps(v)}" for k, v in cfg.recipe.model_dump(mode="json").items()]
    sup.start("reward", eureka_argv("reward", "serve", "--grpc-port", str(p["reward"]), "--http-port",
                                    str(p["reward_http"]), "--metrics-port", str(p["m_reward"]),
                                    "--pretrain-min-think-chars", str(cfg.pretrain_min_think_chars)), env)
    sup.start("buffer", eureka_argv("buffer", "serve", "--port", str(p["buffer"]), "--metrics-port", str(p["m_buffer"]),
                                    "--redis.url", redis.url,
                                    *(["--lease-s", str(cfg.buffer_lease_s)] if cfg.buffer_lease_s else [])),
              {**env, "EUREKA_REDIS__PASSWORD": redis.password})
    sup.start("learner", eureka_argv(
        "learner", "run", "--run-dir", str(learner_dir), "--data-path", str(train), "--model-path", str(base),
        "--world-size", str(cfg.learner_procs), "--zero-stage", str(cfg.zero_stage), "--total-steps", str(cfg.steps),
        "--checkpoint-every", str(cfg.checkpoint_every), "--buffer-address", f"127.0.0.1:{p['buffer']}",
        "--weights-port", str(p["weights"]), "--metrics-port", str(p["m_learner"]), "--mode", cfg.mode,
        "--seed", str(cfg.seed), "--resume", json.dumps(cfg.resume), *recipe, *broadcast, *(learner_extra or [])), env,
        finishes=True)  # a short run may end before every worker answers its health check
    for i in range(cfg.rollout_workers):
        p[f"rollout{i}"], p[f"m_rollout{i}"] = free_port(), free_port()
        sup.start(f"rollout{i}", eureka_argv(
            "rollout", "serve", "--port", str(p[f"rollout{i}"]), "--metrics-port", str(p[f"m_rollout{i}"]),
            "--buffer-address", f"127.0.0.1:{p['buffer']}", "--reward-address", f"127.0.0.1:{p['reward']}",
            "--learner-address", f"127.0.0.1:{p['weights']}", "--model-path", str(base), "--worker-id", f"rollout{i}",
            "--mode", cfg.mode, "--cpu-threads", "1", "--seed", str(cfg.seed + i), *recipe, *broadcast,
            *_backend_flags(cfg)), env)
    security = SecurityConfig(service_token=token)
    for name in ("reward", "buffer", "weights", *(f"rollout{i}" for i in range(cfg.rollout_workers))):
        deadline = time.monotonic() + cfg.start_timeout_s
        channel = create_channel(f"127.0.0.1:{p[name]}", GrpcConfig(), security)
        while True:
            sup.check()
            try:
                wait_serving(channel, timeout_s=2.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise ProcessDied(f"{name} did not answer its health check within {cfg.start_timeout_s}s") from None
        channel.close()
    _write_prometheus_targets(cfg.run_dir, p, cfg.rollout_workers)
    log.info("all services healthy", **{k: v for k, v in p.items() if not k.startswith("m_")})
    return p


def _write_prometheus_targets(run_dir: Path, p: dict[str, int], workers: int) -> None:
    """A Prometheus file_sd list of every /metrics endpoint, for `prometheus` pointed at this run."""
    targets = [("reward", p["m_reward"]), ("buffer", p["m_buffer"]), ("learner", p["m_learner"])]
    targets += [("rollout", p[f"m_rollout{i}"]) for i in range(workers)]
    sd = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": f"eureka-{job}"}} for job, port in targets]
    (run_dir / "prometheus_targets.json").write_text(json.dumps(sd, indent=2))


def _follow(sup: Supervisor, cfg: UpConfig, learner_dir: Path, p: dict[str, int]) -> None:
    urls = [f"http://127.0.0.1:{p[f'm_rollout{i}']}/metrics" for i in range(cfg.rollout_workers)]
    progress = Progress(learner_dir / "metrics.jsonl", cfg.steps, urls)
    sup.procs["learner"].expected_exit = True
    try:
        while sup.procs["learner"].alive:
            sup.check()
            progress.poll()
            time.sleep(1.0)
        progress.poll()
    finally:
        progress.close()
    (cfg.run_dir / "tokens.json").write_text(json.dumps({"tokens": scrape_total(urls, "eureka_rollout_tokens_total")}))
    code = sup.wait("learner")
    if code != 0:
        raise ProcessDied(f"learner exited with code {code}; see {sup.procs['learner'].log_path}:\n"
                          f"{sup.procs['learner'].tail()}")


def stop_services(sup: Supervisor, redis: RedisProc | None) -> None:
    sup.stop_all()
    if redis is not None:
        redis.stop()


def _summary(cfg: UpConfig, run_dir: Path, learner_dir: Path, base: dict, base_other: dict, final: dict,
             wall_s: float, train_s: float) -> dict:
    from shared.plots import plot_curves, read_jsonl

    rows = read_jsonl(learner_dir / "metrics.jsonl")
    keys = ("accuracy", "format", "mean_length", "reflection_rate", "effective_reflection", "styles")

    def by_difficulty(report: dict) -> dict:
        return {k: {"accuracy": v["accuracy"], "mean_length": v["mean_length"]}
                for k, v in report.get("difficulty", {}).items()}

    b, f = base["overall"], final["overall"]
    best = max(b["accuracy"], base_other["overall"]["accuracy"])
    pairs = (("accuracy", "accuracy"), ("response_tokens", "mean_length"), ("reflection_rate", "reflection_rate"),
             ("effective_reflection", "effective_reflection"))
    held_out = {curve: (b[key], f[key]) for curve, key in pairs}
    plot_curves(rows, run_dir / "curves.png", title=f"eureka up ({cfg.mode}, {cfg.recipe.reward_mode})",
                held_out=held_out)
    tokens = json.loads((run_dir / "tokens.json").read_text())["tokens"] if (run_dir / "tokens.json").exists() else None
    summary = {
        "mode": cfg.mode,
        "steps": rows[-1]["step"] if rows else 0,
        "wall_time_s": round(wall_s, 1),
        "train_time_s": round(train_s, 1),
        "samples": sum(r.get("samples", 0) for r in rows),
        "tokens": tokens,
        "reward_mode": cfg.recipe.reward_mode,
        "base": {**{k: b.get(k) for k in keys}, "difficulty": by_difficulty(base)},
        "base_other_prompt": {"prompt": OTHER_PROMPT[cfg.recipe.reward_mode],
                              "accuracy": base_other["overall"]["accuracy"]},
        "final": {**{k: f.get(k) for k in keys}, "difficulty": by_difficulty(final)},
        "accuracy_gain": round(f["accuracy"] - b["accuracy"], 4),
        "accuracy_over_best_base_prompt": round(f["accuracy"] - best, 4),
        "length_ratio": round(f["mean_length"] / max(b["mean_length"], 1e-9), 3),
        "reflection_gain": round(f["reflection_rate"] - b["reflection_rate"], 4),
        "curves": str(run_dir / "curves.png"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
