#pragma once
// The CPU kernels proper: elementwise loops over raw pointers with at::vec::Vectorized, one copy
// per instruction set. vec_kernels.cpp is compiled once per CPU capability (setup.py adds the AVX2
// and AVX512 copies on x86-64) into the namespace of that name; device_kernels.cpp picks one at run
// time. The loops are ATen's (whole pairs of vectors, then a scalar tail), so Swish equals F.silu bit for
// bit; parallel pieces are whole vectors, so only the tensor's last elements go scalar and the result
// does not depend on the number of threads.

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "activations.h"

namespace swishkernels::cpu {

// y[i] = f(x[i]) for i < n; x and y may be the same pointer.
using ForwardFn = void (*)(Activation, c10::ScalarType, const void* x, void* y, int64_t n);
// grad_input[i] = grad_output[i] * f'(x[i]); grad_input may alias either input.
using BackwardFn = void (*)(Activation, c10::ScalarType, const void* grad_output, const void* x,
                            void* grad_input, int64_t n);

namespace DEFAULT {
void forward(Activation, c10::ScalarType, const void*, void*, int64_t);
void backward(Activation, c10::ScalarType, const void*, const void*, void*, int64_t);
}  // namespace DEFAULT
namespace AVX2 {
void forward(Activation, c10::ScalarType, const void*, void*, int64_t);
void backward(Activation, c10::ScalarType, const void*, const void*, void*, int64_t);
}  // namespace AVX2
namespace AVX512 {
void forward(Activation, c10::ScalarType, const void*, void*, int64_t);
void backward(Activation, c10::ScalarType, const void*, const void*, void*, int64_t);
}  // namespace AVX512

}  // namespace swishkernels::cpu
