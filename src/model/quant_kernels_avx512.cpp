// Quantised kernels built for AVX-512F/BW/VL (the AVX2 body with 32 vector registers and EVEX encodings); selected at run time by quant::best_isa().
// All standard headers come before the target pragma so that no inline library code is compiled
// for this target (the kernel body has internal linkage).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "model/quant_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")
#define QK_VNNI 0

namespace safedec {
namespace quant {
#include "model/quant_kernels_simd.inc"

bool gemv_rows_avx512(const QuantGemv& p, int64_t n0, int64_t n1) { return gemv_rows_simd(p, n0, n1); }

}  // namespace quant
}  // namespace safedec

#undef QK_VNNI
#pragma GCC pop_options
