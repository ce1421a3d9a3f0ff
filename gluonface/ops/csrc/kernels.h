// Kernel tables of gluonface's native operators, one table per instruction set.
//
// Every kernel works on float32 NC(spatial) tensors in MXNet's default (row-major) layout: N images, C channels,
// `inner` contiguous elements per (n, c) plane. Each instruction-set file (kernels_generic.cc, kernels_avx2.cc,
// kernels_avx512.cc) is compiled with its own -m flags and exports one table; ops.cc picks the table at run
// time from the CPU's flags, so the library loads and runs on any x86-64 CPU.
#ifndef GLUONFACE_OPS_KERNELS_H_
#define GLUONFACE_OPS_KERNELS_H_

#include <cstdint>

namespace gfops {

struct Kernels {
  const char* name;
  // y = x > 0 ? x : alpha[c] * x
  void (*prelu_forward)(const float* x, const float* alpha, float* y,
                        int64_t n, int64_t c, int64_t inner);
  // dx = x > 0 ? dy : alpha[c] * dy;  plane_sums[n * c + ch] = sum over the plane of min(x, 0) * dy,
  // each product exact in double and summed in double (see ops.cc for the error bound).
  void (*prelu_backward)(const float* dy, const float* x, const float* alpha, float* dx,
                         double* plane_sums, int64_t n, int64_t c, int64_t inner);
};

extern const Kernels kGenericKernels;
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;

// Planes of fewer elements than this in total run on one thread: an OpenMP fork costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 15;

}  // namespace gfops

#endif  // GLUONFACE_OPS_KERNELS_H_
