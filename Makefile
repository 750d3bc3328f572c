# make demo      set up (Debian packages, .venv) and run the offline demo
# make test      set up and run the test suite (what CI runs)
# make test-slow the slow checks, kept out of the default run
VENV ?= .venv
PYTHON ?= python3
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow
setup: $(VENV)/.usam-setup-done

$(VENV)/.usam-setup-done: pyproject.toml scripts/setup.sh scripts/apt-packages.txt
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/usam demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(VENV)/bin/python -m pytest -q -m slow $(PYTEST_ARGS)
