// The non-GEMM work of one decode step (one new token per row) on raw fp32 buffers: RMSNorm, rotary
// embedding, the new keys/values written into the cache, attention of one query over the cache, the
// gated activation and residual adds. The generic layer (CausalLM::run_layer) spends ~20 ATen calls
// per layer on these; for small models at batch 1 their dispatch cost is a third of a decode step
// (experiments/runtime_speed.md), so the decode step of an inference forward runs them here instead.
// Each function is plain C++ on contiguous rows and matches the ATen formulation it replaces
// (tests/unit/model/test_decode_step.cpp checks every one against ATen, and whole decodes against the
// generic path).
#pragma once

#include <cstdint>

namespace safedec::decode_step {

// y[r, :] = w * x[r, :] / sqrt(mean(x[r, :]^2) + eps) for `rows` rows of width d (y may alias x).
void rms_norm_rows(const float* x, const float* w, float* y, int64_t rows, int64_t d, double eps);

// Rotate-half rotary embedding of `heads` heads of width hd in place: with half = hd / 2,
// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (cos/sin: [hd / 2], the row's position).
void rope_heads(float* x, const float* cos, const float* sin, int64_t heads, int64_t hd);

// The attention of one decode step for one (row, kv head) pair: `g` query heads q [g, hd] (already
// rotated; scaled here by `scale`) over keys/values [n_slots, hd] at slots lo .. last (inclusive),
// optional tanh soft-capping of the scores (softcap > 0); out [g, hd]. `scratch` holds last + 1 floats.
void attend_one(const float* q, const float* keys, const float* values, int64_t g, int64_t hd, int64_t lo,
                int64_t last, float scale, float softcap, float* scratch, float* out);

// out[i] = act(gate[i]) * up[i] (act: SiLU, or the tanh approximation of GELU when gelu_tanh).
void gated_activation(const float* gate, const float* up, float* out, int64_t n, bool gelu_tanh);

// h[i] += a[i].
void add_in_place(float* h, const float* a, int64_t n);

}  // namespace safedec::decode_step
