// CUDA entry points (compiled only in CUDA builds): run the launchers of activations.cu on the
// current stream of the tensors' device and raise on a failed launch. The stream comes from
// c10/cuda rather than ATen/cuda/CUDAContext.h (the same function), which would also pull in the
// cuBLAS and cuSPARSE headers.
#include "device_kernels.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/launchers.h"

namespace swishkernels::cuda {
namespace {

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return DType::Float16;
    case at::kBFloat16:
      return DType::BFloat16;
    case at::kFloat:
      return DType::Float32;
    case at::kDouble:
      return DType::Float64;
    default:
      TORCH_CHECK(false, "swishkernels: unsupported dtype ", t.scalar_type());
  }
}

void check(cudaError_t err, Activation act, const char* pass) {
  TORCH_CHECK(err == cudaSuccess, "swishkernels: ", act == Activation::Swish ? "swish " : "mish ",
              pass, " CUDA kernel failed: ", cudaGetErrorString(err));
}

}  // namespace

void forward(Activation act, const at::Tensor& x, const at::Tensor& y) {
  const c10::cuda::CUDAGuard guard(x.device());
  check(launch_forward(act, dtype_of(x), x.const_data_ptr(), y.data_ptr(), x.numel(),
                       c10::cuda::getCurrentCUDAStream()),
        act, "forward");
}

void backward(Activation act, const at::Tensor& grad_output, const at::Tensor& x,
              const at::Tensor& grad_input) {
  const c10::cuda::CUDAGuard guard(x.device());
  check(launch_backward(act, dtype_of(x), grad_output.const_data_ptr(), x.const_data_ptr(),
                        grad_input.data_ptr(), x.numel(), c10::cuda::getCurrentCUDAStream()),
        act, "backward");
}

}  // namespace swishkernels::cuda
