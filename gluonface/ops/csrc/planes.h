// The OpenMP driver shared by every instruction-set file: one (n, c) plane per iteration, static schedule.
// Work is split by planes only, so each plane's reduction runs on one thread in a fixed order and results do
// not depend on the number of threads (bit-identical reruns, exact resume).
#ifndef GLUONFACE_OPS_PLANES_H_
#define GLUONFACE_OPS_PLANES_H_

#include <cstdint>

#include "kernels.h"

namespace gfops {
namespace {  // internal linkage: each instruction-set file compiles its own copy

template <typename PlaneFn>
inline void for_each_plane(int64_t n, int64_t c, int64_t inner, PlaneFn fn) {
  const int64_t planes = n * c;
  const bool parallel = planes > 1 && planes * inner >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t p = 0; p < planes; ++p) {
    fn(p, p % c);
  }
}

}  // namespace
}  // namespace gfops

#endif  // GLUONFACE_OPS_PLANES_H_
