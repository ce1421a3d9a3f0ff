// Instruction-set dispatch of gluonface's native kernels, the C entry points gluonface/ops/library.py calls
// through ctypes, and the library's initialize() required by MXNet's extension API (lib_api.h).
#include "op_common.h"

namespace gfops {
namespace {

enum Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

bool isa_supported(int isa) {
  __builtin_cpu_init();
  switch (isa) {
    case kGeneric: return true;
    // libgcc's probe also checks that the OS saves the wider registers (XCR0), not only CPUID.
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvx512: return __builtin_cpu_supports("avx512f");
    default: return false;
  }
}

int best_isa() {
  if (isa_supported(kAvx512)) return kAvx512;
  if (isa_supported(kAvx2)) return kAvx2;
  return kGeneric;
}

const Kernels* table_for(int isa) {
  switch (isa) {
    case kAvx512: return &kAvx512Kernels;
    case kAvx2: return &kAvx2Kernels;
    default: return &kGenericKernels;
  }
}

int g_isa = -1;  // chosen lazily; gluonface_ops_set_isa may override it (tests force each path)


}  // namespace

const Kernels& kernels() {
  if (g_isa < 0) g_isa = best_isa();
  return *table_for(g_isa);
}

}  // namespace gfops

// ---- C entry points for gluonface/ops/library.py (ctypes) -----------------------------------------------

extern "C" {

// Instruction set in use: 0 generic, 1 AVX2, 2 AVX-512.
int gluonface_ops_isa() {
  gfops::kernels();
  return gfops::g_isa;
}

// 1 when this CPU (and OS) can run the given instruction-set path.
int gluonface_ops_isa_supported(int isa) { return gfops::isa_supported(isa) ? 1 : 0; }

// Force a path (tests run every path the CPU supports); returns 0, or -1 when unsupported here.
int gluonface_ops_set_isa(int isa) {
  if (!gfops::isa_supported(isa)) return -1;
  gfops::g_isa = isa;
  return 0;
}

}  // extern "C"

mxnet::ext::MXReturnValue initialize(int version) {
  // MXNET_VERSION = major * 10000 + minor * 100 + patch; the ABI of lib_api.h is that of 1.9.
  if (version < 10900) {
    MX_ERROR_MSG << "gluonface ops need MXNet >= 1.9.0, this is " << version;
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}
