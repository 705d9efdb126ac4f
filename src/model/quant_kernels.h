// Matrix-vector products straight from ggml block-quantised weights (no fp32 copy of the weights):
// y[m, n] = sum_k x[m, k] W[n, k] for a few activation rows x (decoding), with W stored row by row
// in one of the GGUF block formats Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K.
//
// Numerics. Each activation row is quantised once per call (x ~ d q, d = max|x| / qmax over the
// block, q = round-to-nearest(x / d)) in the block format its weight type needs:
//  * 32-element types (Q4_0, Q4_1, Q5_0, Q8_0): ActBlock, int8 (qmax 127), one scale per 32 and the
//    integer sums of q over each half (llama.cpp's Q8_0/Q8_1 scheme);
//  * K-quants (Q4_K, Q6_K): KActBlock, int16 (qmax 32767; 127 for quant_linear's one-level int8
//    mode), one scale per 256-element super-block.
// A weight block's contribution is then an exact integer dot of its (unsigned, offset) quants with
// q, scaled in fp32 by the block scales:
//   Q4_0  d_w (sum u x_q - 8 S) d_x               u = nibble
//   Q4_1  d_w (sum u x_q) d_x + m_w S d_x
//   Q5_0  d_w (sum u x_q - 16 S) d_x              u = nibble | high bit << 4
//   Q8_0  d_w (sum (w + 128) x_q - 128 S) d_x     (the unsigned offset lets u8 x s8 instructions work)
//   Q4_K  d_x sum_j (d sc_j) (sum_j u x_q)  -  sum_j (dmin m_j) (d_x S_j)   8 sub-blocks j of 32
//   Q6_K  d_x sum_g (d sc_g) (sum_g (u - 32) x_q)                           16 groups g of 16
// with S = sum q of the activation block (S_j: over sub-block j; d_x S_j is stored in KActBlock::ds).
// For the K-quants each inner sum is one exact int32 (u x int16: vpmaddwd), converted to fp32 once
// per sub-block (Q4_K) or pair of groups (Q6_K) and multiplied by the fp32 weight scale; the
// activation scale is applied once per super-block. Integer sums are exact, so the only
// differences between the reference and the SIMD kernels are in the order of the fp32 operations.
// The error against the fp32 path (dequantised weights times fp32 x) comes from the activation
// rounding: |x - d q| <= d / 2 per element, i.e. 1/254 of the largest |x| of the 32-element block
// for the int8 types and 1/65534 of the largest |x| of the 256-element block for the K-quants
// (quant_linear() adds a second int8 level for the 32-element types to get ~1/64000 there too).
//
// Kernels: a plain C++ reference (the oracle), and AVX2, AVX-512 (AVX-512BW/VL: the AVX2 code with
// 32 vector registers) and AVX-512-VNNI (vpdpbusd for the 32-element types; the K-quants use the
// same vpmaddwd code there) versions of one SIMD body, picked at run time.
#pragma once
#include <cstddef>
#include <cstdint>

#include "io/gguf.h"

namespace safedec {
namespace quant {

constexpr int64_t kActBlock = 32;

// One int8-quantised block of 32 activations.
struct ActBlock {
  float d;         // x ~ d * q
  float ds[2];     // d * sum[0], d * sum[1] (the offset terms' factors, precomputed once per block)
  int16_t sum[2];  // sum of q[0..15] and of q[16..31]
  int8_t q[32];
};

// Quantises x[0, K) (K a multiple of 32) into K / 32 blocks.
void quantize_activations(const float* x, int64_t K, ActBlock* out);

constexpr int64_t kKActBlock = 256;

// One super-block of 256 activations quantised to int16 (for the K-quant weight types). q is stored
// in the kernels' order: within each 32 elements, the second and third groups of 8 are swapped
// (element e is at k_act_pos(e)), which is the order in which vpunpck{l,h}bw widens 32 weight bytes.
struct alignas(32) KActBlock {
  int16_t q[256];
  float ds[8];  // d * (sum of q over sub-block j = elements [32 j, 32 j + 32))
  float d;      // x ~ d * q
};
constexpr int k_act_pos(int e) {
  return (e & ~31) | ((((e >> 3) & 3) == 1 ? 2 : ((e >> 3) & 3) == 2 ? 1 : ((e >> 3) & 3)) << 3) | (e & 7);
}

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
