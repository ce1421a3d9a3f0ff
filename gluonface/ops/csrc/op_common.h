// Helpers shared by the operator files: the kernel table in use and tensor-shape views.
#ifndef GLUONFACE_OPS_OP_COMMON_H_
#define GLUONFACE_OPS_OP_COMMON_H_

#include <cstdint>
#include <vector>

#include "kernels.h"
#include "mxnet/lib_api.h"

namespace gfops {

// The kernel table of the instruction set in use (isa.cc): the best the CPU supports unless forced.
const Kernels& kernels();

// (N, C, inner) view of a (N, C, ...) tensor.
inline void plane_dims(const mxnet::ext::MXTensor& t, int64_t* n, int64_t* c, int64_t* inner) {
  *n = t.shape[0];
  *c = t.shape[1];
  *inner = 1;
  for (size_t d = 2; d < t.shape.size(); ++d) *inner *= t.shape[d];
}

// Unknown dimensions reach the library as 0 or as (unsigned) -1 (Gluon's deferred parameters).
inline bool known(const std::vector<unsigned int>& shape) {
  if (shape.empty()) return false;
  for (unsigned d : shape) {
    if (d == 0 || d == static_cast<unsigned>(-1)) return false;
  }
  return true;
}

}  // namespace gfops

#endif  // GLUONFACE_OPS_OP_COMMON_H_
