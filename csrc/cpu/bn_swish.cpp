// CPU kernels of the fused BatchNorm + activation ops: tensors to raw pointers, the split of the work
// across at::parallel_for's threads and the fixed-order combination of partial sums. The loops
// themselves are in bn_vec_kernels.cpp, one copy per instruction set, chosen here at run time.
#include "cpu/bn_swish.h"

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE
#include <ATen/Version.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cpu/bn_vec_kernels.h"

namespace swishkernels::cpu::bn {
namespace {

// Elements per reduction chunk (and per elementwise work item along a long inner run).
constexpr int64_t kChunk = 8192;
// Rows of at least this many elements are reduced row by row; shorter ones (channels_last has
// inner = 1) in blocks of whole [C, inner] slices.
constexpr int64_t kLongRow = 512;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Kernels {
  ReduceFn reduce;
  MapFn map;
};

// The copy for the capability ATen itself runs with, as in device_kernels.cpp.
const Kernels& kernels() {
  static const Kernels chosen = [] {
#if defined(SWISHKERNELS_X86_KERNELS)  // setup.py compiled the AVX2 and AVX512 copies
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") {
      return Kernels{AVX512::reduce, AVX512::map};
    }
    if (capability == "AVX2") {
      return Kernels{AVX2::reduce, AVX2::map};
    }
#endif
    return Kernels{DEFAULT::reduce, DEFAULT::map};
  }();
  return chosen;
}

// The math dtype is the per-channel one (bn_swish.h). The loops compute in double for double
// storage and in float otherwise; for the other pairings (double x with float per-channel values,
// or float/half/bfloat16 x with double ones) x and grad_output are brought to the math dtype first,
// which computes the same values.
at::ScalarType storage_for(const at::Tensor& x, at::ScalarType math) {
  return (x.scalar_type() == at::kDouble) == (math == at::kDouble) ? x.scalar_type() : math;
}

at::Tensor in_storage(const at::Tensor& t, at::ScalarType storage) {
  return t.scalar_type() == storage ? t : t.to(storage);  // keeps the (dense) strides
}

// A (C,) per-channel tensor as a zero-padded copy that the loops may read in whole vectors.
template <typename math_t>
std::vector<math_t> padded(const at::Tensor& t) {
  const int64_t channels = t.numel();
  std::vector<math_t> out(ceil_div(channels, kChannelPad) * kChannelPad, math_t(0));
  const math_t* p = t.const_data_ptr<math_t>();
  std::copy(p, p + channels, out.begin());
  return out;
}

// Per-channel values and the Args that point at them.
struct Prepared {
  std::vector<float> f[5];
  std::vector<double> d[5];
  Args args;
};

void prepare(Prepared& p, Activation f, const at::Tensor& x, const at::Tensor* grad_output,
             void* out, std::initializer_list<const at::Tensor*> per_channel, const Geometry& g) {
  p.args = Args{x.scalar_type(), f, g.channels, g.inner, x.const_data_ptr(),
                grad_output ? grad_output->const_data_ptr() : nullptr, out, {}};
  int i = 0;
  for (const at::Tensor* t : per_channel) {
    if (t->scalar_type() == at::kDouble) {
      p.d[i] = padded<double>(*t);
      p.args.per_channel[i] = p.d[i].data();
    } else {
      p.f[i] = padded<float>(*t);
      p.args.per_channel[i] = p.f[i].data();
    }
    ++i;
  }
}

// out0[c], out1[c] = the two sums of channel c over the tensor. The spans, and so every partial
// sum, depend only on the shape, and partials are combined in a fixed order: the result does not
// depend on the number of threads.
void reduce_per_channel(Reduce kind, const Args& args, const Geometry& g, double* total0,
                        double* total1) {
  const ReduceFn fn = kernels().reduce;
  const int64_t C = g.channels;
  std::fill(total0, total0 + C, 0.0);
  std::fill(total1, total1 + C, 0.0);
  if (g.inner >= kLongRow) {
    // Pieces of at most kChunk elements of one row: one partial each.
    const int64_t pieces = ceil_div(g.inner, kChunk);
    const int64_t items = g.outer * C * pieces;
    std::vector<double> p0(items, 0.0), p1(items, 0.0);
    at::parallel_for(0, items, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r = k / pieces, j = k % pieces;
        const int64_t begin = j * kChunk;
        fn(kind, args, Span{r, r + 1, begin, std::min(g.inner, begin + kChunk)}, r % C, &p0[k],
           &p1[k]);
      }
    });
    for (int64_t o = 0; o < g.outer; ++o) {
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t j = 0; j < pieces; ++j) {
          const int64_t k = (o * C + c) * pieces + j;
          total0[c] += p0[k];
          total1[c] += p1[k];
        }
      }
    }
  } else {
    // Blocks of whole [C, inner] slices along outer: one partial per channel each.
    const int64_t per_block = std::max<int64_t>(1, kChunk / (C * g.inner));
    const int64_t blocks = ceil_div(g.outer, per_block);
    std::vector<double> p0(blocks * C, 0.0), p1(blocks * C, 0.0);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t o0 = b * per_block, o1 = std::min(g.outer, o0 + per_block);
        fn(kind, args, Span{o0 * C, o1 * C, 0, g.inner}, 0, p0.data() + b * C, p1.data() + b * C);
      }
    });
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        total0[c] += p0[b * C + c];
        total1[c] += p1[b * C + c];
      }
    }
  }
}

