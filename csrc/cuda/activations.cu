// CUDA kernels: one grid-stride loop over the flat range for every (activation, dtype).
// The output is walked in 16-byte packs, kUnroll of them per thread per iteration, all loaded before
// any is stored, so each thread keeps kUnroll 16-byte loads per input in flight (aligned path). Inputs aligned like
// the output load whole packs too; an input that is not (a slice starting mid-pack) is loaded with the
// widest access its offset from the output allows (8, 4 or 2 bytes) while the output keeps its 16-byte
// stores. Only the head before the output's first 16-byte boundary and the tail after its last whole
// pack go one element at a time.
// Only CUDA headers and csrc/*.h here (no torch), so `nvcc -c` compiles this file on its own.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "activations.h"
#include "cuda/launchers.h"

namespace swishkernels {
namespace cuda {

// Approximate fp32 math: exp and division by the hardware's ex2.approx.ftz and rcp.approx.ftz (about
// 2 ulp in fp32: invisible once rounded to fp16/bf16, and within fp32's test tolerances for Mish).
// Used for 16-bit storage and for fp32 Mish; the accurate expf and IEEE division put those over the
// issue budget on H200 (tools/gpu_code.py counts the SASS). fp32 Swish keeps the exact library math
// (it matches F.silu bit for bit) and fp64 its double math. Inline PTX rather than -ftz for the file:
// the exact paths keep denormals.
struct Approx {
  float v;
  Approx() = default;
  __device__ Approx(float f) : v(f) {}  // NOLINT(google-explicit-constructor): the formulas write T(1)
};
__device__ __forceinline__ float approx_exp(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x * 1.4426950408889634f));
  return y;
}
__device__ __forceinline__ float approx_div(float a, float b) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(b));  // rcp(inf) = 0: sigmoid(-large) = 0, no NaN
  return a * r;
}
__device__ __forceinline__ Approx operator+(Approx a, Approx b) { return a.v + b.v; }
__device__ __forceinline__ Approx operator-(Approx a, Approx b) { return a.v - b.v; }
__device__ __forceinline__ Approx operator-(Approx a) { return -a.v; }
__device__ __forceinline__ Approx operator*(Approx a, Approx b) { return a.v * b.v; }
__device__ __forceinline__ Approx operator/(Approx a, Approx b) { return approx_div(a.v, b.v); }
__device__ __forceinline__ bool operator<(Approx a, Approx b) { return a.v < b.v; }

}  // namespace cuda

namespace math {
template <>
struct MathOps<cuda::Approx> {
  __device__ static cuda::Approx exp(cuda::Approx x) { return cuda::approx_exp(x.v); }
  __device__ static cuda::Approx min(cuda::Approx a, cuda::Approx b) { return b < a ? b : a; }
};
}  // namespace math

