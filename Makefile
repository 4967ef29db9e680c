# Both targets bootstrap the virtual environment from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARCH   ?= resnet18

.PHONY: test svhn bench clean gpu-wheels gpu-check

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

# The device check (experiments/gpu_check). The GPU machine has no network and its own CUDA jax, torch and the
# rest; it lacks a few pure-Python packages, whose wheels are fetched HERE into .gpu-wheels (an ignored folder:
# the device run must carry it) and installed THERE into .gpu-site. `gpu-check` runs there with the system
# python3, never the venv, and never installs jax or torch (the project's pins would replace its CUDA build).
GPU_WHEELS := .gpu-wheels
GPU_SITE   := .gpu-site

gpu-wheels: $(STAMP)
	rm -rf $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d $(GPU_WHEELS) pyhessian==0.1 mlxtend==0.25.0

gpu-check:
	if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then \
		python3 -m pip install -q --no-index --no-deps --upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl \
		|| echo "gpu-check: the carried wheels did not install; the sections needing them record a skip" >&2; fi
	PYTHONPATH=.:$(GPU_SITE) python3 -m experiments.gpu_check --out gpu-check

clean:
	rm -rf $(VENV) .pytest_cache