// The two sums into (C,) tensors of the per-channel dtype.
void reduce_into(Reduce kind, const Args& args, const Geometry& g, const at::Tensor& out0,
                 const at::Tensor& out1) {
  std::vector<double> total0(g.channels), total1(g.channels);
  reduce_per_channel(kind, args, g, total0.data(), total1.data());
  if (out0.scalar_type() == at::kDouble) {
    std::copy(total0.begin(), total0.end(), out0.data_ptr<double>());
    std::copy(total1.begin(), total1.end(), out1.data_ptr<double>());
  } else {
    std::transform(total0.begin(), total0.end(), out0.data_ptr<float>(),
                   [](double v) { return static_cast<float>(v); });
    std::transform(total1.begin(), total1.end(), out1.data_ptr<float>(),
                   [](double v) { return static_cast<float>(v); });
  }
}

Args raw_args(Activation f, const at::Tensor& x, const at::Tensor* grad_output, void* out,
              std::initializer_list<const void*> per_channel, const Geometry& g) {
  Args args{x.scalar_type(), f, g.channels, g.inner, x.const_data_ptr(),
            grad_output ? grad_output->const_data_ptr() : nullptr, out, {}};
  int i = 0;
  for (const void* p : per_channel) {
    args.per_channel[i++] = p;
  }
  return args;
}

// The elementwise passes, in parallel; every element is computed the same way wherever the pieces
// fall.
void map_all(Map kind, const Args& args, const Geometry& g) {
  const MapFn fn = kernels().map;
  const int64_t C = g.channels;
  if (g.inner == 1) {  // whole positions
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / C);
    at::parallel_for(0, g.outer, grain, [&](int64_t o0, int64_t o1) {
      fn(kind, args, Span{o0 * C, o1 * C, 0, 1});
    });
    return;
  }
  const int64_t rows = g.outer * C;
  if (g.inner >= kChunk) {
    const int64_t pieces = ceil_div(g.inner, kChunk);
    at::parallel_for(0, rows * pieces, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r = k / pieces, begin = (k % pieces) * kChunk;
        fn(kind, args, Span{r, r + 1, begin, std::min(g.inner, begin + kChunk)});
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / g.inner);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    fn(kind, args, Span{r0, r1, 0, g.inner});
  });
}

}  // namespace

