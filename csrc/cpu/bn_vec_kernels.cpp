// Vectorized loops of the fused BatchNorm + activation (Swish, Mish) CPU kernels (bn_vec_kernels.h), in the namespace
// of the CPU capability this copy is compiled for. Built without capability flags, it is the
// portable DEFAULT.
//
// Like vec_kernels.cpp, this file has no error paths and no inline code of its own outside the
// capability namespace (everything is in an anonymous namespace inside it), so an AVX-compiled
// copy cannot be handed by the linker to code that runs on every CPU.
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#endif

#include "cpu/bn_vec_kernels.h"

#include <type_traits>

#include "cpu/vec_math.h"

namespace swishkernels::cpu::bn::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Accumulation: each term is computed in the math type, as the formulas need it (float for
// fp32/fp16/bf16 x), then widened to double and summed in double vectors: as precise as the scalar
// double accumulators these loops replaced (the products of sum1 take the float factors, whose
// product is exact in double, through an fma). Float accumulators flushed to double every 32 terms
// per lane were faster (8x64x80x80 fp32, one thread: stats 0.22 vs 0.37 ms, backward reduce 2.1 vs
// 2.5 ms) but not accurate enough: channel sums cancel (sum(x - shift), shift being one sample of
// the channel), and in tests/test_native_bn.py's (3, 37, 17, 23) case a sum of 1173 terms of size
// ~2 that came to ~2 was off by 9e-5. Sums are taken in an order fixed by the span, and
// bn_swish.cpp derives spans from the shape, so they do not depend on the number of threads.
//
// inner == 1: channels per group of per-channel accumulators (kept on the stack).
constexpr int64_t kGroup = 256;

C10_ALWAYS_INLINE int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Storage <-> math. A unit is one Vectorized<scalar_t> of storage, K vectors of math: fp16/bf16
// are computed as two float vectors, as in vec_kernels.cpp.
template <typename scalar_t>
struct Io {
  static constexpr bool kReduced = c10::is_reduced_floating_point_v<scalar_t>;
  using math_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  using Vec = Vectorized<scalar_t>;
  using M = Vectorized<math_t>;
  static constexpr int K = kReduced ? 2 : 1;
  static constexpr int64_t N = Vec::size();  // elements per unit
  static constexpr int64_t F = M::size();    // elements per math vector
  static_assert(N == K * F);
  static_assert(kChannelPad % N == 0 && kGroup % N == 0);

  struct Unit {
    M v[K];
  };

  static C10_ALWAYS_INLINE Unit convert(const Vec& raw) {
    if constexpr (kReduced) {
      const auto [a, b] = at::vec::convert_to_float<scalar_t>(raw);
      return Unit{{a, b}};
    } else {
      return Unit{{raw}};
    }
  }
  static C10_ALWAYS_INLINE Unit load(const scalar_t* p) { return convert(Vec::loadu(p)); }
  // Lanes past count hold unspecified values.
  static C10_ALWAYS_INLINE Unit load(const scalar_t* p, int64_t count) {
    return convert(Vec::loadu(p, count));
  }
  static C10_ALWAYS_INLINE Vec pack(const Unit& u) {
    if constexpr (kReduced) {
      return at::vec::convert_from_float<scalar_t>(u.v[0], u.v[1]);
    } else {
      return u.v[0];
    }
  }
  // Lanes of math vector k of a unit that hold one of the first `count` elements.
  static C10_ALWAYS_INLINE int64_t lanes(int64_t count, int k) {
    const int64_t n = count - k * F;
    return n < 0 ? 0 : (n > F ? F : n);
  }
};

// Math vectors as double vectors: W of them per math vector, in lane order.
template <typename math_t>
struct Wide;

template <>
struct Wide<double> {
  static constexpr int W = 1;
  static C10_ALWAYS_INLINE void apply(const Vectorized<double>& v, Vectorized<double> (&out)[1]) {
    out[0] = v;
  }
};

template <>
struct Wide<float> {
  static constexpr int W = 2;
  static_assert(Vectorized<float>::size() == 2 * Vectorized<double>::size());
  static C10_ALWAYS_INLINE void apply(const Vectorized<float>& v, Vectorized<double> (&out)[2]) {
#if defined(CPU_CAPABILITY_AVX512)
    const __m512 x = v;
    out[0] = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    out[1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
#elif defined(CPU_CAPABILITY_AVX2)
    const __m256 x = v;
    out[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    out[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
#else
    constexpr int64_t F = Vectorized<float>::size();
    __at_align__ float f[F];
    __at_align__ double d[F];
    v.store(f);
    for (int64_t j = 0; j < F; ++j) {
      d[j] = static_cast<double>(f[j]);
    }
    out[0] = Vectorized<double>::loadu(d);
    out[1] = Vectorized<double>::loadu(d + F / 2);
#endif
  }
};

// sum0 += a, sum1 += a * b (lane by lane, in double).
template <typename M>
C10_ALWAYS_INLINE void accumulate(const M& a, const M& b, Vectorized<double>* sum0,
                                  Vectorized<double>* sum1) {
  using WideT = Wide<typename M::value_type>;
  Vectorized<double> aw[WideT::W], bw[WideT::W];
  WideT::apply(a, aw);
  WideT::apply(b, bw);
  for (int w = 0; w < WideT::W; ++w) {
    sum0[w] = sum0[w] + aw[w];
    sum1[w] = at::vec::fmadd(aw[w], bw[w], sum1[w]);
  }
}

// The formulas, on math vectors. p: the per-channel values in Args::per_channel order.
// Reductions: terms (a, b) of sum0 = sum a, sum1 = sum a * b.
// kRowStep: positions per step of reduce_positions, the faster of 1, 2 and 4 on an AVX512 AMD EPYC
// (4 halves the stats pass; 2 or 4 slow the exp-bound backward pass at large sizes).
// The factor is a power of two (exact): it keeps d^2 finite for inputs near 1e20 (fp32), whose
// square would overflow the float terms.
struct StatsTerm {
  static constexpr int kParams = 2;
  static constexpr bool kUsesGrad = false;
  static constexpr int kRowStep = 4;
  template <typename M>
  static C10_ALWAYS_INLINE void apply(const M* p, const M& x, const M&, M& a, M& b) {
    a = b = (x - p[0]) * p[1];
  }
};

// f and dy * f' of the activation applied after the normalisation (activations.h).
template <Activation A, typename M>
C10_ALWAYS_INLINE M activation_forward(const M& z) {
  if constexpr (A == Activation::Swish) {
    return math::swish_forward(z);
  } else {
    return math::mish_forward(z);
  }
}

template <Activation A, typename M>
C10_ALWAYS_INLINE M activation_backward(const M& dy, const M& z) {
  if constexpr (A == Activation::Swish) {
    return math::swish_backward(dy, z);
  } else {
    return math::mish_backward(dy, z);
  }
}

template <Activation A>
struct BackwardTerm {
  static constexpr int kParams = 3;
  static constexpr bool kUsesGrad = true;
  static constexpr int kRowStep = 1;
  template <typename M>
  static C10_ALWAYS_INLINE void apply(const M* p, const M& x, const M& dy, M& a, M& b) {
    a = activation_backward<A>(dy, x * p[0] + p[1]);
    b = x - p[2];
  }
};

template <Activation A>
struct ForwardMap {
  static constexpr int kParams = 2;
  static constexpr bool kUsesGrad = false;
  template <typename M>
  static C10_ALWAYS_INLINE M apply(const M* p, const M& x, const M&) {
    return activation_forward<A>(x * p[0] + p[1]);
  }
};

template <Activation A>
struct BackwardInputMap {
  static constexpr int kParams = 5;
  static constexpr bool kUsesGrad = true;
  template <typename M>
  static C10_ALWAYS_INLINE M apply(const M* p, const M& x, const M& dy) {
    const M z = x * p[0] + p[1];
    return p[2] * activation_backward<A>(dy, z) + p[3] * z + p[4];
  }
};

// Typed views of Args.
template <typename scalar_t, typename Formula>
struct Pointers {
  using math_t = typename Io<scalar_t>::math_t;
  const scalar_t* x;
  const scalar_t* dy;  // x where the formula has no grad_output (loaded, never used)
  scalar_t* out;
  const math_t* pc[Formula::kParams];

  explicit Pointers(const Args& a)
      : x(static_cast<const scalar_t*>(a.x)),
        dy(Formula::kUsesGrad ? static_cast<const scalar_t*>(a.grad_output) : x),
        out(static_cast<scalar_t*>(a.out)) {
    for (int i = 0; i < Formula::kParams; ++i) {
      pc[i] = static_cast<const math_t*>(a.per_channel[i]);
    }
  }
};

// The lanes of acc[0] + ... + acc[U-1], summed in a fixed order.
template <int U>
C10_ALWAYS_INLINE double fold(const Vectorized<double> (&acc)[U]) {
  using D = Vectorized<double>;
  D sum = acc[0];
  for (int u = 1; u < U; ++u) {
    sum = sum + acc[u];
  }
  __at_align__ double lanes[D::size()];
  sum.store(lanes);
  double part[2] = {0, 0};
  for (int64_t j = 0; j < D::size(); ++j) {
    part[j % 2] += lanes[j];
  }
  return part[0] + part[1];
}

// inner > 1: the sums along n contiguous elements of one channel, whose values p are broadcast.
template <typename scalar_t, typename Term>
void reduce_run(const typename Io<scalar_t>::M* p, const scalar_t* x, const scalar_t* dy, int64_t n,
                double& total0, double& total1) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using D = Vectorized<double>;
  using Unit = typename IO::Unit;
  constexpr int K = IO::K;
  constexpr int64_t N = IO::N;
  constexpr int W = Wide<typename IO::math_t>::W;
  // Two units per iteration, each with its own accumulators, so that two dependency chains (and
  // exps) are in flight.
  D acc0[2 * W], acc1[2 * W];
  for (int u = 0; u < 2 * W; ++u) {
    acc0[u] = acc1[u] = D(0.0);
  }
  auto add = [&](const Unit& xu, const Unit& du, int slot, int64_t count) {
    for (int k = 0; k < K; ++k) {
      M a, b;
      Term::apply(p, xu.v[k], du.v[k], a, b);
      if (count < N) {  // the partial tail: lanes past the run add nothing
        const M zero(typename IO::math_t(0));
        a = M::set(zero, a, IO::lanes(count, k));
        b = M::set(zero, b, IO::lanes(count, k));
      }
      accumulate(a, b, acc0 + slot * W, acc1 + slot * W);
    }
  };
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const Unit x0 = IO::load(x + i), x1 = IO::load(x + i + N);
    if constexpr (Term::kUsesGrad) {
      add(x0, IO::load(dy + i), 0, N);
      add(x1, IO::load(dy + i + N), 1, N);
    } else {
      add(x0, x0, 0, N);
      add(x1, x1, 1, N);
    }
  }
  if (i + N <= n) {
    const Unit xu = IO::load(x + i);
    add(xu, Term::kUsesGrad ? IO::load(dy + i) : xu, 0, N);
    i += N;
  }
  if (i < n) {
    const int64_t rest = n - i;
    const Unit xu = IO::load(x + i, rest);
    add(xu, Term::kUsesGrad ? IO::load(dy + i, rest) : xu, 1, rest);
  }
  total0 += fold(acc0);
  total1 += fold(acc1);
}

template <typename scalar_t, typename Term>
void reduce_rows(const Args& a, const Span& s, int64_t first, double* out0, double* out1) {
  using M = typename Io<scalar_t>::M;
  const Pointers<scalar_t, Term> ptr(a);
  for (int64_t r = s.row0; r < s.row1; ++r) {
    const int64_t c = r % a.channels;
    M p[Term::kParams];
    for (int i = 0; i < Term::kParams; ++i) {
      p[i] = M(ptr.pc[i][c]);
    }
    const int64_t offset = r * a.inner + s.i0;
    double total0 = 0, total1 = 0;
    reduce_run<scalar_t, Term>(p, ptr.x + offset, ptr.dy + offset, s.i1 - s.i0, total0, total1);
    out0[c - first] += total0;
    out1[c - first] += total1;
  }
}

// inner == 1: whole positions; per-channel double sums in arrays of up to kGroup channels, added to
// the outputs at the end. Positions are taken Term::kRowStep at a time, their terms added together
// (in double) before they go to the arrays.
template <typename scalar_t, typename Term>
void reduce_positions(const Args& a, const Span& s, int64_t first, double* out0, double* out1) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using D = Vectorized<double>;
  using Unit = typename IO::Unit;
  constexpr int64_t N = IO::N;
  constexpr int64_t F = IO::F;
  constexpr int W = Wide<typename IO::math_t>::W;
  constexpr int kRowStep = Term::kRowStep;
  static_assert(kRowStep == 1 || kRowStep == 2 || kRowStep == 4);  // the sums below
  const Pointers<scalar_t, Term> ptr(a);
  const int64_t C = a.channels;
  const int64_t p0 = s.row0 / C, p1 = s.row1 / C;
  for (int64_t g = 0; g < C; g += kGroup) {
    const int64_t width = imin(kGroup, C - g);
    const int64_t padded = (width + N - 1) / N * N;  // <= kGroup; lanes past width are never read out
    __at_align__ double sum0[kGroup], sum1[kGroup];
    for (int64_t j = 0; j < padded; ++j) {
      sum0[j] = sum1[j] = 0;
    }
    // Adds the terms of rows o .. o + R - 1 at channels g + c .. g + c + N - 1 (count of them
    // inside the row; the lanes past it hold unspecified values, never read out).
    auto add = [&]<int R, bool kFull>(int64_t o, int64_t c, int64_t count)
                   C10_ALWAYS_INLINE_ATTRIBUTE {
      Unit xu[R], du[R];
      for (int r = 0; r < R; ++r) {
        const int64_t at = (o + r) * C + g + c;
        xu[r] = kFull ? IO::load(ptr.x + at) : IO::load(ptr.x + at, count);
        if constexpr (Term::kUsesGrad) {
          du[r] = kFull ? IO::load(ptr.dy + at) : IO::load(ptr.dy + at, count);
        } else {
          du[r] = xu[r];
        }
      }
      for (int k = 0; k < IO::K; ++k) {
        const int64_t at = c + k * F;
        M p[Term::kParams];
        for (int i = 0; i < Term::kParams; ++i) {
          p[i] = M::loadu(ptr.pc[i] + g + at);  // padded by the caller past C
        }
        D t0[R][W], t1[R][W];
        for (int r = 0; r < R; ++r) {
          M ta, tb;
          Term::apply(p, xu[r].v[k], du[r].v[k], ta, tb);
          D bw[W];
          Wide<typename IO::math_t>::apply(ta, t0[r]);
          Wide<typename IO::math_t>::apply(tb, bw);
          for (int w = 0; w < W; ++w) {
            t1[r][w] = t0[r][w] * bw[w];  // exact for float factors
          }
        }
        for (int w = 0; w < W; ++w) {
          D a0 = t0[0][w], a1 = t1[0][w];
          if constexpr (R == 2) {
            a0 = a0 + t0[1][w];
            a1 = a1 + t1[1][w];
          } else if constexpr (R == 4) {
            a0 = (a0 + t0[1][w]) + (t0[2][w] + t0[3][w]);
            a1 = (a1 + t1[1][w]) + (t1[2][w] + t1[3][w]);
          }
          double* s0 = sum0 + at + w * D::size();
          double* s1 = sum1 + at + w * D::size();
          (D::loadu(s0) + a0).store(s0);
          (D::loadu(s1) + a1).store(s1);
        }
      }
    };
    auto rows = [&]<int R>(int64_t o) C10_ALWAYS_INLINE_ATTRIBUTE {
      int64_t c = 0;
      for (; c + N <= width; c += N) {
        add.template operator()<R, true>(o, c, N);
      }
      if (c < width) {
        add.template operator()<R, false>(o, c, width - c);
      }
    };
    int64_t o = p0;
    for (; o + kRowStep <= p1; o += kRowStep) {
      rows.template operator()<kRowStep>(o);
    }
    for (; o < p1; ++o) {
      rows.template operator()<1>(o);
    }
    for (int64_t j = 0; j < width; ++j) {
      out0[g + j - first] += sum0[j];
      out1[g + j - first] += sum1[j];
    }
  }
}

template <typename scalar_t, typename Op>
C10_ALWAYS_INLINE typename Io<scalar_t>::Vec compute(const typename Io<scalar_t>::M* p,
                                                     const typename Io<scalar_t>::Unit& xu,
                                                     const typename Io<scalar_t>::Unit& du) {
  typename Io<scalar_t>::Unit y;
  for (int k = 0; k < Io<scalar_t>::K; ++k) {
    y.v[k] = Op::apply(p, xu.v[k], du.v[k]);
  }
  return Io<scalar_t>::pack(y);
}

// inner > 1: along each row with the channel's values broadcast; two units per iteration, as in
// vec_kernels.cpp's map.
template <typename scalar_t, typename Op>
void map_rows(const Args& a, const Span& s) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using Unit = typename IO::Unit;
  constexpr int64_t N = IO::N;
  const Pointers<scalar_t, Op> ptr(a);
  for (int64_t r = s.row0; r < s.row1; ++r) {
    const int64_t c = r % a.channels;
    M p[Op::kParams];
    for (int i = 0; i < Op::kParams; ++i) {
      p[i] = M(ptr.pc[i][c]);
    }
    const int64_t offset = r * a.inner + s.i0;
    const scalar_t* x = ptr.x + offset;
    const scalar_t* dy = ptr.dy + offset;
    scalar_t* out = ptr.out + offset;
    const int64_t n = s.i1 - s.i0;
    auto unit = [&](int64_t i) {
      const Unit xu = IO::load(x + i);
      return compute<scalar_t, Op>(p, xu, Op::kUsesGrad ? IO::load(dy + i) : xu);
    };
    int64_t i = 0;
    for (; i + 2 * N <= n; i += 2 * N) {
      const auto y0 = unit(i);
      const auto y1 = unit(i + N);
      y0.store(out + i);
      y1.store(out + i + N);
    }
    for (; i + N <= n; i += N) {
      unit(i).store(out + i);
    }
    if (i < n) {
      const int64_t rest = n - i;
      const Unit xu = IO::load(x + i, rest);
      compute<scalar_t, Op>(p, xu, Op::kUsesGrad ? IO::load(dy + i, rest) : xu)
          .store(out + i, static_cast<int>(rest));
    }
  }
}

