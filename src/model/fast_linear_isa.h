// Which SIMD code fast_linear() runs, picked at run time from the CPU. Only fast_linear.cpp and its
// tests include this (kept out of fast_linear.h, which causal_lm.h pulls into most of the build).
#pragma once

namespace safedec {

// kNone: at::linear (the plain path); kAvx2: AVX2/FMA ymm kernels; kAvx512: AVX-512F/VL (ymm one-pass
// kernels for 1-4 rows, zmm register tiles for 5-16 rows). Every level computes the same bits.
enum class FastLinearIsa : int { kNone = 0, kAvx2 = 1, kAvx512 = 2 };

// The best level this CPU supports, lowered by $SAFEDEC_FAST_LINEAR ("0": none, "avx2": at most AVX2,
// "1"/"avx512"/unset: what the CPU has; any other value is an error).
FastLinearIsa fast_linear_cpu_isa();
// The level in use now: fast_linear_cpu_isa() unless lowered by set_fast_linear_isa().
FastLinearIsa fast_linear_isa();
// Test/benchmark hook: use min(level, fast_linear_cpu_isa()) from now on (process-wide).
void set_fast_linear_isa(FastLinearIsa level);
const char* fast_linear_isa_name(FastLinearIsa level);

}  // namespace safedec
