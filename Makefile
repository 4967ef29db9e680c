# Both targets bootstrap the virtual environment from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARCH   ?= resnet18

.PHONY: test svhn bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

svhn: $(STAMP)
	$(PY) -m experiments.svhn --arch $(ARCH)

bench: $(STAMP)
	$(PY) -m experiments.bench --out bench.json

clean:
	rm -rf $(VENV) .pytest_cache
