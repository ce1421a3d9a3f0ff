// Portable kernels (x86-64 baseline, no -m flags): the reference path and the fallback on old CPUs.
#include "kernels.h"
#include "planes.h"

namespace gfops {
namespace {

void prelu_forward(const float* x, const float* alpha, float* y, int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float a = alpha[ch];
    const float* xp = x + p * inner;
    float* yp = y + p * inner;
    for (int64_t i = 0; i < inner; ++i) yp[i] = xp[i] > 0.f ? xp[i] : a * xp[i];
  });
}

void prelu_backward(const float* dy, const float* x, const float* alpha, float* dx, double* plane_sums,
                    int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float a = alpha[ch];
    const float* xp = x + p * inner;
    const float* gp = dy + p * inner;
    float* dp = dx + p * inner;
    double acc = 0.0;
    for (int64_t i = 0; i < inner; ++i) {
      const bool pos = xp[i] > 0.f;
      dp[i] = pos ? gp[i] : a * gp[i];
      if (xp[i] < 0.f) acc += static_cast<double>(xp[i]) * static_cast<double>(gp[i]);
    }
    plane_sums[p] = acc;
  });
}

#include "bn_prelu.h"  // NOLINT: compiled here with this file's instruction-set flags

}  // namespace

const Kernels kGenericKernels = {"generic", prelu_forward, prelu_backward, bn_stats,
                                  bn_prelu_forward, bn_prelu_backward_sums, bn_prelu_backward_dx};

}  // namespace gfops