namespace cuda {
namespace {

constexpr int kVecBytes = 16;
constexpr int kThreads = 256;
constexpr int kUnroll = 2;
constexpr int kMaxDevices = 64;

// The math type for storage T and operation Op: Approx for 16-bit storage and for fp32 where Op allows
// it, float for the other fp32, double for float64.
template <typename T, typename Op>
struct MathType {
  using type = Approx;
};
template <typename Op>
struct MathType<float, Op> {
  using type = std::conditional_t<Op::kApproximateFp32, Approx, float>;
};
template <typename Op>
struct MathType<double, Op> {
  using type = double;
};
template <typename T, typename Op>
using math_t = typename MathType<T, Op>::type;

__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ float value(Approx v) { return v.v; }
__device__ __forceinline__ float value(float v) { return v; }
__device__ __forceinline__ double value(double v) { return v; }

template <typename T>
__device__ __forceinline__ T narrow(decltype(widen(T())) v) {
  return v;
}
template <>
__device__ __forceinline__ __half narrow<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// kApproximateFp32: whether fp32 storage may use the approximate math (see Approx).
struct SwishForward {
  static constexpr bool kApproximateFp32 = false;
  template <typename M>
  __device__ M operator()(M x) const { return math::swish_forward(x); }
};
struct SwishBackward {
  static constexpr bool kApproximateFp32 = false;
  template <typename M>
  __device__ M operator()(M dy, M x) const { return math::swish_backward(dy, x); }
};
struct MishForward {
  static constexpr bool kApproximateFp32 = true;
  template <typename M>
  __device__ M operator()(M x) const { return math::mish_forward(x); }
};
struct MishBackward {
  static constexpr bool kApproximateFp32 = true;
  template <typename M>
  __device__ M operator()(M dy, M x) const { return math::mish_backward(dy, x); }
};

template <typename T>
struct alignas(kVecBytes) Pack {
  static constexpr int kSize = kVecBytes / sizeof(T);
  T v[kSize];
};

// The flat range [0, numel) is split as: `head` elements up to the output's first 16-byte boundary,
// then `packs` whole output packs, then the tail. width[k]: the bytes per load of input k in the packs
// (16 when it is aligned like the output, else the largest power of two dividing its offset from it).
template <typename T, int kInputs>
struct Args {
  const T* in[kInputs];
  T* out;
  int64_t numel;
  int64_t head;
  int64_t packs;
  int width[kInputs];
};

// A pack of input starting at p with `width`-byte loads (p is `width`-aligned).
template <typename T, bool kAligned>
__device__ __forceinline__ Pack<T> load_pack(const T* p, int width) {
  Pack<T> r;
  if (kAligned || width == 16) {
    r = *reinterpret_cast<const Pack<T>*>(p);
  } else if (width == 8) {
    const uint2* q = reinterpret_cast<const uint2*>(p);
    uint2* d = reinterpret_cast<uint2*>(&r);
    d[0] = q[0];
    d[1] = q[1];
  } else if (width == 4) {
    const uint32_t* q = reinterpret_cast<const uint32_t*>(p);
    uint32_t* d = reinterpret_cast<uint32_t*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = q[i];
  } else {
#pragma unroll
    for (int i = 0; i < Pack<T>::kSize; ++i) r.v[i] = p[i];
  }
  return r;
}

template <typename T, typename Op>
__device__ __forceinline__ T compute(const Op& op, T x) {
  using M = math_t<T, Op>;
  return narrow<T>(value(op(M(widen(x)))));
}
template <typename T, typename Op>
__device__ __forceinline__ T compute(const Op& op, T dy, T x) {
  using M = math_t<T, Op>;
  return narrow<T>(value(op(M(widen(dy)), M(widen(x)))));
}

template <typename T, int kInputs, typename Op, bool kAligned>
__device__ __forceinline__ void do_packs(const Args<T, kInputs>& a, const Op& op, int64_t first,
                                         int64_t stride, int count) {
  constexpr int kSize = Pack<T>::kSize;
  Pack<T> in[kUnroll][kInputs];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (u < count) {
#pragma unroll
      for (int k = 0; k < kInputs; ++k) {
        in[u][k] = load_pack<T, kAligned>(a.in[k] + a.head + (first + u * stride) * kSize, a.width[k]);
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (u < count) {
      Pack<T> out;
#pragma unroll
      for (int j = 0; j < kSize; ++j) {
        if constexpr (kInputs == 1) {
          out.v[j] = compute(op, in[u][0].v[j]);
        } else {
          out.v[j] = compute(op, in[u][0].v[j], in[u][1].v[j]);
        }
      }
      *reinterpret_cast<Pack<T>*>(a.out + a.head + (first + u * stride) * kSize) = out;
    }
  }
}

template <typename T, int kInputs, typename Op, bool kAligned>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(Args<T, kInputs> a, Op op) {
  constexpr int kSize = Pack<T>::kSize;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;

  // The misaligned path keeps one pack per iteration: its several load widths and two packs at once
  // need more registers than sm_80 gives without spilling (tools/gpu_code.py).
  constexpr int kPacks = kAligned ? kUnroll : 1;
  int64_t p = first;
  if constexpr (kAligned) {
    for (; p + (kPacks - 1) * stride < a.packs; p += kPacks * stride) {  // the hot loop
      do_packs<T, kInputs, Op, kAligned>(a, op, p, stride, kPacks);
    }
  } else {
#pragma unroll 1  // not unrolled further: the copies' registers would spill around the division's slow path
    for (; p < a.packs; p += stride) {
      do_packs<T, kInputs, Op, kAligned>(a, op, p, stride, 1);
    }
  }
  if (p < a.packs) {  // fewer than kPacks packs left for this thread
    do_packs<T, kInputs, Op, kAligned>(a, op, p, stride, 1);
  }

  // The head and the tail, one element per thread. The thread's index is read again rather than kept
  // live across the pack loop (kept, sm_90 spilled it around the division's slow-path calls).
  const int64_t tail = a.head + a.packs * kSize;
  const int64_t leftovers = a.head + (a.numel - tail);
  unsigned block;
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(block));  // volatile: not merged with the first read
  for (int64_t j = threadIdx.x + static_cast<int64_t>(block) * blockDim.x; j < leftovers; j += stride) {
    const int64_t i = j < a.head ? j : tail + (j - a.head);
    if constexpr (kInputs == 1) {
      a.out[i] = compute(op, a.in[0][i]);
    } else {
      a.out[i] = compute(op, a.in[0][i], a.in[1][i]);
    }
  }
}

// Per-device figures the launcher needs, queried once per device (not on every launch).
int sm_count(int device, cudaError_t* err) {
  static std::atomic<int> cache[kMaxDevices];
  if (device < 0 || device >= kMaxDevices) {
    int sms = 0;
    *err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    return sms;
  }
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    *err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (*err == cudaSuccess) cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

template <typename Kernel>
int blocks_per_sm(Kernel kernel, int device, cudaError_t* err) {
  // One cache per kernel instantiation; occupancy depends on the device's architecture.
  static std::atomic<int> cache[kMaxDevices];
  const bool cached = device >= 0 && device < kMaxDevices;
  int blocks = cached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (blocks == 0) {
    *err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0);
    if (*err == cudaSuccess && cached) cache[device].store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}

int load_width(uintptr_t offset_bytes, int element_size) {
  int width = kVecBytes;
  while (width > element_size && offset_bytes % width != 0) width /= 2;
  return width;
}

template <typename T, int kInputs, typename Op, bool kAligned>
cudaError_t launch_kernel(const Args<T, kInputs>& a, Op op, cudaStream_t stream) {
  // One wave of resident blocks: a grid-stride loop then gives every block the same share.
  const auto kernel = elementwise_kernel<T, kInputs, Op, kAligned>;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  int sms = 0;
  int per_sm = 0;
  if (err == cudaSuccess) sms = sm_count(device, &err);
  if (err == cudaSuccess) per_sm = blocks_per_sm(kernel, device, &err);
  if (err != cudaSuccess) {
    return err;
  }
  const int64_t work = a.packs + (a.numel - a.packs * Pack<T>::kSize);  // packs + single elements
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>((work + kThreads - 1) / kThreads, static_cast<int64_t>(sms) * per_sm));
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, op);
  return cudaGetLastError();
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
  const uintptr_t out_address = reinterpret_cast<uintptr_t>(output);
  const uintptr_t misalignment = out_address % kVecBytes;
  // The head aligns the output; each input's loads are as wide as its offset from the output allows.
  const int64_t peel = static_cast<int64_t>((kVecBytes - misalignment) % kVecBytes / sizeof(T));
  a.head = std::min(peel, numel);
  a.packs = (numel - a.head) / Pack<T>::kSize;
  bool aligned = true;
  for (int k = 0; k < kInputs; ++k) {
    a.in[k] = static_cast<const T*>(inputs[k]);
    const uintptr_t offset = reinterpret_cast<uintptr_t>(inputs[k]) - out_address;
    a.width[k] = load_width(offset % kVecBytes, static_cast<int>(sizeof(T)));
    aligned &= a.width[k] == kVecBytes;
  }
  return aligned ? launch_kernel<T, kInputs, Op, true>(a, op, stream)
                 : launch_kernel<T, kInputs, Op, false>(a, op, stream);
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

}  // namespace cuda
}  // namespace swishkernels
