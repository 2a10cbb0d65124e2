#pragma once
// The loops of the fused BatchNorm + Swish CPU kernels over raw pointers, with at::vec::Vectorized,
// one copy per instruction set: bn_vec_kernels.cpp is compiled once per CPU capability (setup.py
// adds the AVX2 and AVX512 copies on x86-64) into the namespace of that name, and bn_swish.cpp
// picks one at run time and splits the work across threads (see vec_kernels.h, which does the same
// for the elementwise activations).
//
// x is walked as its [outer * C, inner] view: row r holds the `inner` elements of channel r % C at
// one outer index. A Span is a piece of it. With inner > 1 (NCHW-like) the loops run along each
// row with the channel's values broadcast; with inner == 1 (channels_last) the C rows of one
// position are contiguous, and the loops run across channels, reading the per-channel values as
// vectors. Every element goes through vector instructions, tail included, so its result does not
// depend on where a span starts or ends.

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "activations.h"

namespace swishkernels::cpu::bn {

// Per-channel arrays are read in whole vectors past C: the caller pads each to a multiple of this
// many elements (with zeros).
constexpr int64_t kChannelPad = 64;

// Rows [row0, row1), elements [i0, i1) of each. With inner == 1, row0 and row1 are multiples of C
// (whole positions) and i0 = 0, i1 = 1.
struct Span {
  int64_t row0, row1, i0, i1;
};

// Raw pointers. x, grad_output and out are in `dtype` with x's layout; the per-channel arrays are in
// the math type, which is double for double x and float otherwise.
struct Args {
  c10::ScalarType dtype;
  Activation activation;  // f of the Backward, Forward and BackwardInput formulas
  int64_t channels;
  int64_t inner;
  const void* x;
  const void* grad_output;  // unused by Reduce::Stats and Map::Forward
  void* out;                // Map only
  const void* per_channel[5];
};

// Per-channel sums, in the formulas' argument order of per_channel:
//   Stats     (shift, factor):     sum d,              sum d^2,  d = (x - shift) * factor
//   Backward  (scale, shift, mean): sum dz,             sum dz * (x - mean)
//             with dz = grad_output * f'(x * scale + shift)
enum class Reduce { Stats, Backward };
// Full-size outputs:
//   Forward        (scale, shift):                         out = f(x * scale + shift)
//   BackwardInput  (scale, shift, coef_dz, coef_z, coef_0):
//                  out = coef_dz * dz + coef_z * z + coef_0, z = x * scale + shift
enum class Map { Forward, BackwardInput };

// Adds the span's sums of channel c to out0[c - first_channel] and out1[c - first_channel], in an
// order fixed by the span alone. Terms are computed in the math type and summed in double.
using ReduceFn = void (*)(Reduce, const Args&, const Span&, int64_t first_channel, double* out0,
                          double* out1);
using MapFn = void (*)(Map, const Args&, const Span&);

namespace DEFAULT {
void reduce(Reduce, const Args&, const Span&, int64_t, double*, double*);
void map(Map, const Args&, const Span&);
}  // namespace DEFAULT
namespace AVX2 {
void reduce(Reduce, const Args&, const Span&, int64_t, double*, double*);
void map(Map, const Args&, const Span&);
}  // namespace AVX2
namespace AVX512 {
void reduce(Reduce, const Args&, const Span&, int64_t, double*, double*);
void map(Map, const Args&, const Span&);
}  // namespace AVX512

}  // namespace swishkernels::cpu::bn
