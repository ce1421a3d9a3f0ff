# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create/refresh .venv first (pinned versions from requirements.txt; Horovod built once from source
# against the installed MXNet and cached as a wheel in $(WHEEL_CACHE)).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
VPIP := $(VPY) -m pip --disable-pip-version-check -q
WHEEL_CACHE ?= $(HOME)/.cache/gluonface/wheels
STAMP := $(VENV)/.installed
HOROVOD_FLAGS := HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS=-j2
PYTEST_ARGS ?=
DEMO_DIR ?= demo_out

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPIP) install --upgrade pip==24.2 setuptools==70.3.0 wheel==0.44.0 cmake==3.30.5
	$(VPIP) install -r requirements.txt
	$(VPIP) install --no-deps gluoncv==0.10.5.post0 mtcnn==1.0.0 insightface==2.1
	@mkdir -p $(WHEEL_CACHE)
	@if ! ls $(WHEEL_CACHE)/horovod-0.28.1-*.whl >/dev/null 2>&1; then \
	  echo "building horovod 0.28.1 against mxnet (once, ~4 min on 2 cores)"; \
	  d=$$(mktemp -d) && cd $$d && PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(HOROVOD_FLAGS) \
	    $(CURDIR)/$(VPY) -m pip --disable-pip-version-check -q wheel --no-deps --no-build-isolation \
	    -w $(WHEEL_CACHE) horovod==0.28.1 || exit 1; \
	fi
	$(VPIP) install --no-deps $(WHEEL_CACHE)/horovod-0.28.1-*.whl cloudpickle==3.1.0 psutil==6.1.0
	$(VPIP) install --no-deps -e .
	$(VPY) -c "import mxnet, gluoncv, horovod.mxnet, insightface, gluonface; print('gluonface environment ready: mxnet', mxnet.__version__)"
	touch $(STAMP)

# On an AVX-512 machine the tests marked cpu_paths run a second time with oneDNN capped at AVX2, the code
# path of AVX2-only CPUs (MXNet 1.9.1 crashed or computed wrong on one path only): one run covers both families.
test: install
	$(VPY) -m pytest tests $(PYTEST_ARGS)
	@if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then \
	  echo "== the cpu_paths tests again on oneDNN's AVX2 code path (DNNL_MAX_CPU_ISA=AVX2)"; \
	  DNNL_MAX_CPU_ISA=AVX2 $(VPY) -m pytest tests -m "cpu_paths and not slow" $(PYTEST_ARGS); \
	fi

test-fast: install
	$(VPY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VPY) tools/demo.py --out $(DEMO_DIR)

bench: install
	$(VPY) bench/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info
