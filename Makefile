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

.PHONY: install ops test test-fast demo bench clean

install: $(STAMP) ops

# gluonface's native operators (gluonface/ops/csrc), compiled with the system C++ compiler against the
# extension API headers shipped in the installed mxnet wheel. One object per instruction set: the generic one
# has no -m flags, so the library loads on any x86-64 CPU and picks AVX2/AVX-512 at run time.
# -Bsymbolic: the library's calls into its own copy of MXNet's extension API (lib_api.cc) must bind to that
# copy. libmxnet.so exports the same mxnet::ext symbols, and once Horovod loads its MXNet plugin with
# RTLD_GLOBAL they come first in the global scope: registration then wrote into libmxnet's registry and
# crashed (SIGFPE in CustomOp::setBackward) in every process that had imported horovod.mxnet first.
OPS_SRC := gluonface/ops/csrc
OPS_LIB := gluonface/ops/libgluonface_ops.so
OPS_OBJ := build/ops
CXX ?= g++
OPS_CXXFLAGS := -O3 -std=c++17 -fPIC -fopenmp -Wall -Wno-maybe-uninitialized
OPS_ISA_FLAGS_generic :=
OPS_ISA_FLAGS_avx2 := -mavx2 -mfma
OPS_ISA_FLAGS_avx512 := -mavx512f

# gluonface's INT8 runner (gluonface/ops/csrc/int8; gluonface/ops/int8net.py): plain C++ loaded with ctypes,
# no MXNet headers. -ffp-contract=off: every instruction-set path must do the same float32 operations (no
# fused multiply-adds), so all paths give the same bytes.
INT8_SRC := $(OPS_SRC)/int8
INT8_LIB := gluonface/ops/libgluonface_int8.so
INT8_CXXFLAGS := $(OPS_CXXFLAGS) -ffp-contract=off
INT8_ISA_FLAGS_generic :=
INT8_ISA_FLAGS_avx2 := -mavx2 -mfma
INT8_ISA_FLAGS_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512vnni

ops: $(OPS_LIB) $(INT8_LIB)

$(OPS_OBJ)/int8_net.o: $(INT8_SRC)/net.cc $(INT8_SRC)/net.h
	@mkdir -p $(OPS_OBJ)
	$(CXX) $(INT8_CXXFLAGS) -c $< -o $@

$(OPS_OBJ)/int8_kernels_%.o: $(INT8_SRC)/kernels_%.cc $(INT8_SRC)/net.h $(INT8_SRC)/common.h
	@mkdir -p $(OPS_OBJ)
	$(CXX) $(INT8_CXXFLAGS) $(INT8_ISA_FLAGS_$*) -c $< -o $@

$(INT8_LIB): $(OPS_OBJ)/int8_net.o $(OPS_OBJ)/int8_kernels_generic.o $(OPS_OBJ)/int8_kernels_avx2.o \
		$(OPS_OBJ)/int8_kernels_avx512.o
	$(CXX) -shared -fopenmp $^ -o $@.tmp && mv $@.tmp $@
	$(VPY) -c "from gluonface.ops import int8net as n; print('gluonface INT8 runner built:', n.isa(), 'path (this CPU runs', ', '.join(n.supported_isas()) + ')')"

$(OPS_OBJ)/mxnet_include: $(STAMP)
	@mkdir -p $(OPS_OBJ)
	$(VPY) -c "import mxnet, os; print(os.path.dirname(mxnet.__file__))" > $@

$(OPS_OBJ)/lib_api.o: $(OPS_OBJ)/mxnet_include
	$(CXX) $(OPS_CXXFLAGS) -I$$(cat $<)/include -c $$(cat $<)/src/lib_api.cc -o $@

$(OPS_OBJ)/op_%.o: $(OPS_SRC)/op_%.cc $(OPS_SRC)/op_common.h $(OPS_SRC)/kernels.h $(OPS_OBJ)/mxnet_include
	$(CXX) $(OPS_CXXFLAGS) -I$$(cat $(OPS_OBJ)/mxnet_include)/include -c $< -o $@

$(OPS_OBJ)/isa.o: $(OPS_SRC)/isa.cc $(OPS_SRC)/op_common.h $(OPS_SRC)/kernels.h $(OPS_OBJ)/mxnet_include
	$(CXX) $(OPS_CXXFLAGS) -I$$(cat $(OPS_OBJ)/mxnet_include)/include -c $< -o $@

$(OPS_OBJ)/kernels_%.o: $(OPS_SRC)/kernels_%.cc $(OPS_SRC)/kernels.h $(OPS_SRC)/planes.h $(OPS_SRC)/bn_prelu.h
	@mkdir -p $(OPS_OBJ)
	$(CXX) $(OPS_CXXFLAGS) $(OPS_ISA_FLAGS_$*) -c $< -o $@

$(OPS_LIB): $(OPS_OBJ)/lib_api.o $(OPS_OBJ)/isa.o $(OPS_OBJ)/op_prelu.o $(OPS_OBJ)/op_bn_prelu.o \
		$(OPS_OBJ)/kernels_generic.o $(OPS_OBJ)/kernels_avx2.o $(OPS_OBJ)/kernels_avx512.o
	$(CXX) -shared -fopenmp -Wl,-Bsymbolic $^ -o $@.tmp && mv $@.tmp $@  # rename: running processes keep the old file
	GLUONFACE_NATIVE=1 $(VPY) -c "import gluonface.ops as o; s = o.status(); print('gluonface native ops built:', s['backend'], s['isa'] or s['reason'], '(opt-in: GLUONFACE_NATIVE=1)')"

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
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info $(OPS_LIB) $(INT8_LIB)
