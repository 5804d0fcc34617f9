# cfnet: `make demo` runs the whole chain on synthetic data; `make test` runs lint, types and tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision are pinned to the builds that lie on the project machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install system-deps test test-fast lint typecheck pytest demo bench clean

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

# What the acceptance tests drive for real: Debian's Chromium (the live view's browser test) and GStreamer's RTSP
# server with its Python bindings (the camera tests). Installed once with apt-get where missing (needs root).
APT_PACKAGES := chromium python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing with apt-get: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(VENV)/bin/ruff check cfnet export runtime bench tests

typecheck: install
	$(VENV)/bin/mypy export runtime bench cfnet

pytest: install system-deps
	$(VENV)/bin/pytest -q

# the fast set for development: without the acceptance tests that start real servers, browsers and cameras
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

test: lint typecheck pytest

demo: install
	$(VENV)/bin/cfnet demo --out demo

bench: install
	$(VENV)/bin/cfnet bench --quick --out bench-report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
