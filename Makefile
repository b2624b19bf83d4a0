# Two commands do all the set-up: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN ?= runs/demo

.PHONY: demo test install fashion-mnist test-deps clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
fashion-mnist:
	@if [ -f $(FMNIST) ] || [ -f "$${VISLAB_DATA:-/nonexistent}/fashion_mnist/train-images-idx3-ubyte.gz" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (or put the four .gz files in \$$VISLAB_DATA/fashion_mnist)" >&2; exit 2; \
	fi

demo: install fashion-mnist
	$(VENV)/bin/vislab train --run-dir $(RUN) --fresh
	$(VENV)/bin/vislab evaluate $(RUN)
	$(VENV)/bin/vislab report $(RUN)

# The report test opens the page in headless Chromium (Debian's chromium and chromium-driver).
test-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Chromium (Debian packages chromium, chromium-driver) for the report test"; \
		(apt-get install -y -qq chromium chromium-driver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)) >/dev/null; \
	else \
		echo "Chromium is missing: run 'sudo apt-get install chromium chromium-driver'" >&2; exit 2; \
	fi

# The layer contracts of pyproject.toml (docs/architecture.md), then the test suite.
test: install fashion-mnist test-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) runs .pytest_cache
