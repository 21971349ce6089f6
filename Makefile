# Two entry points (README): `make run` runs the pipeline, `make test` runs the tests.
# Both create or refresh .venv (Python 3.12) and the system packages they need, idempotently.
PROFILE ?= smoke
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Offline by default: production runs (PROFILE=v4.1) download weights by Hub id.
export HF_HUB_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: setup run demo test clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng)
	@test -x /usr/sbin/sshd || (apt-get update -qq && apt-get install -y -qq openssh-server)  # the multihost tests' SSH DVC remote
	@test -x $(PY) || { PY312=$$(command -v python3.12 || PYENV_VERSION=3.12.1 pyenv which python3.12); $$PY312 -m venv $(VENV); }
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' || { echo "$(VENV) is not Python 3.12: remove it"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	@touch $(STAMP)

# The retrain Prefect flow (ephemeral server unless PREFECT_API_URL is set) runs every DVC stage in order.
run: setup
ifeq ($(PROFILE),v4.1)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH HF_HUB_OFFLINE=0 $(PY) -m flows.retrain --workdir .
else ifeq ($(PROFILE),rehearsal)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pipeline.rehearsal  # full-size, measured stage by stage (~20+ min, ~14 GB RAM)
else
	@WS=$$($(PY) -m pipeline.workspace --profile $(PROFILE)) && \
	  PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m flows.retrain --workdir $$WS
endif

# The coordinator demo on a workspace `make run` made (runs/<profile>; the repo itself for v4.1). An existing
# workspace is synced first, so its params carry the profile's current `demo` group. DEMO_ARGS: extra flags.
demo: setup
ifeq ($(PROFILE),v4.1)
	$(PY) -m tasks.demo --workdir . $(DEMO_ARGS)
else
	@test ! -d runs/$(PROFILE) || $(PY) -m pipeline.workspace --profile $(PROFILE) >/dev/null
	$(PY) -m tasks.demo --workdir runs/$(PROFILE) $(DEMO_ARGS)
endif

test: setup
	$(PY) -m pytest

clean-runs:
	rm -rf runs/