void stats(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& factor,
           const Geometry& g, const at::Tensor& sum, const at::Tensor& sumsq) {
  const at::Tensor x = in_storage(x_in, storage_for(x_in, shift.scalar_type()));
  Prepared p;
  prepare(p, Activation::Swish, x, nullptr, nullptr, {&shift, &factor}, g);
  reduce_into(Reduce::Stats, p.args, g, sum, sumsq);
}

void forward(Activation f, const at::Tensor& x_in, const at::Tensor& scale,
             const at::Tensor& shift, const Geometry& g, const at::Tensor& y) {
  const at::ScalarType storage = storage_for(x_in, scale.scalar_type());
  const at::Tensor x = in_storage(x_in, storage);
  const at::Tensor out = storage == y.scalar_type() ? y : at::empty_like(x);
  Prepared p;
  prepare(p, f, x, nullptr, out.data_ptr(), {&scale, &shift}, g);
  map_all(Map::Forward, p.args, g);
  if (!out.is_same(y)) {
    y.copy_(out);
  }
}

void backward_reduce(Activation f, const at::Tensor& grad_output, const at::Tensor& x_in,
                     const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
                     const Geometry& g, const at::Tensor& sum_dz, const at::Tensor& sum_dz_xmu) {
  const at::ScalarType storage = storage_for(x_in, scale.scalar_type());
  const at::Tensor x = in_storage(x_in, storage);
  const at::Tensor dy = in_storage(grad_output, storage);
  Prepared p;
  prepare(p, f, x, &dy, nullptr, {&scale, &shift, &mean}, g);
  reduce_into(Reduce::Backward, p.args, g, sum_dz, sum_dz_xmu);
}

void backward_input(Activation f, const at::Tensor& grad_output, const at::Tensor& x_in,
                    const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& coef_dz,
                    const at::Tensor& coef_z, const at::Tensor& coef_0, const Geometry& g,
                    const at::Tensor& grad_input) {
  const at::ScalarType storage = storage_for(x_in, scale.scalar_type());
  const at::Tensor x = in_storage(x_in, storage);
  const at::Tensor dy = in_storage(grad_output, storage);
  const at::Tensor out = storage == grad_input.scalar_type() ? grad_input : at::empty_like(x);
  Prepared p;
  prepare(p, f, x, &dy, out.data_ptr(), {&scale, &shift, &coef_dz, &coef_z, &coef_0}, g);
  map_all(Map::BackwardInput, p.args, g);
  if (!out.is_same(grad_input)) {
    grad_input.copy_(out);
  }
}

void stats_raw(const at::Tensor& x, const void* shift, const void* factor, const Geometry& g,
               double* sum, double* sumsq) {
  reduce_per_channel(Reduce::Stats, raw_args(Activation::Swish, x, nullptr, nullptr, {shift, factor}, g),
                     g, sum, sumsq);
}

void forward_raw(Activation f, const at::Tensor& x, const void* scale, const void* shift,
                 const Geometry& g, const at::Tensor& y) {
  map_all(Map::Forward, raw_args(f, x, nullptr, y.data_ptr(), {scale, shift}, g), g);
}

void backward_reduce_raw(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                         const void* scale, const void* shift, const void* mean, const Geometry& g,
                         double* sum_dz, double* sum_dz_xmu) {
  reduce_per_channel(Reduce::Backward, raw_args(f, x, &grad_output, nullptr, {scale, shift, mean}, g),
                     g, sum_dz, sum_dz_xmu);
}

void backward_input_raw(Activation f, const at::Tensor& grad_output, const at::Tensor& x,
                        const void* const per_channel[5], const Geometry& g,
                        const at::Tensor& grad_input) {
  const void* const* p = per_channel;
  map_all(Map::BackwardInput,
          raw_args(f, x, &grad_output, grad_input.data_ptr(), {p[0], p[1], p[2], p[3], p[4]}, g), g);
}

}  // namespace swishkernels::cpu::bn
