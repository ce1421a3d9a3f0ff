// Kernel tables of gluonface's native operators, one table per instruction set.
//
// Every kernel works on float32 NC(spatial) tensors in MXNet's default (row-major) layout: N images, C channels,
// `inner` contiguous elements per (n, c) plane. Each instruction-set file (kernels_generic.cc, kernels_avx2.cc,
// kernels_avx512.cc) is compiled with its own -m flags and exports one table; isa.cc picks the table at run
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
  // each product exact in double and summed in double (see op_prelu.cc for the error bound).
  void (*prelu_backward)(const float* dy, const float* x, const float* alpha, float* dx,
                         double* plane_sums, int64_t n, int64_t c, int64_t inner);

  // BatchNorm + PReLU (see bn_prelu.h). Per-plane double sums of d = x - shift[c] and d * d.
  void (*bn_stats)(const float* x, const float* shift, double* s1, double* s2,
                   int64_t n, int64_t c, int64_t inner);
  // y = prelu(z, alpha[c]) with z = x * scale[c] + bias[c]
  void (*bn_prelu_forward)(const float* x, const float* scale, const float* bias, const float* alpha,
                           float* y, int64_t n, int64_t c, int64_t inner);
  // Per-plane double sums of g, g * (x - mean[c]) and min(z, 0) * dy, where g = z > 0 ? dy : alpha[c] * dy.
  void (*bn_prelu_backward_sums)(const float* dy, const float* x, const float* scale, const float* bias,
                                 const float* alpha, const float* mean, double* sg, double* sgx,
                                 double* sa, int64_t n, int64_t c, int64_t inner);
  // dx = k1[c] * g + k2[c] * (x - mean[c]) + k3[c]
  void (*bn_prelu_backward_dx)(const float* dy, const float* x, const float* scale, const float* bias,
                               const float* alpha, const float* mean, const float* k1, const float* k2,
                               const float* k3, float* dx, int64_t n, int64_t c, int64_t inner);
};

extern const Kernels kGenericKernels;
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;

// Planes of fewer elements than this in total run on one thread: an OpenMP fork costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 15;

}  // namespace gfops

#endif  // GLUONFACE_OPS_KERNELS_H_
