# The two set-up commands of the README: `make demo` (the main job, offline) and `make test` (the fast tier:
# not slow, e2e or containers; at most 4 minutes on 2 cores). `make test-all` runs every tier (CI runs it);
# `make images` builds the images.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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
	$(BIN)/python -m pytest -q -m "not slow and not e2e and not containers"

test-all: $(STAMP)
	$(BIN)/ruff check nips_adv tests scripts
	$(BIN)/mypy nips_adv
	$(BIN)/python -m pytest -q

images:
	scripts/build_images.sh

bench: $(STAMP)
	$(BIN)/nips-adv bench

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) demo_output build *.egg-info .pytest_cache
