// CPU kernels of the fused BatchNorm + Swish ops: scalar loops split by at::parallel_for.
// Math in acc_t (the per-channel dtype), loads and stores in x's dtype.
#include "cpu/bn_swish.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE

#include <algorithm>
#include <vector>

#include "activations.h"

namespace swishkernels::cpu::bn {
namespace {

// Elements per reduction chunk (and per elementwise work item along a long inner run).
constexpr int64_t kChunk = 8192;
// Rows of at least this many elements are reduced row by row; shorter ones (channels_last has
// inner = 1) in blocks of whole [C, inner] slices.
constexpr int64_t kLongRow = 512;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls fn(c, offset, n) on runs of n elements of channel c starting at flat offset, covering the
// tensor, in parallel.
template <typename Fn>
void for_each_run(const Geometry& g, const Fn& fn) {
  const int64_t rows = g.outer * g.channels;
  if (g.inner >= kChunk) {
    const int64_t pieces = ceil_div(g.inner, kChunk);
    at::parallel_for(0, rows * pieces, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r = k / pieces, j = k % pieces;
        const int64_t begin = j * kChunk;
        fn(r % g.channels, r * g.inner + begin, std::min(kChunk, g.inner - begin));
      }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(g.inner, 1));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    int64_t c = r0 % g.channels;
    for (int64_t r = r0; r < r1; ++r) {
      fn(c, r * g.inner, g.inner);
      if (++c == g.channels) {
        c = 0;
      }
    }
  });
}

// Per channel c: out0[c] = sum of a, out1[c] = sum of b, where run(c, offset, n, a, b) adds the
// contributions of the n elements at offset (all of channel c) to the double accumulators a, b.
// Chunking depends on the shape only, and partials are combined in a fixed order.
template <typename acc_t, typename RunFn>
void reduce_per_channel(const Geometry& g, const RunFn& run, acc_t* out0, acc_t* out1) {
  const int64_t C = g.channels;
  std::vector<double> total0(C, 0.0), total1(C, 0.0);
  if (g.inner >= kLongRow) {
    const int64_t pieces = ceil_div(g.inner, kChunk);
    const int64_t items = g.outer * C * pieces;
    std::vector<double> p0(items), p1(items);
    at::parallel_for(0, items, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r = k / pieces, j = k % pieces;
        const int64_t begin = j * kChunk;
        double a = 0, b = 0;
        run(r % C, r * g.inner + begin, std::min(kChunk, g.inner - begin), a, b);
        p0[k] = a;
        p1[k] = b;
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
    // Blocks of whole [C, inner] slices along outer.
    const int64_t per_block = std::max<int64_t>(1, kChunk / (C * g.inner));
    const int64_t blocks = ceil_div(g.outer, per_block);
    std::vector<double> p0(blocks * C, 0.0), p1(blocks * C, 0.0);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double* a = p0.data() + b * C;
        double* s = p1.data() + b * C;
        const int64_t o1 = std::min(g.outer, (b + 1) * per_block);
        for (int64_t o = b * per_block; o < o1; ++o) {
          for (int64_t c = 0; c < C; ++c) {
            run(c, (o * C + c) * g.inner, g.inner, a[c], s[c]);
          }
        }
      }
    });
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t c = 0; c < C; ++c) {
        total0[c] += p0[b * C + c];
        total1[c] += p1[b * C + c];
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    out0[c] = static_cast<acc_t>(total0[c]);
    out1[c] = static_cast<acc_t>(total1[c]);
  }
}

template <typename acc_t, typename scalar_t>
inline acc_t load(scalar_t v) {
  return static_cast<acc_t>(v);
}

template <typename scalar_t, typename acc_t>
inline scalar_t store(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, double> || std::is_same_v<scalar_t, float>) {
    return static_cast<scalar_t>(v);
  } else {
    return static_cast<scalar_t>(static_cast<float>(v));
  }
}

// Runs body.template operator()<scalar_t, acc_t>() for x's dtype and the per-channel dtype.
template <typename Body>
void dispatch(const at::Tensor& x, const at::Tensor& per_channel, const Body& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bn_swish", [&] {
    if (per_channel.scalar_type() == at::kDouble) {
      body.template operator()<scalar_t, double>();
    } else {
      body.template operator()<scalar_t, float>();
    }
  });
}

}  // namespace

