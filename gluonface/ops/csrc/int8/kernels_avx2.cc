// AVX2 path (compiled with -mavx2 -mfma; for CPUs without AVX-512 VNNI). AVX2 has no exact uint8 x int8 dot
// product (vpmaddubsw saturates at 16 bits), so each group of four input channels is split into even and odd
// bytes, zero-extended to 16 bits, and multiplied with vpmaddwd against int16 weights: exact, like VNNI.
// Weights packed [oc / 16][kh][kw][ic / 4][2 halves][even, odd][8 oc][2] int16.
#include <immintrin.h>

#include "common.h"

namespace gfi8 {
namespace {

size_t pack_bytes(int oc, int kh, int kw, int ic) {
  return static_cast<size_t>((oc + 15) / 16) * kh * kw * ((ic + 3) / 4) * 64 * sizeof(int16_t);
}

void pack(const int8_t* w, int oc, int kh, int kw, int ic, void* dst) {
  const int ic4 = (ic + 3) / 4, taps = kh * kw;
  int16_t* d = static_cast<int16_t*>(dst);
  std::memset(d, 0, pack_bytes(oc, kh, kw, ic));
  for (int o = 0; o < oc; ++o)
    for (int t = 0; t < taps; ++t)
      for (int i = 0; i < ic; ++i) {
        const int half = (o % 16) / 8, lane = o % 8, odd = i % 2, pair = (i % 4) / 2;
        const size_t at = ((static_cast<size_t>(o / 16) * taps + t) * ic4 + i / 4) * 64 + half * 32 + odd * 16 +
                          lane * 2 + pair;
        d[at] = w[(static_cast<size_t>(o) * taps + t) * ic + i];
      }
}

struct Half {   // one 8-channel half block's epilogue constants
  __m256i comp;
  __m256 mul, bias, slope;
  int valid;    // channels of the 8 that exist
};

// The epilogue of net.h on 8 lanes (the same float32 operations as epilogue_row); partial halves go through
// epilogue_row itself.
inline void finish(__m256i acc, const Half& h, const Epilogue& ep, int c0, const uint8_t* sum_px, uint8_t* out,
                   float* out_f) {
  if (h.valid < 8) {
    alignas(32) int32_t a[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(a), acc);
    epilogue(a, h.valid, shifted(ep, c0), sum_px, out, out_f);
    return;
  }
  __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, h.comp)), h.mul);
  r = _mm256_add_ps(r, h.bias);
  if (out_f) {
    _mm256_storeu_ps(out_f, r);
    return;
  }
  const __m256 zero = _mm256_setzero_ps();
  if (ep.relu) r = _mm256_max_ps(r, zero);
  if (ep.sum) {
    const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sum_px)));
    const __m256 sf = _mm256_cvtepi32_ps(_mm256_sub_epi32(s, _mm256_set1_epi32(ep.z_sum)));
    r = _mm256_add_ps(r, _mm256_mul_ps(sf, _mm256_set1_ps(ep.sum_mul)));
  }
  if (ep.post_relu) r = _mm256_max_ps(r, zero);
  if (ep.slope) r = _mm256_blendv_ps(r, _mm256_mul_ps(r, h.slope), _mm256_cmp_ps(r, zero, _CMP_LE_OQ));
  __m256 v = _mm256_mul_ps(r, _mm256_set1_ps(ep.s_out));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-512.0f)), _mm256_set1_ps(512.0f));
  __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(ep.z_out));  // nearest even
  q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), _mm256_set1_epi32(255));
  const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(w16, w16));
}

