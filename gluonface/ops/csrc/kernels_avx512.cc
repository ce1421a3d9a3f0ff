// AVX-512F kernels (compiled with -mavx512f; called only when the CPU and the OS support AVX-512F).
// Tails use masked loads and stores, so odd plane sizes take the same arithmetic as full vectors.
#include <immintrin.h>

#include "kernels.h"
#include "planes.h"

namespace gfops {
namespace {

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

void prelu_forward(const float* x, const float* alpha, float* y, int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const __m512 av = _mm512_set1_ps(alpha[ch]);
    const __m512 zero = _mm512_setzero_ps();
    const float* xp = x + p * inner;
    float* yp = y + p * inner;
    for (int64_t i = 0; i < inner; i += 16) {
      const __mmask16 m = tail_mask(inner - i);
      const __m512 v = _mm512_maskz_loadu_ps(m, xp + i);
      const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
      _mm512_mask_storeu_ps(yp + i, m, _mm512_mask_mov_ps(_mm512_mul_ps(v, av), pos, v));
    }
  });
}

void prelu_backward(const float* dy, const float* x, const float* alpha, float* dx, double* plane_sums,
                    int64_t n, int64_t c, int64_t inner) {
  for_each_plane(n, c, inner, [&](int64_t p, int64_t ch) {
    const __m512 av = _mm512_set1_ps(alpha[ch]);
    const __m512 zero = _mm512_setzero_ps();
    const float* xp = x + p * inner;
    const float* gp = dy + p * inner;
    float* dp = dx + p * inner;
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < inner; i += 16) {
      const __mmask16 m = tail_mask(inner - i);
      const __m512 v = _mm512_maskz_loadu_ps(m, xp + i);
      const __m512 g = _mm512_maskz_loadu_ps(m, gp + i);
      const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
      _mm512_mask_storeu_ps(dp + i, m, _mm512_mask_mov_ps(_mm512_mul_ps(g, av), pos, g));
      // min(x, 0) for ordered x (masked-off lanes load 0); products exact in double.
      const __m512 neg = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v);
      const __m256 neg_hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(neg), 1));
      const __m256 g_hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(g), 1));
      acc0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(neg)),
                             _mm512_cvtps_pd(_mm512_castps512_ps256(g)), acc0);
      acc1 = _mm512_fmadd_pd(_mm512_cvtps_pd(neg_hi), _mm512_cvtps_pd(g_hi), acc1);
    }
    plane_sums[p] = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
  });
}

#include "bn_prelu.h"  // NOLINT: compiled here with this file's instruction-set flags

}  // namespace

const Kernels kAvx512Kernels = {"avx512", prelu_forward, prelu_backward, bn_stats,
                                  bn_prelu_forward, bn_prelu_backward_sums, bn_prelu_backward_dx};

}  // namespace gfops