void stats(const at::Tensor& x, const at::Tensor& shift, const Geometry& g, const at::Tensor& sum,
           const at::Tensor& sumsq) {
  dispatch(x, shift, [&]<typename scalar_t, typename acc_t>() {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* sh = shift.const_data_ptr<acc_t>();
    auto run = [&](int64_t c, int64_t offset, int64_t n, double& a, double& b) {
      const acc_t s = sh[c];
      const scalar_t* p = xp + offset;
      double sa = 0, sb = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(load<acc_t>(p[i]) - s);
        sa += d;
        sb += d * d;
      }
      a += sa;
      b += sb;
    };
    reduce_per_channel<acc_t>(g, run, sum.data_ptr<acc_t>(), sumsq.data_ptr<acc_t>());
  });
}

void forward(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
             const Geometry& g, const at::Tensor& y) {
  dispatch(x, scale, [&]<typename scalar_t, typename acc_t>() {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const acc_t* sc = scale.const_data_ptr<acc_t>();
    const acc_t* sh = shift.const_data_ptr<acc_t>();
    for_each_run(g, [&](int64_t c, int64_t offset, int64_t n) {
      const acc_t a = sc[c], b = sh[c];
      for (int64_t i = offset; i < offset + n; ++i) {
        yp[i] = store<scalar_t>(math::swish_forward<acc_t>(load<acc_t>(xp[i]) * a + b));
      }
    });
  });
}

void backward_reduce(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& scale,
                     const at::Tensor& shift, const at::Tensor& mean, const Geometry& g,
                     const at::Tensor& sum_dz, const at::Tensor& sum_dz_xmu) {
  dispatch(x, scale, [&]<typename scalar_t, typename acc_t>() {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* dyp = grad_output.const_data_ptr<scalar_t>();
    const acc_t* sc = scale.const_data_ptr<acc_t>();
    const acc_t* sh = shift.const_data_ptr<acc_t>();
    const acc_t* mu = mean.const_data_ptr<acc_t>();
    auto run = [&](int64_t c, int64_t offset, int64_t n, double& a, double& b) {
      const acc_t k = sc[c], s = sh[c], m = mu[c];
      double sa = 0, sb = 0;
      for (int64_t i = offset; i < offset + n; ++i) {
        const acc_t xv = load<acc_t>(xp[i]);
        const acc_t dz = math::swish_backward<acc_t>(load<acc_t>(dyp[i]), xv * k + s);
        sa += static_cast<double>(dz);
        sb += static_cast<double>(dz) * static_cast<double>(xv - m);
      }
      a += sa;
      b += sb;
    };
    reduce_per_channel<acc_t>(g, run, sum_dz.data_ptr<acc_t>(), sum_dz_xmu.data_ptr<acc_t>());
  });
}

void backward_input(const at::Tensor& grad_output, const at::Tensor& x, const at::Tensor& scale,
                    const at::Tensor& shift, const at::Tensor& coef_dz, const at::Tensor& coef_x,
                    const at::Tensor& coef_0, const Geometry& g, const at::Tensor& grad_input) {
  dispatch(x, scale, [&]<typename scalar_t, typename acc_t>() {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* dyp = grad_output.const_data_ptr<scalar_t>();
    scalar_t* dxp = grad_input.data_ptr<scalar_t>();
    const acc_t* sc = scale.const_data_ptr<acc_t>();
    const acc_t* sh = shift.const_data_ptr<acc_t>();
    const acc_t* cdz = coef_dz.const_data_ptr<acc_t>();
    const acc_t* cx = coef_x.const_data_ptr<acc_t>();
    const acc_t* c0 = coef_0.const_data_ptr<acc_t>();
    for_each_run(g, [&](int64_t c, int64_t offset, int64_t n) {
      const acc_t k = sc[c], s = sh[c], a = cdz[c], b = cx[c], d = c0[c];
      for (int64_t i = offset; i < offset + n; ++i) {
        const acc_t xv = load<acc_t>(xp[i]);
        const acc_t dz = math::swish_backward<acc_t>(load<acc_t>(dyp[i]), xv * k + s);
        dxp[i] = store<scalar_t>(a * dz + b * xv + d);
      }
    });
  });
}

}  // namespace swishkernels::cpu::bn
