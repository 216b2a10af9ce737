# marathon: the two commands a newcomer needs are `make marathon` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
RUN_CONFIG ?= experiment.toml
RESULTS ?= results

.PHONY: help setup docker-engine tmux install stryker images validate mutate mutate-relay mutate-inventory test marathon clean-containers

help:
	@echo "make marathon   install what is missing, build images, run the main job, write its report, print its path"
	@echo "make test       run the test suite (needs Docker; installs nothing)"
	@echo "make setup      install the Python package, StrykerJS (tools/stryker) and, on Debian, a Docker engine, debootstrap and tmux"
	@echo "make validate   check the ledger marathon on seeds 0,1,2 (references pass, starter and mutants fail)"
	@echo "make mutate     mutation-test the ledger gates (all cosmic-ray mutants, 3 seeds; long) into $(MUTATE_OUT)"
	@echo "make mutate-relay  mutation-test the relay gates (a StrykerJS sample, 3 seeds; long) into results/mutate-relay"
	@echo "make mutate-inventory  mutation-test the inventory gates (all cosmic-ray mutants, 3 seeds; long) into results/mutate-inventory"

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test,mutate,ray]'

# The TypeScript mutant source of `marathon mutate` (docs/gates-quality.md): StrykerJS and the
# Node.js that runs it, exactly as pinned in tools/stryker/package-lock.json (any host npm will do).
stryker:
	@command -v npm >/dev/null || { echo "make stryker: npm not found: install Node.js and npm (Debian: apt-get install npm)" >&2; exit 2; }
	@if ! cmp -s tools/stryker/package-lock.json tools/stryker/node_modules/.installed-lock.json 2>/dev/null; then \
	  echo "installing StrykerJS into tools/stryker/node_modules"; \
	  npm ci --prefix tools/stryker --no-audit --no-fund --loglevel=error >/dev/null && \
	  cp tools/stryker/package-lock.json tools/stryker/node_modules/.installed-lock.json; fi

# On a Debian host without a running engine: install docker.io and debootstrap and start dockerd
# (no iptables, no default bridge: trial containers have no network at all). Elsewhere a missing
# engine is a clear error.
docker-engine:
	@if docker info >/dev/null 2>&1 && command -v debootstrap >/dev/null; then exit 0; fi; \
	if [ ! -f /etc/debian_version ]; then \
	  echo "make setup: no Docker engine reachable and this is not a Debian host: install and start Docker yourself" >&2; exit 2; fi; \
	if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then \
	  echo "installing docker.io and debootstrap"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; fi; \
	if ! docker info >/dev/null 2>&1; then \
	  echo "starting dockerd"; \
	  nohup dockerd --iptables=false --ip-masq=false --bridge=none >/tmp/marathon-dockerd.log 2>&1 & \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /tmp/marathon-dockerd.log" >&2; exit 2; }; fi

# tmux: the human-operator arm's test drives an operator's terminal through it (Debian: apt).
tmux:
	@if command -v tmux >/dev/null; then exit 0; fi; \
	if [ ! -f /etc/debian_version ]; then \
	  echo "make setup: tmux not found and this is not a Debian host: install tmux yourself" >&2; exit 2; fi; \
	echo "installing tmux"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null

setup: install stryker docker-engine tmux

images: setup
	marathon images build

validate: images
	marathon validate ledger

# The full mutation-testing run of the ledger gates (docs/gates-quality.md): every filtered
# cosmic-ray mutant of the final reference on seeds 0,1,2; resumable (run it again after an
# interruption). Writes mutants.csv, mutants.parquet and summary.md into MUTATE_OUT.
MUTATE_OUT ?= $(RESULTS)/mutate-ledger
mutate: images
	marathon mutate ledger --out $(MUTATE_OUT)

# The relay gates against StrykerJS mutants of relay's final reference: the seeded sample whose
# figures docs/gates-quality.md reports (resumable, like `make mutate`).
mutate-relay: images
	marathon mutate relay --sample 320 --seed 0 --out $(RESULTS)/mutate-relay

# The inventory gates against every cosmic-ray mutant of inventory's final reference (298
# candidates once filtered and the reviewed equivalents are out), on seeds 0, 1, 2.
mutate-inventory: images
	marathon mutate inventory --out $(RESULTS)/mutate-inventory

test:
	$(PYTHON) -m pytest

# Run the main job, then write its report (tables, charts, report.md) into <run dir>/report and
# print the report's path. A run that stopped with failed or interrupted trials is reported too
# (they are listed as excluded); make still exits with the run's status.
# The main job (experiment.toml) is the real Claude Code CLI against the scripted model, a
# simulation, offline. Against a vendor API instead, name the model (and the agent) on the command
# line, with the vendor's key in the environment:
#   ANTHROPIC_API_KEY=... make marathon MODEL=claude-sonnet-4-5
#   OPENAI_API_KEY=...    make marathon AGENT=codex MODEL=gpt-5-codex
cmdline = $(filter command line,$(origin $(1)))
MODEL_FLAGS = $(if $(call cmdline,AGENT),--agent $(AGENT)) $(if $(call cmdline,MODEL),--model $(MODEL))
marathon: images
	@run_id=$$(date -u +%Y%m%dT%H%M%SZ)-make; \
	marathon run -c $(RUN_CONFIG) --out $(RESULTS) --run-id $$run_id $(MODEL_FLAGS); status=$$?; \
	if [ -f $(RESULTS)/$$run_id/trials.parquet ]; then \
	  marathon report $(RESULTS)/$$run_id --out $(RESULTS)/$$run_id/report || exit $$?; fi; \
	exit $$status

clean-containers:
	-docker ps -aq --filter label=org.marathon.run | xargs -r docker rm -f