template <int NP>
void pixels(const ConvCall& c, const int16_t* wb, int ic4, int oy, int ox0, int b, const Half* h) {
  __m256i acc[NP][2];
  for (int p = 0; p < NP; ++p) acc[p][0] = acc[p][1] = _mm256_setzero_si256();
  const __m256i low = _mm256_set1_epi16(0x00FF);
  const int64_t step = static_cast<int64_t>(c.sw) * c.in_cs;
  for (int ky = 0; ky < c.kh; ++ky) {
    const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row + static_cast<int64_t>(ox0 * c.sw - c.pw) * c.in_cs;
    for (int kx = 0; kx < c.kw; ++kx) {
      const uint8_t* px = row + kx * c.in_cs;
      const int16_t* wk = wb + (ky * c.kw + kx) * ic4 * 64;
      for (int i = 0; i < ic4; ++i) {
        const __m256i* wv = reinterpret_cast<const __m256i*>(wk + i * 64);
        const __m256i w0e = _mm256_loadu_si256(wv), w0o = _mm256_loadu_si256(wv + 1);
        const __m256i w1e = _mm256_loadu_si256(wv + 2), w1o = _mm256_loadu_si256(wv + 3);
        for (int p = 0; p < NP; ++p) {
          const __m256i x = _mm256_set1_epi32(load32(px + p * step + i * 4));
          const __m256i xe = _mm256_and_si256(x, low), xo = _mm256_srli_epi16(x, 8);
          const __m256i s0 = _mm256_add_epi32(_mm256_madd_epi16(xe, w0e), _mm256_madd_epi16(xo, w0o));
          const __m256i s1 = _mm256_add_epi32(_mm256_madd_epi16(xe, w1e), _mm256_madd_epi16(xo, w1o));
          acc[p][0] = _mm256_add_epi32(acc[p][0], s0);
          acc[p][1] = _mm256_add_epi32(acc[p][1], s1);
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    const int ox = ox0 + p;
    for (int k = 0; k < 2; ++k) {
      if (h[k].valid <= 0) continue;
      const int c0 = b * 16 + k * 8;
      finish(acc[p][k], h[k], c.ep, c0, c.sum_in ? c.sum_in + oy * c.sum_row + ox * c.sum_cs + c0 : nullptr,
             c.out ? c.out + oy * c.out_row + ox * c.out_cs + c0 : nullptr,
             c.out_f ? c.out_f + (oy * c.ow + ox) * c.oc + c0 : nullptr);
    }
  }
}

constexpr int kPixels = 4;

void dense(const ConvCall& c) {
  const int ic4 = (c.ic + 3) / 4, blocks = (c.oc + 15) / 16;
  const size_t wblock = static_cast<size_t>(c.kh) * c.kw * ic4 * 64;
  for (int b = c.b0; b < c.b1 && b < blocks; ++b) {
    Half h[2];
    for (int k = 0; k < 2; ++k) {
      const int c0 = b * 16 + k * 8;
      h[k].valid = c.oc - c0 < 8 ? c.oc - c0 : 8;
      h[k].comp = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.ep.comp + c0));  // padded to 16
      h[k].mul = _mm256_loadu_ps(c.ep.mul + c0);
      h[k].bias = _mm256_loadu_ps(c.ep.bias + c0);
      h[k].slope = c.ep.slope ? _mm256_loadu_ps(c.ep.slope + c0) : _mm256_setzero_ps();
    }
    const int16_t* wb = static_cast<const int16_t*>(c.weights) + b * wblock;
    for (int oy = c.oy0; oy < c.oy1; ++oy) {
      int ox = 0;
      for (; ox + kPixels <= c.ow; ox += kPixels) pixels<kPixels>(c, wb, ic4, oy, ox, b, h);
      switch (c.ow - ox) {
        case 3: pixels<3>(c, wb, ic4, oy, ox, b, h); break;
        case 2: pixels<2>(c, wb, ic4, oy, ox, b, h); break;
        case 1: pixels<1>(c, wb, ic4, oy, ox, b, h); break;
        default: break;
      }
    }
  }
}

// Depthwise: 8 channels of one pixel per vector, weights int16 [kh * kw][c32]. Loads of a last partial
// half read past the channels, inside the buffer (rows are contiguous and every buffer has slack).
void depthwise(const ConvCall& c) {
  const int16_t* w = static_cast<const int16_t*>(c.weights);
  const int c32 = (c.oc + 31) / 32 * 32;
  for (int c0 = c.b0 * 16; c0 < c.oc && c0 < c.b1 * 16; c0 += 8) {
    Half h;
    h.valid = c.oc - c0 < 8 ? c.oc - c0 : 8;
    h.comp = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c.ep.comp + c0));
    h.mul = _mm256_loadu_ps(c.ep.mul + c0);
    h.bias = _mm256_loadu_ps(c.ep.bias + c0);
    h.slope = c.ep.slope ? _mm256_loadu_ps(c.ep.slope + c0) : _mm256_setzero_ps();
    for (int oy = c.oy0; oy < c.oy1; ++oy) {
      for (int ox = 0; ox < c.ow; ++ox) {
        __m256i acc = _mm256_setzero_si256();
        for (int ky = 0; ky < c.kh; ++ky) {
          const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row + c0;
          for (int kx = 0; kx < c.kw; ++kx) {
            const __m256i x = _mm256_cvtepu8_epi32(
                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + (ox * c.sw - c.pw + kx) * c.in_cs)));
            const __m128i w16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (ky * c.kw + kx) * c32 + c0));
            const __m256i wv = _mm256_cvtepi16_epi32(w16);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, wv));
          }
        }
        finish(acc, h, c.ep, c0, c.sum_in ? c.sum_in + oy * c.sum_row + ox * c.sum_cs + c0 : nullptr,
               c.out ? c.out + oy * c.out_row + ox * c.out_cs + c0 : nullptr,
               c.out_f ? c.out_f + (oy * c.ow + ox) * c.oc + c0 : nullptr);
      }
    }
  }
}

}  // namespace

const Kernels kAvx2Kernels = {"avx2", pack_bytes, pack, dense, depthwise};

}  // namespace gfi8
