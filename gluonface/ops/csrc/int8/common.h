// Code every instruction-set file of the INT8 runner compiles with its own -m flags: the scalar epilogue
// (the reference sequence of net.h), the depthwise kernel and the portable dense kernel. The compiler
// vectorises the loops over channels for each instruction set; -ffp-contract=off keeps every path's float32
// arithmetic the same (no fused multiply-adds), so all paths give the same bytes.
#ifndef GLUONFACE_INT8_COMMON_H_
#define GLUONFACE_INT8_COMMON_H_

#include <cstring>

#include "net.h"

namespace gfi8 {
namespace {

// The epilogue constants from output channel o0 on.
inline Epilogue shifted(Epilogue ep, int o0) {
  ep.comp += o0;
  ep.mul += o0;
  ep.bias += o0;
  if (ep.slope) ep.slope += o0;
  return ep;
}

constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: (v + m) - m rounds |v| < 2^22 half to even

inline float round_clamped(float v) {
  v = v < -512.0f ? -512.0f : (v > 512.0f ? 512.0f : v);
  return (v + kRoundMagic) - kRoundMagic;
}

// Four input channels of one pixel as one int32 (unaligned); dense kernels broadcast it.
inline int32_t load32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline int clamp_u8(int q) { return q < 0 ? 0 : (q > 255 ? 255 : q); }

// The epilogue of net.h on `n` channels of one pixel: acc[0..n) -> out (uint8) or out_f (float).
template <bool kRelu, bool kSum, bool kPost, bool kPrelu>
inline void epilogue_row(const int32_t* acc, int n, const Epilogue& ep, const uint8_t* sum_px, uint8_t* out,
                         float* out_f) {
  if (out_f) {
    for (int o = 0; o < n; ++o) {
      float r = static_cast<float>(acc[o] - ep.comp[o]) * ep.mul[o];
      out_f[o] = r + ep.bias[o];
    }
    return;
  }
  for (int o = 0; o < n; ++o) {
    float r = static_cast<float>(acc[o] - ep.comp[o]) * ep.mul[o];
    r = r + ep.bias[o];
    if (kRelu) r = r > 0.0f ? r : 0.0f;
    if (kSum) r = r + static_cast<float>(static_cast<int>(sum_px[o]) - ep.z_sum) * ep.sum_mul;
    if (kPost) r = r > 0.0f ? r : 0.0f;
    if (kPrelu) r = r > 0.0f ? r : r * ep.slope[o];
    const float v = round_clamped(r * ep.s_out);
    out[o] = static_cast<uint8_t>(clamp_u8(static_cast<int>(v) + ep.z_out));
  }
}

inline void epilogue(const int32_t* acc, int n, const Epilogue& ep, const uint8_t* sum_px, uint8_t* out,
                     float* out_f) {
  const int k = (ep.relu ? 1 : 0) | (ep.sum ? 2 : 0) | (ep.post_relu ? 4 : 0) | (ep.slope ? 8 : 0);
  switch (k) {
#define GFI8_CASE(K)                                                                                     \
  case K:                                                                                                \
    epilogue_row<(K & 1) != 0, (K & 2) != 0, (K & 4) != 0, (K & 8) != 0>(acc, n, ep, sum_px, out, out_f); \
    break;
    GFI8_CASE(0) GFI8_CASE(1) GFI8_CASE(2) GFI8_CASE(3) GFI8_CASE(4) GFI8_CASE(5) GFI8_CASE(6) GFI8_CASE(7)
    GFI8_CASE(8) GFI8_CASE(9) GFI8_CASE(10) GFI8_CASE(11) GFI8_CASE(12) GFI8_CASE(13) GFI8_CASE(14)
    default: GFI8_CASE(15)
#undef GFI8_CASE
  }
}

// The epilogue of n channels from o0 of output pixel (oy, ox); ep already shifted to o0.
inline void finish_pixel(const ConvCall& c, const Epilogue& ep, const int32_t* acc, int n, int oy, int ox, int o0) {
  const uint8_t* sum_px = c.sum_in ? c.sum_in + oy * c.sum_row + ox * c.sum_cs + o0 : nullptr;
  uint8_t* out = c.out ? c.out + oy * c.out_row + ox * c.out_cs + o0 : nullptr;
  float* out_f = c.out_f ? c.out_f + (oy * c.ow + ox) * c.oc + o0 : nullptr;
  epilogue(acc, n, ep, sum_px, out, out_f);
}

// Depthwise convolution, one image: channels are contiguous in both tensors, so the loops over channels
// vectorise. Weights: int16 [kh * kw][c32] with c32 = channels rounded up to 32.
inline void depthwise_impl(const ConvCall& c) {
  alignas(64) int32_t acc[kMaxChannels];
  const int16_t* w = static_cast<const int16_t*>(c.weights);
  const int c32 = (c.oc + 31) / 32 * 32;
  const int o0 = c.b0 * 16, o1 = c.b1 * 16 < c.oc ? c.b1 * 16 : c.oc;
  const Epilogue ep = shifted(c.ep, o0);
  for (int oy = c.oy0; oy < c.oy1; ++oy) {
    for (int ox = 0; ox < c.ow; ++ox) {
      for (int o = o0; o < o1; ++o) acc[o] = 0;
      for (int ky = 0; ky < c.kh; ++ky) {
        const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row;
        for (int kx = 0; kx < c.kw; ++kx) {
          const uint8_t* px = row + (ox * c.sw - c.pw + kx) * c.in_cs;
          const int16_t* wk = w + (ky * c.kw + kx) * c32;
          for (int o = o0; o < o1; ++o) acc[o] += static_cast<int32_t>(wk[o]) * static_cast<int32_t>(px[o]);
        }
      }
      finish_pixel(c, ep, acc + o0, o1 - o0, oy, ox, o0);
    }
  }
}

// Portable dense convolution on the natural weight layout [oc][kh][kw][ic4 * 4] (the reference path).
inline size_t natural_pack_bytes(int oc, int kh, int kw, int ic) {
  return static_cast<size_t>(oc) * kh * kw * ((ic + 3) / 4 * 4);
}

inline void natural_pack(const int8_t* w, int oc, int kh, int kw, int ic, void* dst) {
  const int icp = (ic + 3) / 4 * 4;
  int8_t* d = static_cast<int8_t*>(dst);
  std::memset(d, 0, natural_pack_bytes(oc, kh, kw, ic));
  for (int o = 0; o < oc; ++o)
    for (int t = 0; t < kh * kw; ++t)
      for (int i = 0; i < ic; ++i) d[(static_cast<size_t>(o) * kh * kw + t) * icp + i] = w[(o * kh * kw + t) * ic + i];
}

inline void natural_dense(const ConvCall& c) {
  alignas(64) int32_t acc[kMaxChannels];
  const int8_t* w = static_cast<const int8_t*>(c.weights);
  const int icp = (c.ic + 3) / 4 * 4;
  const size_t per_o = static_cast<size_t>(c.kh) * c.kw * icp;
  const int o0 = c.b0 * 16, o1 = c.b1 * 16 < c.oc ? c.b1 * 16 : c.oc;
  const Epilogue ep = shifted(c.ep, o0);
  for (int oy = c.oy0; oy < c.oy1; ++oy) {
    for (int ox = 0; ox < c.ow; ++ox) {
      for (int o = o0; o < o1; ++o) {
        int32_t a = 0;
        const int8_t* wo = w + o * per_o;
        for (int ky = 0; ky < c.kh; ++ky) {
          const uint8_t* row = c.in + (oy * c.sh - c.ph + ky) * c.in_row;
          for (int kx = 0; kx < c.kw; ++kx) {
            const uint8_t* px = row + (ox * c.sw - c.pw + kx) * c.in_cs;
            const int8_t* wk = wo + (ky * c.kw + kx) * icp;
            for (int i = 0; i < icp; ++i) a += static_cast<int32_t>(wk[i]) * static_cast<int32_t>(px[i]);
          }
        }
        acc[o] = a;
      }
      finish_pixel(c, ep, acc + o0, o1 - o0, oy, ox, o0);
    }
  }
}

}  // namespace
}  // namespace gfi8

#endif  // GLUONFACE_INT8_COMMON_H_
