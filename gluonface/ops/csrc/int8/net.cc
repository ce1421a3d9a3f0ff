// The INT8 runner's network: tensors, layers, buffer planning, the per-image loop, instruction-set dispatch
// and the C entry points gluonface/ops/int8net.py calls through ctypes. See net.h for the arithmetic.
#include "net.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace gfi8 {
namespace {

enum Isa { kGeneric = 0, kAvx2 = 1, kAvx512Vnni = 2 };

bool isa_supported(int isa) {
  __builtin_cpu_init();
  switch (isa) {
    case kGeneric: return true;
    // libgcc's probe also checks that the OS saves the wider registers (XCR0), not only CPUID.
    case kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return false;
  }
}

int best_isa() {
  if (isa_supported(kAvx512Vnni)) return kAvx512Vnni;
  if (isa_supported(kAvx2)) return kAvx2;
  return kGeneric;
}

const Kernels& table(int isa) {
  switch (isa) {
    case kAvx512Vnni: return kAvx512VnniKernels;
    case kAvx2: return kAvx2Kernels;
    default: return kGenericKernels;
  }
}

int g_isa = -1;  // chosen at the first call; gfi8_set_isa overrides it (tests run every path)

int current_isa() {
  if (g_isa < 0) g_isa = best_isa();
  return g_isa;
}

constexpr int kSlack = 64;  // bytes after every buffer: dense kernels read 4 channels past a 3-channel pixel

struct TensorDesc {
  int c, h, w, z;
  int cs = 0, pad = 0;
  int slot = -1;
  int last_use = -1;
  int64_t row() const { return static_cast<int64_t>(w + 2 * pad) * cs; }
  size_t bytes() const { return static_cast<size_t>(h + 2 * pad) * row() + kSlack; }
  size_t interior() const { return static_cast<size_t>(pad) * row() + static_cast<size_t>(pad) * cs; }
};

struct Layer {
  int depthwise;
  int in, out, sum;   // tensor ids; out = -1 for the float output, sum = -1 without a residual
  int kh, kw, sh, sw, ph, pw, oc, ic;
  std::vector<int8_t> weights;      // natural [oc][kh][kw][ic] (dense) or [c][kh][kw] (depthwise)
  std::vector<char> packed;          // this path's layout (dense), or int16 [taps][c32] (depthwise)
  std::vector<int32_t> comp;
  std::vector<float> mul, bias, slope;
  Epilogue ep;
};

struct Net {
  int in_c, in_h, in_w;
  std::vector<TensorDesc> tensors;
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<size_t> slot_bytes;
  int out_dim = 0;
  int out_h = 0, out_w = 0;
  int packed_isa = -1;
  bool final = false;
  std::vector<uint8_t> lut;   // input pixel -> quantised input value (empty: the pixel itself)
  std::vector<std::vector<uint8_t>> arenas;  // one per thread
  std::mutex busy;   // ctypes releases the GIL: two Python threads may call one network at once
};

void pack_layer(Layer& l, int isa) {
  if (l.depthwise) {
    const int c32 = (l.oc + 31) / 32 * 32, taps = l.kh * l.kw;
    l.packed.assign(static_cast<size_t>(taps) * c32 * sizeof(int16_t), 0);
    int16_t* d = reinterpret_cast<int16_t*>(l.packed.data());
    for (int c = 0; c < l.oc; ++c)
      for (int t = 0; t < taps; ++t) d[t * c32 + c] = l.weights[c * taps + t];
    return;
  }
  const Kernels& k = table(isa);
  l.packed.assign(k.dense_pack_bytes(l.oc, l.kh, l.kw, l.ic), 0);
  k.dense_pack(l.weights.data(), l.oc, l.kh, l.kw, l.ic, l.packed.data());
}

void fill_border(const TensorDesc& t, uint8_t* base) {
  if (t.pad == 0) return;
  const int64_t row = t.row();
  const size_t band = static_cast<size_t>(t.pad) * row;
  std::memset(base, t.z, band);
  std::memset(base + static_cast<size_t>(t.pad + t.h) * row, t.z, band);
  for (int y = 0; y < t.h; ++y) {
    uint8_t* r = base + static_cast<size_t>(t.pad + y) * row;
    std::memset(r, t.z, static_cast<size_t>(t.pad) * t.cs);
    std::memset(r + static_cast<size_t>(t.pad + t.w) * t.cs, t.z, static_cast<size_t>(t.pad) * t.cs);
  }
}

void finish_layers(const Net& net, const Kernels& k, std::vector<uint8_t>& arena, const std::vector<size_t>& offsets,
                   float* out, int t, int nt, double* us = nullptr);

// The share of thread t of nt in one layer: bands of output rows, else blocks of 16 output channels (a layer
// of few rows: the fully connected one), else thread 0 alone.
void share(ConvCall& c, int oh, int blocks, int t, int nt) {
  c.oy0 = 0; c.oy1 = oh; c.b0 = 0; c.b1 = blocks;
  if (nt == 1) return;
  if (oh >= 2 * nt) {
    c.oy0 = oh * t / nt;
    c.oy1 = oh * (t + 1) / nt;
  } else if (blocks >= nt) {
    c.b0 = blocks * t / nt;
    c.b1 = blocks * (t + 1) / nt;
  } else if (t > 0) {
    c.oy1 = 0;
  }
}

// One image: x in NCHW (layout 0) or NHWC (layout 1) uint8, out_dim floats to `out`. Thread t of nt (inside
// a parallel region when nt > 1) does its share of every layer, then waits for the others.
void run_image(const Net& net, const Kernels& k, std::vector<uint8_t>& arena, const std::vector<size_t>& offsets,
               const uint8_t* x, int layout, float* out, int t, int nt, double* us = nullptr) {
  auto base = [&](int t) { return arena.data() + offsets[net.tensors[t].slot]; };
  const TensorDesc& in = net.tensors[0];
  uint8_t* ib = base(0);
  if (t == 0) fill_border(in, ib);
  const int y0 = in.h * t / nt, y1 = in.h * (t + 1) / nt;
  uint8_t* interior = ib + in.interior();
  const int64_t row = in.row();
  const uint8_t* lut = net.lut.empty() ? nullptr : net.lut.data();
  if (layout == 1) {
    const size_t n = static_cast<size_t>(in.w) * in.c;
    for (int y = y0; y < y1; ++y) {
      const uint8_t* src = x + static_cast<size_t>(y) * n;
      uint8_t* dst = interior + y * row;
      if (lut) {
        for (size_t i = 0; i < n; ++i) dst[i] = lut[src[i]];
      } else {
        std::memcpy(dst, src, n);
      }
    }
  } else {
    const size_t plane = static_cast<size_t>(in.h) * in.w;
    if (in.c == 3) {   // RGB: three fixed streams the compiler keeps in registers
      const uint8_t *r0 = x, *g0 = x + plane, *b0 = x + 2 * plane;
      for (int y = y0; y < y1; ++y) {
        uint8_t* r = interior + y * row;
        const size_t at = static_cast<size_t>(y) * in.w;
        if (lut) {
          for (int xx = 0; xx < in.w; ++xx) {
            r[3 * xx] = lut[r0[at + xx]];
            r[3 * xx + 1] = lut[g0[at + xx]];
            r[3 * xx + 2] = lut[b0[at + xx]];
          }
        } else {
          for (int xx = 0; xx < in.w; ++xx) {
            r[3 * xx] = r0[at + xx];
            r[3 * xx + 1] = g0[at + xx];
            r[3 * xx + 2] = b0[at + xx];
          }
        }
      }
      return finish_layers(net, k, arena, offsets, out, t, nt, us);
    }
    for (int y = y0; y < y1; ++y) {
      uint8_t* r = interior + y * row;
      for (int xx = 0; xx < in.w; ++xx)
        for (int c = 0; c < in.c; ++c) {
          const uint8_t v = x[c * plane + static_cast<size_t>(y) * in.w + xx];
          r[xx * in.cs + c] = lut ? lut[v] : v;
        }
    }
  }
  finish_layers(net, k, arena, offsets, out, t, nt, us);
}

// The layers of one image whose input tensor is in place.
void finish_layers(const Net& net, const Kernels& k, std::vector<uint8_t>& arena, const std::vector<size_t>& offsets,
                   float* out, int t, int nt, double* us) {
  using Clock = std::chrono::steady_clock;
  if (nt > 1) {
#pragma omp barrier
  }
  auto base = [&](int t) { return arena.data() + offsets[net.tensors[t].slot]; };
  for (size_t li = 0; li < net.layers.size(); ++li) {
    const Layer& l = *net.layers[li];
    const auto start = us ? Clock::now() : Clock::time_point();
    const TensorDesc& ti = net.tensors[l.in];
    ConvCall c;
    c.in = base(l.in) + ti.interior();
    c.in_row = ti.row();
    c.in_cs = ti.cs;
    c.ic = l.ic;
    c.kh = l.kh; c.kw = l.kw; c.sh = l.sh; c.sw = l.sw; c.ph = l.ph; c.pw = l.pw;
    c.oc = l.oc;
    c.weights = l.packed.data();
    c.ep = l.ep;
    c.sum_in = nullptr; c.sum_row = 0; c.sum_cs = 0;
    if (l.sum >= 0) {
      const TensorDesc& ts = net.tensors[l.sum];
      c.sum_in = base(l.sum) + ts.interior();
      c.sum_row = ts.row();
      c.sum_cs = ts.cs;
    }
    c.out = nullptr; c.out_row = 0; c.out_cs = 0; c.out_f = nullptr;
    if (l.out >= 0) {
      const TensorDesc& to = net.tensors[l.out];
      uint8_t* ob = base(l.out);
      c.out = ob + to.interior();
      c.out_row = to.row();
      c.out_cs = to.cs;
      c.oh = to.h; c.ow = to.w;
      if (t == 0) fill_border(to, ob);
    } else {
      c.out_f = out;
      c.oh = net.out_h; c.ow = net.out_w;
    }
    share(c, c.oh, (l.oc + 15) / 16, t, nt);
    if (l.depthwise) k.depthwise(c); else k.dense(c);
    if (us) us[li] += std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    if (nt > 1) {
#pragma omp barrier
    }
  }
}

// Byte offsets of the buffer slots in one thread's arena; *total = the arena's size.
std::vector<size_t> slot_offsets(const Net& net, size_t* total) {
  std::vector<size_t> offsets(net.slot_bytes.size());
  *total = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    offsets[i] = *total;
    *total += (net.slot_bytes[i] + 63) / 64 * 64;
  }
  return offsets;
}

}  // namespace
}  // namespace gfi8

