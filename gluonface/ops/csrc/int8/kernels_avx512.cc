// AVX-512 VNNI path (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; chosen only when the CPU
// and the OS support all four). Dense convolutions take four input channels of up to eight output pixels per
// vpdpbusd against a 16-output-channel weight vector: weights packed [oc / 16][kh][kw][ic / 4][16][4].
#include <immintrin.h>

#include "common.h"

namespace gfi8 {
namespace {

size_t pack_bytes(int oc, int kh, int kw, int ic) {
  return static_cast<size_t>((oc + 15) / 16) * kh * kw * ((ic + 3) / 4) * 64;
}

void pack(const int8_t* w, int oc, int kh, int kw, int ic, void* dst) {
  const int ic4 = (ic + 3) / 4, taps = kh * kw;
  int8_t* d = static_cast<int8_t*>(dst);
  std::memset(d, 0, pack_bytes(oc, kh, kw, ic));
  for (int o = 0; o < oc; ++o)
    for (int t = 0; t < taps; ++t)
      for (int i = 0; i < ic; ++i) {
        const size_t at = ((static_cast<size_t>(o / 16) * taps + t) * ic4 + i / 4) * 64 + (o % 16) * 4 + i % 4;
        d[at] = w[(static_cast<size_t>(o) * taps + t) * ic + i];
      }
}

struct Lanes {   // one 16-channel block's epilogue constants
  __m512i comp;
  __m512 mul, bias, slope;
  __mmask16 mask;
};

// The epilogue of net.h on 16 lanes: the same float32 operations in the same order as epilogue_row.
inline void finish(__m512i acc, const Lanes& l, const Epilogue& ep, const uint8_t* sum_px, uint8_t* out,
                   float* out_f) {
  __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, l.comp)), l.mul);
  r = _mm512_add_ps(r, l.bias);
  if (out_f) {
    _mm512_mask_storeu_ps(out_f, l.mask, r);
    return;
  }
  const __m512 zero = _mm512_setzero_ps();
  if (ep.relu) r = _mm512_max_ps(r, zero);
  if (ep.sum) {
    const __m512i s = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(l.mask, sum_px));
    const __m512 sf = _mm512_cvtepi32_ps(_mm512_sub_epi32(s, _mm512_set1_epi32(ep.z_sum)));
    r = _mm512_add_ps(r, _mm512_mul_ps(sf, _mm512_set1_ps(ep.sum_mul)));
  }
  if (ep.post_relu) r = _mm512_max_ps(r, zero);
  if (ep.slope) r = _mm512_mask_mul_ps(r, _mm512_cmp_ps_mask(r, zero, _CMP_LE_OQ), r, l.slope);
  __m512 v = _mm512_mul_ps(r, _mm512_set1_ps(ep.s_out));
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-512.0f)), _mm512_set1_ps(512.0f));
  __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(ep.z_out));  // nearest even
  q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
  _mm_mask_storeu_epi8(out, l.mask, _mm512_cvtepi32_epi8(q));
}

inline Lanes lanes_for(const ConvCall& c, int c0, int end) {
  Lanes l;
  const int left = end - c0;
  l.mask = left >= 16 ? static_cast<__mmask16>(0xFFFF) : (left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1u));
  l.comp = _mm512_loadu_si512(c.ep.comp + c0);   // the planner pads these arrays to 32
  l.mul = _mm512_loadu_ps(c.ep.mul + c0);
  l.bias = _mm512_loadu_ps(c.ep.bias + c0);
  l.slope = c.ep.slope ? _mm512_loadu_ps(c.ep.slope + c0) : _mm512_setzero_ps();
  return l;
}

template <int NP>
void pixels(const ConvCall& c, const int8_t* wb, int ic4, int oy, int ox0, int b, const Lanes& l) {
  __m512i acc[NP];
  for (int p = 0; p < NP; ++p) acc[p] = _mm512_setzero_si512();
  const int64_t step = static_cast<int64_t>(c.sw) * c.in_cs;
  for (int ky = 0; ky < c.kh; ++ky) {
    const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row + static_cast<int64_t>(ox0 * c.sw - c.pw) * c.in_cs;
    for (int kx = 0; kx < c.kw; ++kx) {
      const uint8_t* px = row + kx * c.in_cs;
      const int8_t* wk = wb + (ky * c.kw + kx) * ic4 * 64;
      for (int i = 0; i < ic4; ++i) {
        const __m512i w = _mm512_loadu_si512(wk + i * 64);
        for (int p = 0; p < NP; ++p)
          acc[p] = _mm512_dpbusd_epi32(acc[p], _mm512_set1_epi32(load32(px + p * step + i * 4)), w);
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    const int ox = ox0 + p;
    finish(acc[p], l, c.ep, c.sum_in ? c.sum_in + oy * c.sum_row + ox * c.sum_cs + b * 16 : nullptr,
           c.out ? c.out + oy * c.out_row + ox * c.out_cs + b * 16 : nullptr,
           c.out_f ? c.out_f + (oy * c.ow + ox) * c.oc + b * 16 : nullptr);
  }
}

// One output pixel (a fully connected layer): four accumulators hide vpdpbusd's latency.
void single(const ConvCall& c, const int8_t* wb, int ic4, int b, const Lanes& l) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int ky = 0; ky < c.kh; ++ky) {
    const uint8_t* row = c.in + (ky - c.ph) * c.in_row;
    for (int kx = 0; kx < c.kw; ++kx) {
      const uint8_t* px = row + (kx - c.pw) * c.in_cs;
      const int8_t* wk = wb + (ky * c.kw + kx) * ic4 * 64;
      int i = 0;
      for (; i + 4 <= ic4; i += 4) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(load32(px + i * 4)), _mm512_loadu_si512(wk + i * 64));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32(load32(px + i * 4 + 4)), _mm512_loadu_si512(wk + i * 64 + 64));
        a2 = _mm512_dpbusd_epi32(a2, _mm512_set1_epi32(load32(px + i * 4 + 8)), _mm512_loadu_si512(wk + i * 64 + 128));
        a3 = _mm512_dpbusd_epi32(a3, _mm512_set1_epi32(load32(px + i * 4 + 12)), _mm512_loadu_si512(wk + i * 64 + 192));
      }
      for (; i < ic4; ++i)
        a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(load32(px + i * 4)), _mm512_loadu_si512(wk + i * 64));
    }
  }
  const __m512i acc = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
  finish(acc, l, c.ep, c.sum_in ? c.sum_in + b * 16 : nullptr, c.out ? c.out + b * 16 : nullptr,
         c.out_f ? c.out_f + b * 16 : nullptr);
}

