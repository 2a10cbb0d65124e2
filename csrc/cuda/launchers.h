#pragma once
// Launchers of the CUDA kernels (activations.cu) with plain signatures: raw pointers, an element
// count and a stream, no torch types, so the .cu file compiles with nvcc alone. They return the
// launch status (cudaGetLastError) for the caller to raise on; numel 0 launches nothing.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "activations.h"

namespace swishkernels::cuda {

enum class DType { Float16, BFloat16, Float32, Float64 };

// y[i] = f(x[i]); y may equal x.
cudaError_t launch_forward(Activation act, DType dtype, const void* x, void* y, int64_t numel,
                           cudaStream_t stream);

// grad_input[i] = grad_output[i] * f'(x[i]); grad_input may equal either input.
cudaError_t launch_backward(Activation act, DType dtype, const void* grad_output, const void* x,
                            void* grad_input, int64_t numel, cudaStream_t stream);

}  // namespace swishkernels::cuda
