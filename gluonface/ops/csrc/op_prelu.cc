// _gluonface_prelu(data (N, C, ...) float32, alpha (C, 1, 1, 1) float32) -> (N, C, ...) float32
//   y = data > 0 ? data : alpha_c * data, the per-channel PReLU of gluonface.models.layers.ChannelPReLU with
//   the same parameter, so checkpoints do not change and an exporter can write the standard formulation back.
//   Backward: d_data = data > 0 ? dy : alpha_c * dy (the standard formulation's gradient, where
//   minimum(x, 0)'s gradient is 1 at x <= 0), d_alpha_c = sum over (n, spatial) of min(data, 0) * dy:
//   each product is exact in double and the sum runs in double per (n, c) plane, then over n in a fixed
//   order, and is rounded once to float32. So |d_alpha - exact| <= eps32/2 * |exact| + m * eps64 * sum|terms|
//   for m terms, independent of the thread count.
//
// MXNet calls these functions with "write" semantics only: lib_api's FCompute receives no OpReqType (MXNet
// 1.9.1 src/c_api/c_api.cc CustomFComputeDispatcher never forwards `req`), so gradients are overwritten,
// never accumulated. gluonface/ops/prelu.py uses the standard formulation when a gradient must be added.
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

MXReturnValue prelu_parse(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                          int* num_out) {
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue prelu_infer_type(const std::unordered_map<std::string, std::string>& attrs,
                               std::vector<int>* in_types, std::vector<int>* out_types) {
  for (size_t i = 0; i < in_types->size(); ++i) {
    if ((*in_types)[i] != mxnet::ext::kFloat32 && (*in_types)[i] != -1) {
      MX_ERROR_MSG << "_gluonface_prelu supports float32 only, got dtype code " << (*in_types)[i]
                   << " for input " << i << "; gluonface uses the standard formulation for other dtypes";
      return MX_FAIL;
    }
  }
  (*out_types)[0] = mxnet::ext::kFloat32;
  return MX_SUCCESS;
}

MXReturnValue prelu_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                                std::vector<std::vector<unsigned int>>* in_shapes,
                                std::vector<std::vector<unsigned int>>* out_shapes) {
  const auto& x = (*in_shapes)[0];
  const auto& a = (*in_shapes)[1];
  if (x.size() < 2) {
    MX_ERROR_MSG << "_gluonface_prelu needs data of shape (N, C, ...), got " << x.size() << " dims";
    return MX_FAIL;
  }
  size_t a_size = 1;
  for (unsigned d : a) a_size *= d;
  if (a.empty() || a_size != x[1]) {
    MX_ERROR_MSG << "_gluonface_prelu: alpha must hold one slope per channel (" << x[1] << "), got "
                 << a_size;
    return MX_FAIL;
  }
  (*out_shapes)[0] = x;
  return MX_SUCCESS;
}

MXReturnValue prelu_forward(const std::unordered_map<std::string, std::string>& attrs,
                            std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                            const OpResource& res) {
  int64_t n, c, inner;
  plane_dims((*inputs)[0], &n, &c, &inner);
  kernels().prelu_forward((*inputs)[0].data<float>(), (*inputs)[1].data<float>(),
                          (*outputs)[0].data<float>(), n, c, inner);
  return MX_SUCCESS;
}

// inputs: dy, data, alpha, y (MXNet passes output gradients, then inputs, then outputs);
// outputs: d_data, d_alpha.
MXReturnValue prelu_backward(const std::unordered_map<std::string, std::string>& attrs,
                             std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                             const OpResource& res) {
  MXTensor& x = (*inputs)[1];
  int64_t n, c, inner;
  plane_dims(x, &n, &c, &inner);
  // MXNet's temporary workspace (kTempSpace), reused across calls, not a fresh allocation.
  auto* plane_sums = static_cast<double*>(res.alloc_cpu(static_cast<int>(n * c * sizeof(double))));
  kernels().prelu_backward((*inputs)[0].data<float>(), x.data<float>(), (*inputs)[2].data<float>(),
                           (*outputs)[0].data<float>(), plane_sums, n, c, inner);
  float* d_alpha = (*outputs)[1].data<float>();
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += plane_sums[i * c + ch];
    d_alpha[ch] = static_cast<float>(s);
  }
  return MX_SUCCESS;
}


}  // namespace
}  // namespace gfops

REGISTER_OP(_gluonface_prelu)
    .setParseAttrs(gfops::prelu_parse)
    .setInferType(gfops::prelu_infer_type)
    .setInferShape(gfops::prelu_infer_shape)
    .setForward(gfops::prelu_forward, "cpu")
    .setBackward(gfops::prelu_backward, "cpu");

