// _gluonface_bn_prelu: BatchNorm (training and inference) + per-channel PReLU in one MXNet custom operator.
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "op_common.h"

using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;

namespace gfops {
namespace {

// Inputs: data (N, C, ...), gamma (C,), beta (C,), moving_mean (C,), moving_var (C,), alpha (C elements),
// mode (1,): 1.0 in inference, anything else in training (see gluonface/ops/bn_prelu.py: lib_api passes no
// is_train flag, so the graph derives one from Dropout). Outputs: y, mean (C,), invstd (C,).
// Attributes: eps, momentum (MXNet BatchNorm's meaning; moving statistics are updated in the training
// forward pass, declared through FMutateInputs, with the biased batch variance as MXNet's oneDNN BatchNorm).
enum BnIn { kData = 0, kGamma, kBeta, kMovingMean, kMovingVar, kAlpha, kMode, kBnInputs };

MXReturnValue bn_prelu_parse(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                             int* num_out) {
  for (const char* key : {"eps", "momentum"}) {
    if (attrs.count(key) == 0) {
      MX_ERROR_MSG << "_gluonface_bn_prelu needs the attribute " << key;
      return MX_FAIL;
    }
  }
  *num_in = kBnInputs;
  *num_out = 3;
  return MX_SUCCESS;
}

MXReturnValue bn_prelu_infer_type(const std::unordered_map<std::string, std::string>& attrs,
                                  std::vector<int>* in_types, std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    if ((*in_types)[i] != mxnet::ext::kFloat32 && (*in_types)[i] != -1) {
      MX_ERROR_MSG << "_gluonface_bn_prelu supports float32 only, got dtype code " << (*in_types)[i]
                   << " for input " << i;
      return MX_FAIL;
    }
    (*in_types)[i] = mxnet::ext::kFloat32;
  }
  for (auto& t : *out_types) t = mxnet::ext::kFloat32;
  return MX_SUCCESS;
}

MXReturnValue bn_prelu_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                   std::vector<std::vector<unsigned int>>* in_shapes,
                                   std::vector<std::vector<unsigned int>>* out_shapes) {
  const auto x = (*in_shapes)[kData];
  if (x.size() < 2 || !known(x)) {
    MX_ERROR_MSG << "_gluonface_bn_prelu needs data of shape (N, C, ...), got " << x.size() << " dims";
    return MX_FAIL;
  }
  const unsigned c = x[1];
  for (int i : {kGamma, kBeta, kMovingMean, kMovingVar, kAlpha}) {
    auto& s = (*in_shapes)[i];
    if (!known(s)) {  // deferred initialisation: the parameter's shape follows from the data
      s = (i == kAlpha) ? std::vector<unsigned>{c, 1, 1, 1} : std::vector<unsigned>{c};
    }
    size_t size = 1;
    for (unsigned d : s) size *= d;
    if (size != c) {
      MX_ERROR_MSG << "_gluonface_bn_prelu: input " << i << " must hold one value per channel (" << c
                   << "), got " << size;
      return MX_FAIL;
    }
  }
  if (!known((*in_shapes)[kMode])) (*in_shapes)[kMode] = {1};
  (*out_shapes)[0] = x;
  (*out_shapes)[1] = {c};
  (*out_shapes)[2] = {c};
  return MX_SUCCESS;
}

MXReturnValue bn_prelu_mutate(const std::unordered_map<std::string, std::string>& attrs,
                              std::vector<int>* input_indices) {
  input_indices->push_back(kMovingMean);
  input_indices->push_back(kMovingVar);
  return MX_SUCCESS;
}

// scale = gamma * invstd, bias = beta - mean * scale: computed the same way in forward and backward, so the
// backward pass sees the forward pass's z (and PReLU mask) bit for bit.
void bn_affine(const float* gamma, const float* beta, const float* mean, const float* invstd, int64_t c,
               float* scale, float* bias) {
  for (int64_t ch = 0; ch < c; ++ch) {
    scale[ch] = gamma[ch] * invstd[ch];
    bias[ch] = beta[ch] - mean[ch] * scale[ch];
  }
}

// Sum per-plane partial sums over n in a fixed order: (n, c) -> (c).
double channel_sum(const double* planes, int64_t n, int64_t c, int64_t ch) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += planes[i * c + ch];
  return s;
}

