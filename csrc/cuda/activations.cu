// CUDA kernels: one grid-stride loop over the flat range for every (activation, dtype), with
// 16-byte loads and stores where all pointers can be aligned together, one element at a time
// elsewhere.
// Only CUDA headers and csrc/*.h here (no torch), so `nvcc -c` compiles this file on its own.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "activations.h"
#include "cuda/launchers.h"

namespace swishkernels::cuda {
namespace {

constexpr int kVecBytes = 16;
constexpr int kThreads = 256;

// Storage type -> math type: float for 16- and 32-bit storage, double for float64.
template <typename T>
struct MathType {
  using type = float;
};
template <>
struct MathType<double> {
  using type = double;
};
template <typename T>
using math_t = typename MathType<T>::type;

__device__ __forceinline__ float to_math(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_math(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_math(float v) { return v; }
__device__ __forceinline__ double to_math(double v) { return v; }

template <typename T>
__device__ __forceinline__ T from_math(math_t<T> v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_math<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_math<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

struct SwishForward {
  template <typename M>
  __device__ M operator()(M x) const { return math::swish_forward(x); }
};
struct SwishBackward {
  template <typename M>
  __device__ M operator()(M dy, M x) const { return math::swish_backward(dy, x); }
};
struct MishForward {
  template <typename M>
  __device__ M operator()(M x) const { return math::mish_forward(x); }
};
struct MishBackward {
  template <typename M>
  __device__ M operator()(M dy, M x) const { return math::mish_backward(dy, x); }
};

template <typename T>
struct alignas(kVecBytes) Pack {
  static constexpr int kSize = kVecBytes / sizeof(T);
  T v[kSize];
};

// The flat range [0, numel) is split as: `head` elements up to the first 16-byte boundary, then
// `packs` whole packs, then the tail. When the pointers disagree modulo 16 bytes no offset aligns
// them all, and head = numel sends every element down the one-at-a-time path.
template <typename T, int kInputs>
struct Args {
  const T* in[kInputs];
  T* out;
  int64_t numel;
  int64_t head;
  int64_t packs;
};

template <typename T, typename Op>
__device__ __forceinline__ T compute(const Op& op, T x) {
  return from_math<T>(op(to_math(x)));
}
template <typename T, typename Op>
__device__ __forceinline__ T compute(const Op& op, T dy, T x) {
  return from_math<T>(op(to_math(dy), to_math(x)));
}

template <typename T, int kInputs, typename Op>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(Args<T, kInputs> a, Op op) {
  constexpr int kSize = Pack<T>::kSize;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;

  for (int64_t p = first; p < a.packs; p += stride) {
    const int64_t base = a.head + p * kSize;
    Pack<T> in[kInputs];
#pragma unroll
    for (int k = 0; k < kInputs; ++k) {
      in[k] = *reinterpret_cast<const Pack<T>*>(a.in[k] + base);
    }
    Pack<T> out;
#pragma unroll
    for (int j = 0; j < kSize; ++j) {
      if constexpr (kInputs == 1) {
        out.v[j] = compute(op, in[0].v[j]);
      } else {
        out.v[j] = compute(op, in[0].v[j], in[1].v[j]);
      }
    }
    *reinterpret_cast<Pack<T>*>(a.out + base) = out;
  }

  // The head and the tail, one element per thread.
  const int64_t tail = a.head + a.packs * kSize;
  const int64_t leftovers = a.head + (a.numel - tail);
  for (int64_t j = first; j < leftovers; j += stride) {
    const int64_t i = j < a.head ? j : tail + (j - a.head);
    if constexpr (kInputs == 1) {
      a.out[i] = compute(op, a.in[0][i]);
    } else {
      a.out[i] = compute(op, a.in[0][i], a.in[1][i]);
    }
  }
}

template <typename T, int kInputs, typename Op>
cudaError_t launch(Op op, const void* const (&inputs)[kInputs], void* output, int64_t numel,
                   cudaStream_t stream) {
  if (numel == 0) {
    return cudaSuccess;
  }
  Args<T, kInputs> a;
  a.out = static_cast<T*>(output);
  a.numel = numel;
  const uintptr_t misalignment = reinterpret_cast<uintptr_t>(output) % kVecBytes;
  bool aligned_together = true;
  for (int k = 0; k < kInputs; ++k) {
    a.in[k] = static_cast<const T*>(inputs[k]);
    aligned_together &= reinterpret_cast<uintptr_t>(inputs[k]) % kVecBytes == misalignment;
  }
  const int64_t peel = static_cast<int64_t>((kVecBytes - misalignment) % kVecBytes / sizeof(T));
  a.head = aligned_together ? std::min(peel, numel) : numel;
  a.packs = (numel - a.head) / Pack<T>::kSize;

  // One wave of resident blocks: a grid-stride loop then gives every block the same share.
  const auto kernel = elementwise_kernel<T, kInputs, Op>;
  int device = 0;
  int sms = 0;
  int blocks_per_sm = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (err == cudaSuccess) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, kThreads, 0);
  }
  if (err != cudaSuccess) {
    return err;
  }
  const int64_t work = a.packs + (numel - a.packs * Pack<T>::kSize);  // packs + single elements
  const int64_t blocks = std::min<int64_t>((work + kThreads - 1) / kThreads,
                                           static_cast<int64_t>(sms) * blocks_per_sm);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, op);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_typed(Activation act, const void* x, void* y, int64_t numel,
                          cudaStream_t stream) {
  const void* const inputs[1] = {x};
  switch (act) {
    case Activation::Swish:
      return launch<T>(SwishForward{}, inputs, y, numel, stream);
    case Activation::Mish:
      return launch<T>(MishForward{}, inputs, y, numel, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t backward_typed(Activation act, const void* grad_output, const void* x,
                           void* grad_input, int64_t numel, cudaStream_t stream) {
  const void* const inputs[2] = {grad_output, x};
  switch (act) {
    case Activation::Swish:
      return launch<T>(SwishBackward{}, inputs, grad_input, numel, stream);
    case Activation::Mish:
      return launch<T>(MishBackward{}, inputs, grad_input, numel, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_forward(Activation act, DType dtype, const void* x, void* y, int64_t numel,
                           cudaStream_t stream) {
  switch (dtype) {
    case DType::Float16:
      return forward_typed<__half>(act, x, y, numel, stream);
    case DType::BFloat16:
      return forward_typed<__nv_bfloat16>(act, x, y, numel, stream);
    case DType::Float32:
      return forward_typed<float>(act, x, y, numel, stream);
    case DType::Float64:
      return forward_typed<double>(act, x, y, numel, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_backward(Activation act, DType dtype, const void* grad_output, const void* x,
                            void* grad_input, int64_t numel, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float16:
      return backward_typed<__half>(act, grad_output, x, grad_input, numel, stream);
    case DType::BFloat16:
      return backward_typed<__nv_bfloat16>(act, grad_output, x, grad_input, numel, stream);
    case DType::Float32:
      return backward_typed<float>(act, grad_output, x, grad_input, numel, stream);
    case DType::Float64:
      return backward_typed<double>(act, grad_output, x, grad_input, numel, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace swishkernels::cuda
