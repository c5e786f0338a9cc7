# `make run`: set up everything on a fresh machine and start LlamaGate (web + worker).
# `make test`: set up everything and run the whole test suite.
VENV ?= .venv
PYTHON ?= python3
INSTALLED := $(VENV)/.installed

.PHONY: install services test-services run test bench clean

$(INSTALLED): setup.cfg pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing LlamaGate and its dependencies into $(VENV) (the first time takes several minutes)"
	@echo "the first install compiles llama.cpp from source for llama-cpp-python (several minutes on 2 cores);"
	@echo "pip keeps the built wheel in its cache, so later installs are fast"
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(INSTALLED)

services:
	@scripts/ensure-services.sh

test-services:
	@scripts/ensure-test-services.sh

run: install services
	@scripts/run.sh

test: install services test-services
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
