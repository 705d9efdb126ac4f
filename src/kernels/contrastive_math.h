// ACD contrastive combination of two logit rows (methods.md section 2), per element:
//   out = (l_sp - alpha * l_ap) / temperature
// The same function serves SP-AP, null-AP and SP-null: callers pass the right rows. Shared by the CPU loop
// and the CUDA kernel.
#pragma once
#include "kernels/logit_math.h"

namespace safedec {

// A token masked (-inf) in either branch stays masked: the formula would otherwise give -inf + inf = NaN
// (both masked) or +inf (masked only in the subtracted branch), which would force a token that a logit
// processor had forbidden.
// Branch-free (integer selects on the bit patterns): float compares may trap, which stops GCC from
// if-converting them, so this form is what lets the CPU loop vectorise. Same value as
// "either input is -inf ? -inf : (l_sp - alpha * l_ap) / temperature".
constexpr uint32_t kNegInfBits = 0xff800000u;
SAFEDEC_HD inline float contrastive_logit(float l_sp, float l_ap, float alpha, float temperature) {
  const uint32_t sb = float_bits(l_sp), qb = float_bits(l_ap);
  const uint32_t masked = 0u - static_cast<uint32_t>((sb == kNegInfBits) | (qb == kNegInfBits));
  const uint32_t vb = float_bits((l_sp - alpha * l_ap) / temperature);
  return float_from_bits((vb & ~masked) | (kNegInfBits & masked));
}

// 1 if x is NaN or +inf (exponent all ones and not -inf), else 0; branch-free like the above.
SAFEDEC_HD inline uint32_t bad_logit_bit(float x) {
  const uint32_t b = float_bits(x);
  return static_cast<uint32_t>(((b & 0x7f800000u) == 0x7f800000u) & (b != kNegInfBits));
}

}  // namespace safedec