MXReturnValue bn_prelu_forward(const std::unordered_map<std::string, std::string>& attrs,
                               std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                               const OpResource& res) {
  auto& in = *inputs;
  int64_t n, c, inner;
  plane_dims(in[kData], &n, &c, &inner);
  const float eps = std::stof(attrs.at("eps"));
  const float momentum = std::stof(attrs.at("momentum"));
  const bool train = in[kMode].data<float>()[0] != 1.0f;
  const float* x = in[kData].data<float>();
  float* mean = (*outputs)[1].data<float>();
  float* invstd = (*outputs)[2].data<float>();
  float* mm = in[kMovingMean].data<float>();
  float* mv = in[kMovingVar].data<float>();
  char* ws = static_cast<char*>(res.alloc_cpu(static_cast<int>(n * c * 2 * sizeof(double) +
                                                                c * 3 * sizeof(float))));
  double* s1 = reinterpret_cast<double*>(ws);
  double* s2 = s1 + n * c;
  float* shift = reinterpret_cast<float*>(s2 + n * c);
  float* scale = shift + c;
  float* bias = scale + c;
  if (train) {
    // Shifted sums (shift = the channel's first element) keep E[d^2] - E[d]^2 free of cancellation.
    for (int64_t ch = 0; ch < c; ++ch) shift[ch] = x[ch * inner];
    kernels().bn_stats(x, shift, s1, s2, n, c, inner);
    const double m = static_cast<double>(n * inner);
    const float keep = momentum, take = 1.0f - momentum;  // MXNet's float update of the moving statistics
    for (int64_t ch = 0; ch < c; ++ch) {
      const double d = channel_sum(s1, n, c, ch) / m;
      double var = channel_sum(s2, n, c, ch) / m - d * d;
      if (var < 0.0) var = 0.0;
      mean[ch] = static_cast<float>(shift[ch] + d);
      invstd[ch] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
      mm[ch] = mm[ch] * keep + mean[ch] * take;
      mv[ch] = mv[ch] * keep + static_cast<float>(var) * take;
    }
  } else {
    for (int64_t ch = 0; ch < c; ++ch) {
      mean[ch] = mm[ch];
      invstd[ch] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(mv[ch]) + eps));
    }
  }
  bn_affine(in[kGamma].data<float>(), in[kBeta].data<float>(), mean, invstd, c, scale, bias);
  kernels().bn_prelu_forward(x, scale, bias, in[kAlpha].data<float>(), (*outputs)[0].data<float>(),
                             n, c, inner);
  return MX_SUCCESS;
}

// inputs: dy, d_mean, d_invstd (ignored: the statistics are not differentiated as outputs), then the forward
// inputs, then the forward outputs y, mean, invstd. outputs: one gradient per forward input.
MXReturnValue bn_prelu_backward(const std::unordered_map<std::string, std::string>& attrs,
                                std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                                const OpResource& res) {
  auto& in = *inputs;
  auto& out = *outputs;
  const int fwd = 3;  // offset of the forward inputs
  MXTensor& xt = in[fwd + kData];
  int64_t n, c, inner;
  plane_dims(xt, &n, &c, &inner);
  const bool train = in[fwd + kMode].data<float>()[0] != 1.0f;
  const float* x = xt.data<float>();
  const float* dy = in[0].data<float>();
  const float* gamma = in[fwd + kGamma].data<float>();
  const float* alpha = in[fwd + kAlpha].data<float>();
  const float* mean = in[fwd + kBnInputs + 1].data<float>();
  const float* invstd = in[fwd + kBnInputs + 2].data<float>();
  char* ws = static_cast<char*>(res.alloc_cpu(static_cast<int>(n * c * 3 * sizeof(double) +
                                                                c * 5 * sizeof(float))));
  double* sg = reinterpret_cast<double*>(ws);
  double* sgx = sg + n * c;
  double* sa = sgx + n * c;
  float* scale = reinterpret_cast<float*>(sa + n * c);
  float* bias = scale + c;
  float* k1 = bias + c;
  float* k2 = k1 + c;
  float* k3 = k2 + c;
  bn_affine(gamma, in[fwd + kBeta].data<float>(), mean, invstd, c, scale, bias);
  kernels().bn_prelu_backward_sums(dy, x, scale, bias, alpha, mean, sg, sgx, sa, n, c, inner);
  float* d_gamma = out[kGamma].data<float>();
  float* d_beta = out[kBeta].data<float>();
  float* d_alpha = out[kAlpha].data<float>();
  const double m = static_cast<double>(n * inner);
  for (int64_t ch = 0; ch < c; ++ch) {
    const double g = channel_sum(sg, n, c, ch), gx = channel_sum(sgx, n, c, ch);
    const double is = invstd[ch], gm = static_cast<double>(gamma[ch]) * is;
    d_beta[ch] = static_cast<float>(g);
    d_gamma[ch] = static_cast<float>(gx * is);
    d_alpha[ch] = static_cast<float>(channel_sum(sa, n, c, ch));
    k1[ch] = static_cast<float>(gm);
    // Training: the batch statistics depend on x, which adds the two mean terms of BatchNorm's gradient.
    k2[ch] = train ? static_cast<float>(-gm * is * is * gx / m) : 0.0f;
    k3[ch] = train ? static_cast<float>(-gm * g / m) : 0.0f;
  }
  kernels().bn_prelu_backward_dx(dy, x, scale, bias, alpha, mean, k1, k2, k3, out[kData].data<float>(),
                                 n, c, inner);
  for (int i : {kMovingMean, kMovingVar, kMode}) {
    float* z = out[i].data<float>();
    for (int64_t j = 0, size = out[i].size(); j < size; ++j) z[j] = 0.0f;
  }
  return MX_SUCCESS;
}

}  // namespace
}  // namespace gfops

REGISTER_OP(_gluonface_bn_prelu)
    .setParseAttrs(gfops::bn_prelu_parse)
    .setInferType(gfops::bn_prelu_infer_type)
    .setInferShape(gfops::bn_prelu_infer_shape)
    .setMutateInputs(gfops::bn_prelu_mutate)
    .setForward(gfops::bn_prelu_forward, "cpu")
    .setBackward(gfops::bn_prelu_backward, "cpu");