constexpr int kPixels = 8;

void dense(const ConvCall& c) {
  const int ic4 = (c.ic + 3) / 4, blocks = (c.oc + 15) / 16;
  const size_t wblock = static_cast<size_t>(c.kh) * c.kw * ic4 * 64;
  const int b1 = c.b1 < blocks ? c.b1 : blocks;
  const int8_t* weights = static_cast<const int8_t*>(c.weights);
  if (c.oh == 1 && c.ow == 1 && c.oy0 == 0 && c.oy1 == 1) {
    for (int b = c.b0; b < b1; ++b) single(c, weights + b * wblock, ic4, b, lanes_for(c, b * 16, c.oc));
    return;
  }
  // A group of output pixels against every channel block in turn: their input stays in L1 meanwhile.
  for (int oy = c.oy0; oy < c.oy1; ++oy) {
    for (int ox = 0; ox < c.ow; ox += kPixels) {
      const int n = c.ow - ox < kPixels ? c.ow - ox : kPixels;
      for (int b = c.b0; b < b1; ++b) {
        const Lanes l = lanes_for(c, b * 16, c.oc);
        const int8_t* wb = weights + b * wblock;
        switch (n) {
          case 8: pixels<8>(c, wb, ic4, oy, ox, b, l); break;
          case 7: pixels<7>(c, wb, ic4, oy, ox, b, l); break;
          case 6: pixels<6>(c, wb, ic4, oy, ox, b, l); break;
          case 5: pixels<5>(c, wb, ic4, oy, ox, b, l); break;
          case 4: pixels<4>(c, wb, ic4, oy, ox, b, l); break;
          case 3: pixels<3>(c, wb, ic4, oy, ox, b, l); break;
          case 2: pixels<2>(c, wb, ic4, oy, ox, b, l); break;
          default: pixels<1>(c, wb, ic4, oy, ox, b, l); break;
        }
      }
    }
  }
}

// Depthwise: 32 channels of one pixel per step, multiplied in 16 bits (|uint8 x int8| < 2^15, exact) and summed in
// 32; weights int16 [kh * kw][c32].
void depthwise(const ConvCall& c) {
  const int16_t* w = static_cast<const int16_t*>(c.weights);
  const int c32 = (c.oc + 31) / 32 * 32;
  const int end = c.oc < c.b1 * 16 ? c.oc : c.b1 * 16;
  for (int c0 = c.b0 * 16; c0 < end; c0 += 32) {
    const Lanes lo = lanes_for(c, c0, end), hi = lanes_for(c, c0 + 16, end);
    const __mmask32 m32 = static_cast<__mmask32>(lo.mask) | (static_cast<__mmask32>(hi.mask) << 16);
    for (int oy = c.oy0; oy < c.oy1; ++oy) {
      for (int ox = 0; ox < c.ow; ++ox) {
        __m512i acc_lo = _mm512_setzero_si512(), acc_hi = acc_lo;
        for (int ky = 0; ky < c.kh; ++ky) {
          const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row + c0;
          for (int kx = 0; kx < c.kw; ++kx) {
            const uint8_t* px = row + (ox * c.sw - c.pw + kx) * c.in_cs;
            const int16_t* wk = w + (ky * c.kw + kx) * c32 + c0;
            if (hi.mask) {
              const __m512i x = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m32, px));
              const __m512i p = _mm512_mullo_epi16(x, _mm512_loadu_si512(wk));
              acc_lo = _mm512_add_epi32(acc_lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(p)));
              acc_hi = _mm512_add_epi32(acc_hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p, 1)));
            } else {   // 16 channels or fewer left
              const __m256i x = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(lo.mask, px));
              const __m256i p = _mm256_mullo_epi16(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk)));
              acc_lo = _mm512_add_epi32(acc_lo, _mm512_cvtepi16_epi32(p));
            }
          }
        }
        const int64_t at_sum = oy * c.sum_row + ox * c.sum_cs + c0, at_out = oy * c.out_row + ox * c.out_cs + c0;
        float* out_f = c.out_f ? c.out_f + (oy * c.ow + ox) * c.oc + c0 : nullptr;
        finish(acc_lo, lo, c.ep, c.sum_in ? c.sum_in + at_sum : nullptr, c.out ? c.out + at_out : nullptr, out_f);
        if (hi.mask)
          finish(acc_hi, hi, c.ep, c.sum_in ? c.sum_in + at_sum + 16 : nullptr, c.out ? c.out + at_out + 16 : nullptr,
                 out_f ? out_f + 16 : nullptr);
      }
    }
  }
}

}  // namespace

const Kernels kAvx512VnniKernels = {"avx512_vnni", pack_bytes, pack, dense, depthwise};

}  // namespace gfi8