// inner == 1: across the channels of each position, the per-channel values loaded as vectors.
template <typename scalar_t, typename Op>
void map_positions(const Args& a, const Span& s) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using Unit = typename IO::Unit;
  constexpr int64_t N = IO::N;
  const Pointers<scalar_t, Op> ptr(a);
  const int64_t C = a.channels;
  auto unit = [&](const Unit& xu, const Unit& du, int64_t c) {
    Unit y;
    for (int k = 0; k < IO::K; ++k) {
      M p[Op::kParams];
      for (int i = 0; i < Op::kParams; ++i) {
        p[i] = M::loadu(ptr.pc[i] + c + k * IO::F);  // padded by the caller past C
      }
      y.v[k] = Op::apply(p, xu.v[k], du.v[k]);
    }
    return IO::pack(y);
  };
  for (int64_t o = s.row0 / C; o < s.row1 / C; ++o) {
    const scalar_t* x = ptr.x + o * C;
    const scalar_t* dy = ptr.dy + o * C;
    scalar_t* out = ptr.out + o * C;
    int64_t c = 0;
    for (; c + N <= C; c += N) {
      const Unit xu = IO::load(x + c);
      unit(xu, Op::kUsesGrad ? IO::load(dy + c) : xu, c).store(out + c);
    }
    if (c < C) {
      const int64_t rest = C - c;
      const Unit xu = IO::load(x + c, rest);
      unit(xu, Op::kUsesGrad ? IO::load(dy + c, rest) : xu, c).store(out + c, static_cast<int>(rest));
    }
  }
}

