// CPU entry points: split the flat range across at::parallel_for's threads and run the vectorized
// loop of the best instruction set on each piece.
#include "device_kernels.h"

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE
#include <ATen/Version.h>

#include <algorithm>
#include <string>

#include "cpu/vec_kernels.h"

namespace swishkernels::cpu {
namespace {

struct Kernels {
  ForwardFn forward;
  BackwardFn backward;
};

// The copy for the capability ATen itself runs with (at::get_cpu_capability(): the CPU's best,
// lowered by ATEN_CPU_CAPABILITY), so each copy uses the same vector exp as ATen's own kernels and
// a CPU without AVX2 never executes an AVX2 instruction. Chosen once, like ATen's.
const Kernels& kernels() {
  static const Kernels chosen = [] {
#if defined(SWISHKERNELS_X86_KERNELS)  // setup.py compiled the AVX2 and AVX512 copies
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") {
      return Kernels{AVX512::forward, AVX512::backward};
    }
    if (capability == "AVX2") {
      return Kernels{AVX2::forward, AVX2::backward};
    }
#endif
    return Kernels{DEFAULT::forward, DEFAULT::backward};
  }();
  return chosen;
}

// Calls fn(begin, end) on pieces of [0, n) in parallel. Pieces start at multiples of kBlock
// elements (whole pairs of vectors of any width and dtype), so only the last piece has a scalar tail.
template <typename Fn>
void parallel_blocks(int64_t n, const Fn& fn) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, at::internal::GRAIN_SIZE / kBlock, [&](int64_t b0, int64_t b1) {
    fn(b0 * kBlock, std::min(b1 * kBlock, n));
  });
}

}  // namespace

void forward(Activation act, const at::Tensor& x, const at::Tensor& y) {
  const ForwardFn fn = kernels().forward;
  const c10::ScalarType dtype = x.scalar_type();
  const auto* in = static_cast<const char*>(x.const_data_ptr());
  auto* out = static_cast<char*>(y.data_ptr());
  const int64_t size = x.element_size();
  parallel_blocks(x.numel(), [&](int64_t begin, int64_t end) {
    fn(act, dtype, in + begin * size, out + begin * size, end - begin);
  });
}

void backward(Activation act, const at::Tensor& grad_output, const at::Tensor& x,
              const at::Tensor& grad_input) {
  const BackwardFn fn = kernels().backward;
  const c10::ScalarType dtype = x.scalar_type();
  const auto* dy = static_cast<const char*>(grad_output.const_data_ptr());
  const auto* in = static_cast<const char*>(x.const_data_ptr());
  auto* out = static_cast<char*>(grad_input.data_ptr());
  const int64_t size = x.element_size();
  parallel_blocks(x.numel(), [&](int64_t begin, int64_t end) {
    fn(act, dtype, dy + begin * size, in + begin * size, out + begin * size, end - begin);
  });
}

}  // namespace swishkernels::cpu
