// gluonface's INT8 network runner: a whole quantised embedding network in one native call.
//
// Why it exists: at batch 1 MXNet 1.9.1 spends a fixed ~5 us on every operator call (executor bookkeeping,
// an OpMap copy per call, oneDNN memory objects, an OpenMP fork), the same in float32 and INT8, so a small
// network's INT8 graph could not get far ahead of float32 however fast its kernels were
// (bench/results/export.md). Here a network is a list of layers over uint8 tensors run back to back.
//
// Tensors. Every activation is uint8, NHWC, one image at a time, with a border of `pad` pixels filled with
// the zero point z (so convolution padding needs no bounds checks) and a channel stride cs = C rounded up
// to 4 (dense kernels read input channels four at a time; weights of the rounding channels are zero, so
// whatever those bytes hold contributes nothing). Real value = (q - z) / scale, z = 0 for tensors that are
// never negative (calibrated min >= 0) and 128 otherwise.
//
// Layers. A dense convolution (groups 1; a fully connected layer is one, its kernel the whole input) or a
// depthwise one, each with the same fused epilogue, in float32 and in this order (requant1 in kernels.h):
//   r = float(acc - comp[o]) * mul[o] + bias[o]      acc = sum of int8 weights * uint8 inputs (int32, exact)
//   r = max(r, 0)                                    with relu
//   r = r + float(q_sum - z_sum) * sum_mul           with a residual sum
//   r = max(r, 0)                                    with a relu after the sum
//   r = r > 0 ? r : r * slope[o]                     with a PReLU (fused by the planner, see int8net.py)
//   q = clamp(round_half_even(r * s_out) + z_out, 0, 255), or the float r itself for the network output.
// comp[o] = z_in * sum of weights of o removes the input zero point. Every instruction-set path runs this
// same float32 sequence without fused multiply-adds, so all paths give the same bytes.
#ifndef GLUONFACE_INT8_NET_H_
#define GLUONFACE_INT8_NET_H_

#include <cstddef>
#include <cstdint>

namespace gfi8 {

constexpr int kMaxChannels = 4096;   // widest layer (kernels keep one pixel's accumulators on the stack)

struct Epilogue {
  const int32_t* comp;   // per output channel, padded to a multiple of 32
  const float* mul;
  const float* bias;
  int relu, sum, post_relu;
  const float* slope;    // per-channel PReLU slope applied last (null: none), padded like comp
  float sum_mul;
  int z_sum;
  float s_out;
  int z_out;
};

// One layer's call on one image. Pointers address pixel (0, 0) of a tensor's interior; rows are `*_row`
// bytes apart, pixels `*_cs` bytes apart, channels 1 byte apart.
struct ConvCall {
  const uint8_t* in;
  int64_t in_row;
  int in_cs;
  int ic;                // input channels (dense) / channels (depthwise)
  int kh, kw, sh, sw, ph, pw;
  int oc, oh, ow;
  const void* weights;   // dense: this path's packed layout; depthwise: int16 [kh * kw][oc padded to 32]
  Epilogue ep;
  const uint8_t* sum_in;  // residual operand, the output's shape
  int64_t sum_row;
  int sum_cs;
  uint8_t* out;           // uint8 output, or
  int64_t out_row;
  int out_cs;
  float* out_f;           // float output (the network's last layer), oc values
  int oy0, oy1;           // output rows to compute, and
  int b0, b1;             // blocks of 16 output channels to compute (threads share an image's layer this way)
};

struct Kernels {
  const char* name;
  // Bytes of packed dense weights for [oc][kh][kw][ic] int8 (ic rounded up to 4 with zero weights).
  size_t (*dense_pack_bytes)(int oc, int kh, int kw, int ic);
  void (*dense_pack)(const int8_t* w, int oc, int kh, int kw, int ic, void* dst);
  void (*dense)(const ConvCall& c);
  void (*depthwise)(const ConvCall& c);
};

extern const Kernels kGenericKernels;
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512VnniKernels;

}  // namespace gfi8

#endif  // GLUONFACE_INT8_NET_H_