template <typename scalar_t, typename Term>
void reduce_span(const Args& a, const Span& s, int64_t first, double* out0, double* out1) {
  if (a.inner == 1) {
    reduce_positions<scalar_t, Term>(a, s, first, out0, out1);
  } else {
    reduce_rows<scalar_t, Term>(a, s, first, out0, out1);
  }
}

template <typename scalar_t, typename Op>
void map_span(const Args& a, const Span& s) {
  if (a.inner == 1) {
    map_positions<scalar_t, Op>(a, s);
  } else {
    map_rows<scalar_t, Op>(a, s);
  }
}

}  // namespace

void reduce(Reduce kind, const Args& a, const Span& s, int64_t first_channel, double* out0,
            double* out1) {
  cpu::CPU_CAPABILITY::dispatch(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    switch (kind) {
      case Reduce::Stats:
        return reduce_span<scalar_t, StatsTerm>(a, s, first_channel, out0, out1);
      case Reduce::Backward:
        if (a.activation == Activation::Mish) {
          return reduce_span<scalar_t, BackwardTerm<Activation::Mish>>(a, s, first_channel, out0,
                                                                       out1);
        }
        return reduce_span<scalar_t, BackwardTerm<Activation::Swish>>(a, s, first_channel, out0,
                                                                      out1);
    }
  });
}

void map(Map kind, const Args& a, const Span& s) {
  cpu::CPU_CAPABILITY::dispatch(a.dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    switch (kind) {
      case Map::Forward:
        if (a.activation == Activation::Mish) {
          return map_span<scalar_t, ForwardMap<Activation::Mish>>(a, s);
        }
        return map_span<scalar_t, ForwardMap<Activation::Swish>>(a, s);
      case Map::BackwardInput:
        if (a.activation == Activation::Mish) {
          return map_span<scalar_t, BackwardInputMap<Activation::Mish>>(a, s);
        }
        return map_span<scalar_t, BackwardInputMap<Activation::Swish>>(a, s);
    }
  });
}

}  // namespace swishkernels::cpu::bn::CPU_CAPABILITY
