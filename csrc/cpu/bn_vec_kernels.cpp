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
using cpu::CPU_CAPABILITY::fast_activation_backward;
using cpu::CPU_CAPABILITY::fast_activation_forward;
using cpu::CPU_CAPABILITY::Wide;

// Accumulation: each term is computed in the math type (float for fp32/fp16/bf16 x) and summed in
// it over short blocks, kBlock terms per lane (sum1's products through an fma, rounded once); each
// block sum is then widened to double and added to double accumulators: per float vector and sum,
// one add instead of two conversions and two double adds. Float sums over a whole pass are not
// accurate enough: channel sums cancel (sum(x - shift), shift being one sample of the channel), and
// float accumulators flushed to double every 32 terms per lane put a sum of 1173 terms of size ~2
// that came to ~2 off by 9e-5. A block of 4 adds at most 3 roundings of partial sums to a term's
// own (tests/test_cpp_bn_swish_ops.py bounds the error by the sum of the terms' magnitudes). Sums
// are taken in an order fixed by the span, and bn_swish.cpp derives spans from the shape, so they
// do not depend on the number of threads.
constexpr int kBlock = 4;

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
  static_assert(kChannelPad % N == 0);

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
  // A whole unit with its elements in an order of its own, for sums over all of them: bf16 as its
  // even and its odd elements (a shift and a mask instead of ATen's widening of each half).
  static C10_ALWAYS_INLINE Unit load_any_order(const scalar_t* p) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      const __m512i v = _mm512_loadu_si512(p);
      return Unit{{_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)),
                   _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(0xFFFF0000)))}};
    }
#elif defined(CPU_CAPABILITY_AVX2)
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return Unit{{_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                   _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF0000)))}};
    }
