// The INT8 runner's portable path (no -m flags): the reference every other path must match byte for byte.
#include "common.h"

namespace gfi8 {

const Kernels kGenericKernels = {"generic", natural_pack_bytes, natural_pack, natural_dense, depthwise_impl};

}  // namespace gfi8
