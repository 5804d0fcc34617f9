# cfnet: `make demo` runs the whole chain on synthetic data; `make test` runs lint, types and tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision are pinned to the builds that lie on the project machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest demo bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,cpu]' 'tritonclient[grpc,http]>=2.50'
	# the rest of [serve]: cfnet runs only the tritonserver binary and Python-backend stub of nvidia-pytriton;
	# its Python API (unused) pins numpy<2, which would downgrade the whole environment
	$(PIP) install -q --no-deps 'nvidia-pytriton>=0.5'
	# the stubs declare tensorrt as a dependency, which cannot install without NVIDIA's index
	$(PIP) install -q --no-deps tensorrt-stubs
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check cfnet export runtime bench tests

typecheck: install
	$(VENV)/bin/mypy export runtime bench cfnet

pytest: install
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

demo: install
	$(VENV)/bin/cfnet demo --out demo

bench: install
	$(VENV)/bin/cfnet bench --quick --out bench-report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