#endif
    return load(p);
  }
  // Lanes past count hold unspecified values.
  static C10_ALWAYS_INLINE Unit load(const scalar_t* p, int64_t count) {
    return convert(Vec::loadu(p, count));
  }
  // kNativeBf16: bf16 through the AVX512-BF16 instruction (see native_bf16 below).
  template <bool kNativeBf16 = false>
  static C10_ALWAYS_INLINE Vec pack(const Unit& u) {
    if constexpr (kReduced) {
#if defined(CPU_CAPABILITY_AVX512)
      if constexpr (kNativeBf16 && std::is_same_v<scalar_t, c10::BFloat16>) {
        __m512i out;  // lanes 0-15 from v[0], 16-31 from v[1]
        asm("vcvtne2ps2bf16 %2, %1, %0" : "=v"(out) : "v"(__m512(u.v[1])), "v"(__m512(u.v[0])));
        return Vec(out);
      }
#endif
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

// The two sums of one stream of math vectors: block sums in the math type, running sums in double.
template <typename M>
struct Sums {
  using D = Vectorized<double>;
  static constexpr int W = Wide<typename M::value_type>::W;
  M block0, block1;
  D total0[W], total1[W];

  C10_ALWAYS_INLINE Sums() : block0(typename M::value_type(0)), block1(typename M::value_type(0)) {
    for (int w = 0; w < W; ++w) {
      total0[w] = total1[w] = D(0.0);
    }
  }
  // sum0 += a, sum1 += a * b (lane by lane).
  C10_ALWAYS_INLINE void add(const M& a, const M& b) {
    block0 = block0 + a;
    block1 = at::vec::fmadd(a, b, block1);
  }
  // Ends the block: its sums go to the double totals.
  C10_ALWAYS_INLINE void flush() {
    D w0[W], w1[W];
    Wide<typename M::value_type>::apply(block0, w0);
    Wide<typename M::value_type>::apply(block1, w1);
    for (int w = 0; w < W; ++w) {
      total0[w] = total0[w] + w0[w];
      total1[w] = total1[w] + w1[w];
    }
    block0 = block1 = M(typename M::value_type(0));
  }
};

// The activation's f and dy * f': activations.h's formulas, for float math with the inlined exp
// (vec_math.h).
template <Activation A, typename M>
C10_ALWAYS_INLINE M activation_forward(const M& z) {
  if constexpr (std::is_same_v<M, Vectorized<float>>) {
    return fast_activation_forward<A>(z);
  } else {
    return A == Activation::Swish ? math::swish_forward(z) : math::mish_forward(z);
  }
}

template <Activation A, typename M>
C10_ALWAYS_INLINE M activation_backward(const M& dy, const M& z) {
  if constexpr (std::is_same_v<M, Vectorized<float>>) {
    return fast_activation_backward<A>(dy, z);
  } else {
    return A == Activation::Swish ? math::swish_backward(dy, z) : math::mish_backward(dy, z);
  }
}

// The formulas, on math vectors. p: the per-channel values in Args::per_channel order.
// Reductions: terms (a, b) of sum0 = sum a, sum1 = sum a * b.
// The factor is a power of two (exact): it keeps d^2 finite for inputs near 1e20 (fp32), whose
// square would overflow the float terms.
struct StatsTerm {
  static constexpr int kParams = 2;
  static constexpr bool kUsesGrad = false;
  template <typename M>
  static C10_ALWAYS_INLINE void apply(const M* p, const M& x, const M&, M& a, M& b) {
    a = b = (x - p[0]) * p[1];
  }
};

template <Activation A>
struct BackwardTerm {
  static constexpr int kParams = 3;
  static constexpr bool kUsesGrad = true;
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

// The lanes of v, summed in a fixed order.
C10_ALWAYS_INLINE double fold(const Vectorized<double>& v) {
  using D = Vectorized<double>;
  __at_align__ double lanes[D::size()];
  v.store(lanes);
  double part[2] = {0, 0};
  for (int64_t j = 0; j < D::size(); ++j) {
    part[j % 2] += lanes[j];
  }
  return part[0] + part[1];
}

// Adds the terms of one unit (count of its elements; the lanes past count add nothing when kMask)
// to sums[k], one stream per math vector k.
template <typename scalar_t, typename Term, bool kMask = false>
C10_ALWAYS_INLINE void add_unit(const typename Io<scalar_t>::M* p, int64_t p_stride,
                                const typename Io<scalar_t>::Unit& xu,
                                const typename Io<scalar_t>::Unit& du,
                                Sums<typename Io<scalar_t>::M>* sums, int64_t count = 0) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  for (int k = 0; k < IO::K; ++k) {
    M a, b;
    Term::apply(p + k * p_stride, xu.v[k], du.v[k], a, b);
    if constexpr (kMask) {
      const M zero(typename IO::math_t(0));
      a = M::set(zero, a, IO::lanes(count, k));
      b = M::set(zero, b, IO::lanes(count, k));
    }
    sums[k].add(a, b);
  }
}

// inner > 1: the sums along n contiguous elements of one channel, whose values p are broadcast.
// Two units per step, each with its own sums, so that two dependency chains (and exps) are in
// flight; every kBlock terms per lane the blocks are flushed to double.
template <typename scalar_t, typename Term>
void reduce_run(const typename Io<scalar_t>::M* p, const scalar_t* x, const scalar_t* dy, int64_t n,
                double& total0, double& total1) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using Unit = typename IO::Unit;
  constexpr int K = IO::K;
  constexpr int64_t N = IO::N;
  constexpr int kSteps = kBlock;  // steps per block: each stream takes one term per lane a step
  // Stream (slot, k) for slot 0/1 (which unit of the step) and the unit's math vector k. The
  // broadcast p serves every k (stride 0).
  Sums<M> sums[2][K];
  auto unit = [&](int64_t i, int slot) C10_ALWAYS_INLINE_ATTRIBUTE {  // x and dy in the same order
    const Unit xu = IO::load_any_order(x + i);
    add_unit<scalar_t, Term>(p, 0, xu, Term::kUsesGrad ? IO::load_any_order(dy + i) : xu,
                             sums[slot]);
  };
  int64_t i = 0;
  while (i + 2 * N <= n) {
    int step = 0;
    for (; step < kSteps && i + 2 * N <= n; ++step, i += 2 * N) {
      unit(i, 0);
      unit(i + N, 1);
    }
    for (int k = 0; k < K; ++k) {
      sums[0][k].flush();
      sums[1][k].flush();
    }
  }
  if (i + N <= n) {
    unit(i, 0);
    i += N;
  }
  if (i < n) {
    const int64_t rest = n - i;
    const Unit xu = IO::load(x + i, rest);
    add_unit<scalar_t, Term, true>(p, 0, xu, Term::kUsesGrad ? IO::load(dy + i, rest) : xu,
                                   sums[1], rest);
  }
  using D = Vectorized<double>;
  D sum0(0.0), sum1(0.0);
  for (int slot = 0; slot < 2; ++slot) {
    for (int k = 0; k < K; ++k) {
      Sums<M>& s = sums[slot][k];
      s.flush();
      for (int w = 0; w < Sums<M>::W; ++w) {
        sum0 = sum0 + s.total0[w];
        sum1 = sum1 + s.total1[w];
      }
    }
  }
  total0 += fold(sum0);
  total1 += fold(sum1);
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

// inner == 1: whole positions. One or two units of channels at a time (N each, fewer at the end of
// the row), down the span's positions (stride C), with per-lane sums in registers: lane j of stream
// k is channel c + k * F + j.
template <typename scalar_t, typename Term>
void reduce_positions(const Args& a, const Span& s, int64_t first, double* out0, double* out1) {
  using IO = Io<scalar_t>;
  using M = typename IO::M;
  using Unit = typename IO::Unit;
  using D = Vectorized<double>;
  constexpr int K = IO::K;
  constexpr int64_t N = IO::N;
  constexpr int64_t F = IO::F;
  constexpr int W = Sums<M>::W;
  const Pointers<scalar_t, Term> ptr(a);
  const int64_t C = a.channels;
  const int64_t p0 = s.row0 / C, p1 = s.row1 / C;
  // kPair: the units at c and c + N (whole), one set of sums each, one position a step (memory read
  // in order where C is small); otherwise the unit at c, two positions a step with a set each.
  auto channels = [&]<bool kFull, bool kPair>(int64_t c, int64_t count) {
    constexpr int U = kPair ? 2 : 1;  // units of channels
    M p[U][K * Term::kParams];        // p[u][k * kParams + i]: per-channel values i of stream k
    for (int u = 0; u < U; ++u) {
      for (int k = 0; k < K; ++k) {
        for (int i = 0; i < Term::kParams; ++i) {  // padded by the caller past C
          p[u][k * Term::kParams + i] = M::loadu(ptr.pc[i] + c + u * N + k * F);
        }
      }
    }
    Sums<M> sums[2][K];
    auto unit = [&](int64_t o, int slot, int u) C10_ALWAYS_INLINE_ATTRIBUTE {
      const int64_t at = o * C + c + u * N;
      // Lanes past count: unspecified values, whose sums are never read out.
      const Unit xu = kFull ? IO::load(ptr.x + at) : IO::load(ptr.x + at, count);
      Unit du = xu;
      if constexpr (Term::kUsesGrad) {
        du = kFull ? IO::load(ptr.dy + at) : IO::load(ptr.dy + at, count);
      }
      add_unit<scalar_t, Term>(p[u], Term::kParams, xu, du, sums[slot]);
    };
    constexpr int64_t kStep = kPair ? 1 : 2;  // positions a step
    int64_t o = p0;
    while (o + kStep <= p1) {
      for (int step = 0; step < kBlock && o + kStep <= p1; ++step, o += kStep) {
        unit(o, 0, 0);
        unit(kPair ? o : o + 1, 1, kPair ? 1 : 0);
      }
      for (int k = 0; k < K; ++k) {
        sums[0][k].flush();
        sums[1][k].flush();
      }
    }
    if (o < p1) {
      unit(o, 0, 0);
    }
    for (int k = 0; k < K; ++k) {
      sums[0][k].flush();
      sums[1][k].flush();
      for (int u = 0; u < U; ++u) {
        __at_align__ double lanes0[F], lanes1[F];
        for (int w = 0; w < W; ++w) {
          const Sums<M>& a0 = sums[u][k];
          D t0 = a0.total0[w], t1 = a0.total1[w];
          if constexpr (!kPair) {
            t0 = t0 + sums[1][k].total0[w];
            t1 = t1 + sums[1][k].total1[w];
          }
          t0.store(lanes0 + w * D::size());
          t1.store(lanes1 + w * D::size());
        }
        const int64_t base = c + u * N + k * F - first;
        for (int64_t j = 0; j < IO::lanes(count, k); ++j) {
          out0[base + j] += lanes0[j];
          out1[base + j] += lanes1[j];
        }
      }
    }
  };
  int64_t c = 0;
  if constexpr (K == 1) {  // fp16/bf16 units already take 64 bytes (AVX512) and two streams
    for (; c + 2 * N <= C; c += 2 * N) {
      channels.template operator()<true, true>(c, N);
    }
  }
  for (; c + N <= C; c += N) {
    channels.template operator()<true, false>(c, N);
  }
  if (c < C) {
    channels.template operator()<false, false>(c, C - c);
  }
}

template <typename scalar_t, typename Op, bool kNative>
C10_ALWAYS_INLINE typename Io<scalar_t>::Vec compute(const typename Io<scalar_t>::M* p,
                                                     const typename Io<scalar_t>::Unit& xu,
                                                     const typename Io<scalar_t>::Unit& du) {
  typename Io<scalar_t>::Unit y;
  for (int k = 0; k < Io<scalar_t>::K; ++k) {
    y.v[k] = Op::apply(p, xu.v[k], du.v[k]);
  }
  return Io<scalar_t>::template pack<kNative>(y);
}

// inner > 1: along each row with the channel's values broadcast; two units per iteration, as in
// vec_kernels.cpp's map.
template <typename scalar_t, typename Op, bool kNative>
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
      return compute<scalar_t, Op, kNative>(p, xu, Op::kUsesGrad ? IO::load(dy + i) : xu);
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
      compute<scalar_t, Op, kNative>(p, xu, Op::kUsesGrad ? IO::load(dy + i, rest) : xu)
          .store(out + i, static_cast<int>(rest));
    }
  }
}

// inner == 1: across the channels of each position, the per-channel values loaded as vectors.
template <typename scalar_t, typename Op, bool kNative>
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
    return IO::template pack<kNative>(y);
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

// Whether this CPU converts float to bf16 in one instruction (AVX512-BF16: Zen 4, Sapphire Rapids),
// which the AVX512 copy then uses for its bf16 outputs instead of ATen's integer rounding (about
// 16 instructions per 32 elements, a third of the forward pass's time in bf16). Same round to
// nearest even, same results except that float subnormals (below 1.2e-38) become zero.
bool native_bf16() {
#if defined(CPU_CAPABILITY_AVX512)
  static const bool supported = __builtin_cpu_supports("avx512bf16");
  return supported;
#else
  return false;
#endif
}

template <typename scalar_t, typename Op>
void map_span(const Args& a, const Span& s) {
  auto run = [&]<bool kNative>() {
    if (a.inner == 1) {
      map_positions<scalar_t, Op, kNative>(a, s);
    } else {
      map_rows<scalar_t, Op, kNative>(a, s);
    }
  };
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    if (native_bf16()) {
      return run.template operator()<true>();
    }
  }
  run.template operator()<false>();
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
