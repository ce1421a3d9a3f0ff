// AVX2 + FMA kernels (compiled with -mavx2 -mfma; called only when the CPU reports both).
#include <immintrin.h>

#include "kernels.h"
#include "planes.h"

namespace gfops {
namespace {

void prelu_forward(const float* x, const float* alpha, float* y, int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float a = alpha[ch];
    const __m256 av = _mm256_set1_ps(a);
    const __m256 zero = _mm256_setzero_ps();
    const float* xp = x + p * inner;
    float* yp = y + p * inner;
    int64_t i = 0;
    for (; i + 8 <= inner; i += 8) {
      const __m256 v = _mm256_loadu_ps(xp + i);
      const __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
      _mm256_storeu_ps(yp + i, _mm256_blendv_ps(_mm256_mul_ps(v, av), v, pos));
    }
    for (; i < inner; ++i) yp[i] = xp[i] > 0.f ? xp[i] : a * xp[i];
  });
}

void prelu_backward(const float* dy, const float* x, const float* alpha, float* dx, double* plane_sums,
                    int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const float a = alpha[ch];
    const __m256 av = _mm256_set1_ps(a);
    const __m256 zero = _mm256_setzero_ps();
    const float* xp = x + p * inner;
    const float* gp = dy + p * inner;
    float* dp = dx + p * inner;
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= inner; i += 8) {
      const __m256 v = _mm256_loadu_ps(xp + i);
      const __m256 g = _mm256_loadu_ps(gp + i);
      const __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
      _mm256_storeu_ps(dp + i, _mm256_blendv_ps(_mm256_mul_ps(g, av), g, pos));
      // min(x, 0) for ordered x; the float products are exact in double (24 + 24 < 53 bits).
      const __m256 neg = _mm256_and_ps(v, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
      acc0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(neg)),
                             _mm256_cvtps_pd(_mm256_castps256_ps128(g)), acc0);
      acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(neg, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1)), acc1);
    }
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, _mm256_add_pd(acc0, acc1));
    double acc = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < inner; ++i) {
      dp[i] = xp[i] > 0.f ? gp[i] : a * gp[i];
      if (xp[i] < 0.f) acc += static_cast<double>(xp[i]) * static_cast<double>(gp[i]);
    }
    plane_sums[p] = acc;
  });
}

#include "bn_prelu.h"  // NOLINT: compiled here with this file's instruction-set flags

}  // namespace

const Kernels kAvx2Kernels = {"avx2", prelu_forward, prelu_backward, bn_stats,
                                  bn_prelu_forward, bn_prelu_backward_sums, bn_prelu_backward_dx};

}  // namespace gfops
