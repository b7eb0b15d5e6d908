# The two set-up commands of the README: `make demo` (the main job, offline) and `make test` (the fast tier:
# not slow, e2e or containers; at most 4 minutes on 2 cores). `make test-all` runs every tier (CI runs it);
# `make images` builds the images. The fast tier runs on one worker per core (pytest-xdist: its tests are
# mostly graph building, one core each); the other tiers time tools against their budgets, so they run alone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FAST_TIER := -m "not slow and not e2e and not containers" --numprocesses=auto --maxprocesses=4

.PHONY: install demo test test-all images bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nips-adv demo --out demo_output

test: $(STAMP)
	$(BIN)/ruff check nips_adv tests scripts
	$(BIN)/mypy nips_adv
	$(BIN)/python -m pytest -q $(FAST_TIER)

test-all: $(STAMP)
	$(BIN)/ruff check nips_adv tests scripts
	$(BIN)/mypy nips_adv
	$(BIN)/python -m pytest -q $(FAST_TIER)
	$(BIN)/python -m pytest -q -m "slow or e2e or containers"

images:
	scripts/build_images.sh

bench: $(STAMP)
	$(BIN)/nips-adv bench

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) demo_output build *.egg-info .pytest_cache
