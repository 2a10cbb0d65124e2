// Argument checks shared by the op registrations (ops.cpp, bn_swish_ops.cpp): one wording everywhere.
#pragma once

#include <ATen/core/Tensor.h>

namespace swishkernels {

inline void check_dtype(const char* op, const at::Tensor& t) {
  const c10::ScalarType dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat ||
                  dtype == at::kDouble,
              op, ": unsupported dtype ", dtype,
              " (expected float16, bfloat16, float32 or float64)");
}

}  // namespace swishkernels
