// BatchNorm + per-channel PReLU kernels, written once and compiled by every instruction-set file with its
// own -m flags (the `omp simd` loops vectorise to SSE2, AVX2 or AVX-512). Included inside an anonymous
// namespace by each kernels_*.cc, so each file keeps its own copy (no ODR merge across instruction sets).
//
// Sums run in double per (n, c) plane: x - shift is exact in double for float x, shift; products of two
// such values carry one double rounding. Element-wise results are float32, as MXNet's BatchNorm.
#ifndef GLUONFACE_OPS_BN_PRELU_H_
#define GLUONFACE_OPS_BN_PRELU_H_

#include <cstdint>

#include "planes.h"

inline void bn_stats(const float* x, const float* shift, double* s1, double* s2,
                     int64_t n, int64_t c, int64_t inner) {
  gfops::for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float* xp = x + p * inner;
    const double k = shift[ch];
    double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < inner; ++i) {
      const double d = static_cast<double>(xp[i]) - k;
      a += d;
      b += d * d;
    }
    s1[p] = a;
    s2[p] = b;
  });
}

inline void bn_prelu_forward(const float* x, const float* scale, const float* bias, const float* alpha,
                             float* y, int64_t n, int64_t c, int64_t inner) {
  gfops::for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float s = scale[ch], b = bias[ch], a = alpha[ch];
    const float* xp = x + p * inner;
    float* yp = y + p * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      const float z = xp[i] * s + b;
      yp[i] = z > 0.f ? z : a * z;
    }
  });
}

inline void bn_prelu_backward_sums(const float* dy, const float* x, const float* scale, const float* bias,
                                   const float* alpha, const float* mean, double* sg, double* sgx,
                                   double* sa, int64_t n, int64_t c, int64_t inner) {
  gfops::for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float s = scale[ch], b = bias[ch], a = alpha[ch];
    const double mu = mean[ch];
    const float* xp = x + p * inner;
    const float* gp = dy + p * inner;
    double t_g = 0.0, t_gx = 0.0, t_a = 0.0;
#pragma omp simd reduction(+ : t_g, t_gx, t_a)
    for (int64_t i = 0; i < inner; ++i) {
      const float z = xp[i] * s + b;
      const float g = z > 0.f ? gp[i] : a * gp[i];
      t_g += g;
      t_gx += static_cast<double>(g) * (static_cast<double>(xp[i]) - mu);
      t_a += z < 0.f ? static_cast<double>(z) * static_cast<double>(gp[i]) : 0.0;
    }
    sg[p] = t_g;
    sgx[p] = t_gx;
    sa[p] = t_a;
  });
}

inline void bn_prelu_backward_dx(const float* dy, const float* x, const float* scale, const float* bias,
                                 const float* alpha, const float* mean, const float* k1, const float* k2,
                                 const float* k3, float* dx, int64_t n, int64_t c, int64_t inner) {
  gfops::for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float s = scale[ch], b = bias[ch], a = alpha[ch], mu = mean[ch];
    const float c1 = k1[ch], c2 = k2[ch], c3 = k3[ch];
    const float* xp = x + p * inner;
    const float* gp = dy + p * inner;
    float* dp = dx + p * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      const float z = xp[i] * s + b;
      const float g = z > 0.f ? gp[i] : a * gp[i];
      dp[i] = c1 * g + c2 * (xp[i] - mu) + c3;
    }
  });
}

#endif  // GLUONFACE_OPS_BN_PRELU_H_
