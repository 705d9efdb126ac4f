// Matrix-vector products straight from ggml block-quantised weights (no fp32 copy of the weights):
// y[m, n] = sum_k x[m, k] W[n, k] for a few activation rows x (decoding), with W stored row by row
// in one of the GGUF block formats Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K.
//
// Numerics. Each activation row is quantised once per call to int16 (x ~ d q, d = max|x| / 32767
// over the block, q = round-to-nearest(x / d); qmax 127 instead gives one int8 level's precision,
// quant_linear's $SAFEDEC_QUANT_ACT=int8 mode) in the block format its weight type needs:
//  * 32-element types (Q4_0, Q4_1, Q5_0, Q8_0): ActBlock, one scale per 32;
//  * K-quants (Q4_K, Q6_K): KActBlock, one scale per 256-element super-block.
// A weight block's contribution is then an exact integer dot of its quants with q (u x int16 by
// vpmaddwd into int32), scaled in fp32 by the block scales:
//   Q4_0  d_w d_x sum (u - 8) x_q                 u = nibble
//   Q4_1  d_w d_x sum u x_q + m_w d_x S
//   Q5_0  d_w d_x sum (u - 16) x_q                u = nibble | high bit << 4
//   Q8_0  d_w d_x sum w x_q
//   Q4_K  d_x sum_j (d sc_j) (sum_j u x_q)  -  sum_j (dmin m_j) (d_x S_j)   8 sub-blocks j of 32
//   Q6_K  d_x sum_g (d sc_g) (sum_g (u - 32) x_q)                           16 groups g of 16
// with S = sum q of the activation block (S_j: over sub-block j; d_x S and d_x S_j are stored in
// the blocks as ds). Each inner sum is one exact int32, converted to fp32 once per 32-element block
// / sub-block (Q6_K: per pair of groups) and multiplied by the fp32 scales; for the K-quants the
// activation scale is applied once per super-block. Integer sums are exact, so the only differences
// between the reference and the SIMD kernels are in the order of the fp32 operations. The error
// against the fp32 path (dequantised weights times fp32 x) comes from the activation rounding:
// |x - d q| <= d / 2 per element, i.e. 1/65534 of the largest |x| of the block (32 elements for the
// legacy types, 256 for the K-quants) — as precise as two int8 levels (x ~ d1 q1 + d2 q2, the
// scheme this replaced), in one pass; one int8 level (llama.cpp's scheme) is 1/254.
//
// Kernels: a plain C++ reference (the oracle), and AVX2, AVX-512 (AVX-512BW/VL: the AVX2 code with
// 32 vector registers) and AVX-512-VNNI versions of one SIMD body, picked at run time. The int16
// kernels use vpmaddwd on all three (AVX-512-VNNI's u8 x s8 vpdpbusd does not apply to int16).
#pragma once
#include <cstddef>
#include <cstdint>

#include "io/gguf.h"

namespace safedec {
namespace quant {

constexpr int64_t kActBlock = 32;

// Activations are stored in the kernels' order: within each 32 elements, the second and third groups
// of 8 are swapped (element e is at k_act_pos(e)), the order in which vpunpck{l,h}bw widens 32
// weight bytes to two vectors of 16 int16.
constexpr int k_act_pos(int e) {
  return (e & ~31) | ((((e >> 3) & 3) == 1 ? 2 : ((e >> 3) & 3) == 2 ? 1 : ((e >> 3) & 3)) << 3) | (e & 7);
}

// One block of 32 activations quantised to int16 (for the 32-element weight types).
struct alignas(32) ActBlock {
  int16_t q[32];  // in kernel order (k_act_pos)
  float d;        // x ~ d * q
  float ds;       // d * (sum of q), the Q4_1 offset term's factor
};

// Quantises x[0, K) (K a multiple of 32) into K / 32 blocks, d = max|x| / qmax per block (qmax
// 32767: int16; 127: the precision of one int8 level).
void quantize_activations(const float* x, int64_t K, ActBlock* out, int qmax = 32767);

constexpr int64_t kKActBlock = 256;

// One super-block of 256 activations quantised to int16 (for the K-quant weight types), q in kernel
// order (k_act_pos within each 32).
struct alignas(32) KActBlock {
  int16_t q[256];
  float ds[8];  // d * (sum of q over sub-block j = elements [32 j, 32 j + 32))
  float d;      // x ~ d * q
};

// Quantises x[0, K) (K a multiple of 256) into K / 256 super-blocks, d = max|x| / qmax
// (qmax 32767: int16; 127: the precision of one int8 level).
void quantize_activations_k(const float* x, int64_t K, KActBlock* out, int qmax = 32767);

// Whether this weight type multiplies KActBlock rows (Q4_K, Q6_K) rather than ActBlock rows.
bool uses_k_activations(GgmlType type);

// Whether W of this type can be multiplied directly (else the caller dequantises it).
bool kernel_supported(GgmlType type);

enum class Isa { Reference = 0, Avx2 = 1, Avx512 = 2, Avx512Vnni = 3 };
const char* isa_name(Isa isa);
// Best kernel this CPU runs ($SAFEDEC_QUANT_ISA = reference | avx2 | avx512 | avx512vnni caps it).
Isa best_isa();
bool isa_available(Isa isa);

// Weight rows [n0, n1) of a row-major block-quantised matrix W (row n at W + n * row_bytes, K
// elements) against M activation rows: A (row m at A + m * (K / 32)) for the 32-element types, AK
// (row m at AK + m * (K / 256)) for the K-quants (uses_k_activations): Y[m * ldy + n] = dot.
struct QuantGemv {
  GgmlType type;
  const uint8_t* W;
  size_t row_bytes;
  int64_t K;
  const ActBlock* A;
  int64_t M;
  float* Y;
  int64_t ldy;
  const KActBlock* AK = nullptr;
};
void gemv_rows(Isa isa, const QuantGemv& p, int64_t n0, int64_t n1);

// The SIMD variants (quant_kernels_<isa>.cpp); each returns false for a type it does not handle.
bool gemv_rows_avx2(const QuantGemv& p, int64_t n0, int64_t n1);
bool gemv_rows_avx512(const QuantGemv& p, int64_t n0, int64_t n1);
bool gemv_rows_avx512vnni(const QuantGemv& p, int64_t n0, int64_t n1);

}  // namespace quant
}  // namespace safedec