using gfi8::Net;

extern "C" {

// Instruction set in use: 0 generic, 1 AVX2, 2 AVX-512 VNNI.
int gfi8_isa() { return gfi8::current_isa(); }
int gfi8_isa_supported(int isa) { return gfi8::isa_supported(isa) ? 1 : 0; }
int gfi8_set_isa(int isa) {
  if (!gfi8::isa_supported(isa)) return -1;
  gfi8::g_isa = isa;
  return 0;
}

void* gfi8_new(int c, int h, int w) {
  Net* net = new Net;
  net->in_c = c; net->in_h = h; net->in_w = w;
  gfi8::TensorDesc t{c, h, w, 0};
  t.cs = c;   // the input keeps the caller's pixel size: one memcpy per row for NHWC images
  net->tensors.push_back(t);
  return net;
}

void gfi8_free(void* p) { delete static_cast<Net*>(p); }

// The input's quantisation: lut[pixel] is the input tensor's value (null: the pixel itself), z its zero point.
// Before any layer.
int gfi8_input(void* p, const uint8_t* lut, int z) {
  Net* net = static_cast<Net*>(p);
  if (net->final || !net->layers.empty() || z < 0 || z > 255) return -1;
  net->lut = lut ? std::vector<uint8_t>(lut, lut + 256) : std::vector<uint8_t>();
  net->tensors[0].z = z;
  return 0;
}

// A uint8 activation tensor (C, H, W) with zero point z; returns its id.
int gfi8_tensor(void* p, int c, int h, int w, int z) {
  Net* net = static_cast<Net*>(p);
  if (net->final || c <= 0 || h <= 0 || w <= 0 || z < 0 || z > 255) return -1;
  gfi8::TensorDesc t{c, h, w, z};
  t.cs = (c + 3) / 4 * 4;
  net->tensors.push_back(t);
  return static_cast<int>(net->tensors.size()) - 1;
}

// A layer (see net.h). w: int8 [oc][kh][kw][ic] (dense) or [oc][kh][kw] (depthwise); comp, mul, bias: oc
// values; slope: oc PReLU slopes applied last, or null; out = -1 writes the float output (the last layer, 1x1
// or any spatial size); sum = -1: no residual.
int gfi8_layer(void* p, int depthwise, int in, int out, int sum, int kh, int kw, int sh, int sw, int ph, int pw,
               int oc, const int8_t* w, const int32_t* comp, const float* mul, const float* bias, int relu,
               int post_relu, const float* slope, float sum_mul, float s_out, int out_h, int out_w) {
  Net* net = static_cast<Net*>(p);
  const int n = static_cast<int>(net->tensors.size());
  if (net->final || in < 0 || in >= n || out >= n || sum >= n || oc <= 0 || oc > gfi8::kMaxChannels) return -1;
  if (kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || ph < 0 || pw < 0) return -2;
  const gfi8::TensorDesc& ti = net->tensors[in];
  const int oh = out >= 0 ? net->tensors[out].h : out_h, ow = out >= 0 ? net->tensors[out].w : out_w;
  if (oh != (ti.h + 2 * ph - kh) / sh + 1 || ow != (ti.w + 2 * pw - kw) / sw + 1 || oh <= 0 || ow <= 0) return -3;
  if (out >= 0 && net->tensors[out].c != oc) return -4;
  if (depthwise && ti.c != oc) return -5;
  if (sum >= 0 && (out < 0 || net->tensors[sum].c != oc || net->tensors[sum].h != oh || net->tensors[sum].w != ow))
    return -6;
  if (out < 0 && net->out_dim) return -7;
  auto l = std::make_unique<gfi8::Layer>();
  l->depthwise = depthwise; l->in = in; l->out = out; l->sum = sum;
  l->kh = kh; l->kw = kw; l->sh = sh; l->sw = sw; l->ph = ph; l->pw = pw; l->oc = oc; l->ic = ti.c;
  const size_t nw = static_cast<size_t>(oc) * kh * kw * (depthwise ? 1 : ti.c);
  l->weights.assign(w, w + nw);
  const int c32 = (oc + 31) / 32 * 32;   // kernels load 16 or 32 lanes of these at a time
  l->comp.assign(c32, 0); l->mul.assign(c32, 0.0f); l->bias.assign(c32, 0.0f);
  std::copy(comp, comp + oc, l->comp.begin());
  std::copy(mul, mul + oc, l->mul.begin());
  std::copy(bias, bias + oc, l->bias.begin());
  if (slope) {
    l->slope.assign(c32, 0.0f);
    std::copy(slope, slope + oc, l->slope.begin());
  }
  l->ep = gfi8::Epilogue{l->comp.data(), l->mul.data(), l->bias.data(), relu, sum >= 0 ? 1 : 0, post_relu,
                         slope ? l->slope.data() : nullptr, sum_mul, sum >= 0 ? net->tensors[sum].z : 0, s_out,
                         out >= 0 ? net->tensors[out].z : 0};
  const int id = static_cast<int>(net->layers.size());
  net->tensors[in].pad = std::max({net->tensors[in].pad, ph, pw});
  net->tensors[in].last_use = id;
  if (sum >= 0) net->tensors[sum].last_use = id;
  if (out < 0) { net->out_dim = oh * ow * oc; net->out_h = oh; net->out_w = ow; }
  net->layers.push_back(std::move(l));
  return id;
}

// Plan buffers (a tensor's slot is reused once its last reader has run); returns 0, or -1 when the network
// has no float output or a layer reads a tensor no layer before it wrote.
int gfi8_finalize(void* p) {
  Net* net = static_cast<Net*>(p);
  if (net->out_dim == 0) return -1;
  std::vector<bool> written(net->tensors.size(), false);
  written[0] = true;
  std::vector<int> free_slots;
  auto take = [&](int t) {
    const size_t need = net->tensors[t].bytes();
    int best = -1;
    for (size_t i = 0; i < free_slots.size(); ++i)
      if (best < 0 || net->slot_bytes[free_slots[i]] > net->slot_bytes[free_slots[best]]) best = static_cast<int>(i);
    int slot;
    if (best >= 0) {
      slot = free_slots[best];
      free_slots.erase(free_slots.begin() + best);
      net->slot_bytes[slot] = std::max(net->slot_bytes[slot], need);
    } else {
      slot = static_cast<int>(net->slot_bytes.size());
      net->slot_bytes.push_back(need);
    }
    net->tensors[t].slot = slot;
  };
  take(0);
  for (size_t i = 0; i < net->layers.size(); ++i) {
    const gfi8::Layer& l = *net->layers[i];
    if (!written[l.in] || (l.sum >= 0 && !written[l.sum])) return -2;
    if (l.out >= 0) {
      if (written[l.out]) return -3;
      take(l.out);
      written[l.out] = true;
    }
    for (int t : {l.in, l.sum})
      if (t >= 0 && net->tensors[t].last_use == static_cast<int>(i) && net->tensors[t].slot >= 0) {
        free_slots.push_back(net->tensors[t].slot);
        net->tensors[t].last_use = -2;   // freed once even when it is both input and residual
      }
  }
  net->final = true;
  return 0;
}

int gfi8_out_dim(void* p) { return static_cast<Net*>(p)->out_dim; }

// x: n images of uint8 (C, H, W) (layout 0, NCHW) or (H, W, C) (layout 1, NHWC); out: n * out_dim floats.
int gfi8_run(void* p, const uint8_t* x, int n, int layout, float* out, int threads) {
  Net* net = static_cast<Net*>(p);
  if (!net->final) return -1;
  std::lock_guard<std::mutex> hold(net->busy);
  const int isa = gfi8::current_isa();
  if (net->packed_isa != isa) {
    for (auto& l : net->layers) gfi8::pack_layer(*l, isa);
    net->packed_isa = isa;
  }
  const gfi8::Kernels& k = gfi8::table(isa);
  size_t total = 0;
  const std::vector<size_t> offsets = gfi8::slot_offsets(*net, &total);
  threads = std::max(1, threads);
  if (static_cast<int>(net->arenas.size()) < threads) net->arenas.resize(threads);
  for (int t = 0; t < threads; ++t)
    if (net->arenas[t].size() < total) net->arenas[t].assign(total, 0);
  const size_t image = static_cast<size_t>(net->in_c) * net->in_h * net->in_w;
  if (n == 1 && threads > 1) {   // one image: the threads share each layer
#pragma omp parallel num_threads(threads)
    gfi8::run_image(*net, k, net->arenas[0], offsets, x, layout, out, omp_get_thread_num(), omp_get_num_threads());
    return 0;
  }
  threads = std::max(1, std::min(threads, n));
  if (threads == 1) {
    for (int i = 0; i < n; ++i)
      gfi8::run_image(*net, k, net->arenas[0], offsets, x + i * image, layout,
                      out + static_cast<size_t>(i) * net->out_dim, 0, 1);
    return 0;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int i = 0; i < n; ++i)
    gfi8::run_image(*net, k, net->arenas[omp_get_thread_num()], offsets, x + i * image, layout,
                    out + static_cast<size_t>(i) * net->out_dim, 0, 1);
  return 0;
}

// Time each layer of `reps` one-thread runs of image x: us[i] += microseconds of layer i (summed over reps).
int gfi8_profile(void* p, const uint8_t* x, int layout, int reps, float* out, double* us) {
  Net* net = static_cast<Net*>(p);
  if (gfi8_run(p, x, 1, layout, out, 1) != 0) return -1;   // packs and sizes the arena
  std::lock_guard<std::mutex> hold(net->busy);
  size_t total = 0;
  const std::vector<size_t> offsets = gfi8::slot_offsets(*net, &total);
  const gfi8::Kernels& k = gfi8::table(gfi8::current_isa());
  for (int r = 0; r < reps; ++r) gfi8::run_image(*net, k, net->arenas[0], offsets, x, layout, out, 0, 1, us);
  return 0;
}

}  // extern "C"
