// Fused CPU row kernels (see row_kernels.h). Each row is handled in a few linear passes over its V values
// with fp32 accumulation in chunks (kSumChunk); the per-element math is the SAFEDEC_HD functions of
// *_math.h, the same ones the CUDA kernels call.
//
//  - softmax: pass 1 max + NaN/inf check, pass 2 exp(l - max), pass 3 its sum, pass 4 scale by 1 / sum
//    (each pass a simple loop the compiler vectorises; exp is the branch-free exp_nonpositive).
//  - NGSD (methods.md 1, step B): softmax of both rows, one pass for TV distance and argmax p_b, the LIF
//    update; only if the gate fires: top-64 thresholds of both rows (bounded heaps, no sort) and one pass
//    computing the union-mixed score and its argmax (membership = prob_key >= the row's 64th largest key).
//  - SafeDecoding (methods.md 4): sorted top lists of both rows, walked depth by depth; an element joins
//    C = top_k(p_b) ∩ top_k(p_e) at depth max(rank_b, rank_e) + 1, so the walk stops at the first k with
//    |C| >= c, which is exactly where the spec's "k += 1, recompute" loop stops. The lists start 64 deep and
//    double (re-selected from scratch, O(V) each) only if the walk runs off their end.
//  - Steering (methods.md 3b): one pass for x.x, v.v, x.v (and |x + alpha v|^2), one pass writing a x + b v.
#include "kernels/row_kernels.h"

#include <algorithm>
#include <functional>

#include "kernels/contrastive_math.h"
#include "kernels/logit_math.h"
#include "kernels/ngsd_math.h"
#include "kernels/safedecoding_math.h"
#include "kernels/steering_math.h"

namespace safedec {

const char* kernel_status_phrase(KernelStatus status) {
  switch (status) {
    case KernelStatus::kOk: return "no error";
    case KernelStatus::kNanInput: return "NaN";
    case KernelStatus::kInfInput: return "infinite value";
    case KernelStatus::kNoFiniteLogit: return "no finite logit (every value is -inf)";
    case KernelStatus::kBadArgument: return "invalid argument (size, stride or a non-finite parameter)";
    case KernelStatus::kCudaError: return "CUDA error";
  }
  return "unknown kernel status";
}

KernelResult first_failure(const int32_t* row_status, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    if (row_status[r] != 0) return {static_cast<KernelStatus>(row_status[r]), r};
  }
  return {};
}

namespace {

bool finite(float x) { return is_finite_value(x); }

// Sum of f(x) over x in [0, n), accumulated in fp32 per chunk of kSumChunk, then the chunk sums in fp32.
template <typename F>
float chunked_sum(int64_t n, F&& f) {
  float total = 0.0f;
  for (int64_t c0 = 0; c0 < n; c0 += kSumChunk) {
    const int64_t c1 = std::min(n, c0 + kSumChunk);
    float part = 0.0f;
    for (int64_t x = c0; x < c1; ++x) part += f(x);
    total += part;
  }
  return total;
}

// Writes p / sum(p) (the vocabulary-renormalised row used for sampling).
void write_renormalised(const float* p, int64_t n, float* out) {
  const float sum = chunked_sum(n, [&](int64_t x) { return p[x]; });
  for (int64_t x = 0; x < n; ++x) out[x] = p[x] / sum;
}

}  // namespace

KernelStatus softmax_row(const float* logits, int64_t n, float* p) {
  if (n <= 0) return KernelStatus::kBadArgument;
  // Pass 1: max and a NaN/+inf flag, in kLanes independent lanes so the compiler can vectorise it.
  constexpr int kLanes = 8;
  float lane_max[kLanes];
  int lane_bad[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    lane_max[j] = -INFINITY;
    lane_bad[j] = 0;
  }
  const int64_t n_main = n - n % kLanes;
  for (int64_t x = 0; x < n_main; x += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float l = logits[x + j];
      lane_bad[j] |= !(l < INFINITY);  // true for NaN and +inf
      lane_max[j] = l > lane_max[j] ? l : lane_max[j];
    }
  }
  for (int64_t x = n_main; x < n; ++x) {
    lane_bad[0] |= !(logits[x] < INFINITY);
    lane_max[0] = logits[x] > lane_max[0] ? logits[x] : lane_max[0];
  }
  float row_max = -INFINITY;
  bool suspicious = false;
  for (int j = 0; j < kLanes; ++j) {
    row_max = lane_max[j] > row_max ? lane_max[j] : row_max;
    suspicious |= lane_bad[j] != 0;
  }
  if (suspicious) {
    KernelStatus st = KernelStatus::kOk;
    for (int64_t x = 0; x < n; ++x) st = worse_status(st, classify_logit(logits[x]));
    return st;
  }
  if (row_max == -INFINITY) return KernelStatus::kNoFiniteLogit;
  // Pass 2: the numerators (a pure element-wise map).
  for (int64_t x = 0; x < n; ++x) p[x] = softmax_numerator(logits[x], row_max);
  // Pass 3: their sum, fp32 in lanes within chunks of kSumChunk, chunk sums added in order.
  float sum = 0.0f;
  for (int64_t c0 = 0; c0 < n; c0 += kSumChunk) {
    const int64_t c1 = std::min(n, c0 + kSumChunk);
    const int64_t c_main = c0 + (c1 - c0) - (c1 - c0) % kLanes;
    float lane_sum[kLanes] = {};
    for (int64_t x = c0; x < c_main; x += kLanes) {
      for (int j = 0; j < kLanes; ++j) lane_sum[j] += p[x + j];
    }
    float part = 0.0f;
    for (int64_t x = c_main; x < c1; ++x) part += p[x];
    for (int j = 0; j < kLanes; ++j) part += lane_sum[j];
    sum += part;
  }
  // Pass 4: scale. sum >= 1 (the maximum contributes exp(0) = 1), so 1 / sum is finite.
  const float inv_sum = 1.0f / sum;
  for (int64_t x = 0; x < n; ++x) p[x] = softmax_prob(p[x], inv_sum);
  return KernelStatus::kOk;
}

int64_t argmax_row(const float* values, int64_t n) {
  int64_t best = 0;
  for (int64_t x = 1; x < n; ++x) {
    if (values[x] > values[best]) best = x;  // strict: the first of equal maxima wins
  }
  return best;
}

uint64_t kth_largest_key(const float* p, int64_t n, int64_t k, std::vector<uint64_t>& heap) {
  heap.resize(static_cast<size_t>(k));
  for (int64_t x = 0; x < k; ++x) heap[static_cast<size_t>(x)] = prob_key(p[x], x);
  std::make_heap(heap.begin(), heap.end(), std::greater<uint64_t>());  // min-heap: front = k-th largest
  uint64_t threshold = heap.front();
  float threshold_value = p[prob_key_index(threshold)];
  for (int64_t x = k; x < n; ++x) {
    if (p[x] < threshold_value) continue;  // the common case once the heap holds large values
    const uint64_t key = prob_key(p[x], x);
    if (key <= threshold) continue;  // an equal value at a higher index ranks after the threshold
    std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    heap.back() = key;
    std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    threshold = heap.front();
    threshold_value = p[prob_key_index(threshold)];
  }
  return threshold;
}

void top_keys_sorted(const float* p, int64_t n, int64_t k, std::vector<uint64_t>& keys) {
  if (k <= 256) {  // a small bounded heap is cheapest
    kth_largest_key(p, n, k, keys);
    std::sort(keys.begin(), keys.end(), std::greater<uint64_t>());
    return;
  }
  // Deep lists (SafeDecoding with a disagreeing expert): bucket the values by the top 12 bits of their bit
  // pattern (p >= 0, so 8 exponent + 4 mantissa bits, ordered like the values), find the lowest bucket b
  // such that buckets >= b hold at least k elements, and select among those only. Every top-k element is in
  // them: the buckets above b hold fewer than k elements, and everything below b is smaller.
  constexpr int kBuckets = 4096;
  uint32_t hist[kBuckets] = {};
  for (int64_t x = 0; x < n; ++x) ++hist[float_bits(p[x] + 0.0f) >> 19];
  int64_t above = 0;
  int b = kBuckets - 1;
  for (; b > 0 && above + hist[b] < k; --b) above += hist[b];
  const uint32_t min_bits = static_cast<uint32_t>(b) << 19;
  keys.clear();
  for (int64_t x = 0; x < n; ++x) {
    if (float_bits(p[x] + 0.0f) >= min_bits) keys.push_back(prob_key(p[x], x));
  }
  std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
  keys.resize(static_cast<size_t>(k));
  std::sort(keys.begin(), keys.end(), std::greater<uint64_t>());
}

KernelStatus contrastive_row(const ContrastiveArgs& a, int64_t r) {
  const float* sp = a.l_sp + r * a.sp_stride;
  const float* ap = a.l_ap + r * a.ap_stride;
  float* out = a.out + r * a.out_stride;
  const float alpha = a.alpha[r * a.alpha_stride];
  if (!finite(alpha) || !(a.temperature > 0.0f) || a.temperature == INFINITY) return KernelStatus::kBadArgument;
  // Hot loop without branches so it vectorises: NaN and +inf only set a flag; the rare bad row is
  // classified in a second pass.
  uint32_t bad = 0;
  const float t = a.temperature;
  const int64_t n = a.vocab;  // (a local bound: stores through `out` could alias a.vocab)
  for (int64_t x = 0; x < n; ++x) {
    const float s = sp[x];
    const float q = ap[x];
    bad |= bad_logit_bit(s) | bad_logit_bit(q);
    out[x] = contrastive_logit(s, q, alpha, t);
  }
  if (!bad) return KernelStatus::kOk;
  KernelStatus st = KernelStatus::kOk;
  for (int64_t x = 0; x < a.vocab; ++x)
    st = worse_status(st, worse_status(classify_logit(sp[x]), classify_logit(ap[x])));
  return st;
}

KernelStatus ngsd_step_row(const NgsdStepArgs& a, int64_t r, RowScratch& s) {
  const int64_t n = a.vocab;
  const float alpha = a.alpha[r * a.alpha_stride];
  if (!finite(alpha) || a.gate.top_k < 1) return KernelStatus::kBadArgument;
  s.p_b.resize(static_cast<size_t>(n));
  float* pb = s.p_b.data();
  KernelStatus st = softmax_row(a.l_b + r * a.b_stride, n, pb);
  if (st != KernelStatus::kOk) return st;
  float* probs = a.probs ? a.probs + r * a.probs_stride : nullptr;

  const bool active = a.active == nullptr || a.active[r] != 0;
  if (!active) {  // gate disabled for this sequence: plain greedy on the base model, v untouched
    a.choice[r] = argmax_row(pb, n);
    a.tv[r] = 0.0f;
    a.spike[r] = 0;
    if (probs) write_renormalised(pb, n, probs);
    return KernelStatus::kOk;
  }

  s.p_e.resize(static_cast<size_t>(n));
  float* pe = s.p_e.data();
  st = softmax_row(a.l_e + r * a.e_stride, n, pe);
  if (st != KernelStatus::kOk) return st;

  // TV distance and argmax p_b in one pass.
  int64_t best_b = 0;
  const float tv_sum = chunked_sum(n, [&](int64_t x) {
    if (pb[x] > pb[best_b]) best_b = x;
    return tv_term(pb[x], pe[x]);
  });
  const float tv = 0.5f * tv_sum;
  float v = a.v[r];
  const bool spike = lif_step(v, tv, a.gate);
  a.v[r] = v;
  a.tv[r] = tv;
  a.spike[r] = spike ? 1 : 0;
  if (!spike) {
    a.choice[r] = best_b;
    if (probs) write_renormalised(pb, n, probs);
    return KernelStatus::kOk;
  }

  // C = top_k(p_b) U top_k(p_e): x is in C iff one of its keys reaches that row's k-th largest key.
  const int64_t k = std::min(a.gate.top_k, n);
  const uint64_t kb = kth_largest_key(pb, n, k, s.top_b);
  const uint64_t ke = kth_largest_key(pe, n, k, s.top_e);
  float best = -INFINITY;
  int64_t best_x = 0;
  const float score_sum = chunked_sum(n, [&](int64_t x) {
    const bool in_c = prob_key(pb[x], x) >= kb || prob_key(pe[x], x) >= ke;
    const float score = in_c ? ngsd_mix(pb[x], pe[x], alpha) : pb[x];
    if (probs) probs[x] = score;
    if (score > best) {  // strict: ties keep the lowest index
      best = score;
      best_x = x;
    }
    return score;
  });
  a.choice[r] = best_x;
  if (probs) {
    for (int64_t x = 0; x < n; ++x) probs[x] = probs[x] / score_sum;
  }
  return KernelStatus::kOk;
}

KernelStatus safedecoding_row(const SafeDecodingArgs& a, int64_t r, RowScratch& s) {
  const int64_t n = a.vocab;
  const float alpha = a.params.alpha;
  if (!finite(alpha) || a.params.c < 1) return KernelStatus::kBadArgument;
  s.p_b.resize(static_cast<size_t>(n));
  s.p_e.resize(static_cast<size_t>(n));
  float* pb = s.p_b.data();
  float* pe = s.p_e.data();
  KernelStatus st = softmax_row(a.l_b + r * a.b_stride, n, pb);
  if (st == KernelStatus::kOk) st = softmax_row(a.l_e + r * a.e_stride, n, pe);
  if (st != KernelStatus::kOk) return st;

  const int64_t c = std::min(a.params.c, n);
  if (s.flags.size() < static_cast<size_t>(n)) s.flags.resize(static_cast<size_t>(n), 0);
  uint8_t* flags = s.flags.data();  // bit 0: seen in the base list, bit 1: seen in the expert list
  int64_t depth_avail = 0;          // how deep the current sorted lists are
  int64_t depth = 0;                // list positions already walked
  int64_t count = 0;                // |C| at the current depth
  int64_t k = 0;
  while (k == 0) {
    // 64 deep covers an expert that mostly agrees with the base; an expert that disagrees needs a few
    // hundred (|C_k| ~ k^2 / V for unrelated rows), so the second try goes straight to 1024, then doubles.
    depth_avail = std::min(n, depth_avail == 0 ? std::max<int64_t>(64, 2 * c) : std::max<int64_t>(1024, 2 * depth_avail));
    top_keys_sorted(pb, n, depth_avail, s.top_b);
    top_keys_sorted(pe, n, depth_avail, s.top_e);
    for (; depth < depth_avail; ++depth) {
      const int64_t xb = prob_key_index(s.top_b[static_cast<size_t>(depth)]);
      if ((flags[xb] |= 1) == 3) ++count;
      const int64_t xe = prob_key_index(s.top_e[static_cast<size_t>(depth)]);
      if ((flags[xe] |= 2) == 3) ++count;
      if (count >= c) {
        k = depth + 1;
        break;
      }
    }
  }

  // q on C (every member of C is in the base list's first k entries), renormalised over C.
  float q_sum = 0.0f;  // |C| is small (about c): a plain fp32 sum
  for (int64_t i = 0; i < k; ++i) {
    const int64_t x = prob_key_index(s.top_b[static_cast<size_t>(i)]);
    if (flags[x] == 3) q_sum += safedecoding_mix(pb[x], pe[x], alpha);
  }
  float best = -INFINITY;
  int64_t best_x = 0;
  float* probs = a.probs ? a.probs + r * a.probs_stride : nullptr;
  if (probs) std::fill(probs, probs + n, 0.0f);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t x = prob_key_index(s.top_b[static_cast<size_t>(i)]);
    if (flags[x] != 3) continue;
    const float q = safedecoding_mix(pb[x], pe[x], alpha) / q_sum;
    if (probs) probs[x] = q;
    if (ranks_before(q, x, best, best_x)) {  // the list is in p_b order, not index order
      best = q;
      best_x = x;
    }
  }
  a.choice[r] = best_x;
  a.k[r] = k;
  // Leave the flags all zero for the next row: only list entries were touched.
  for (int64_t i = 0; i < depth_avail && i <= depth; ++i) {
    flags[prob_key_index(s.top_b[static_cast<size_t>(i)])] = 0;
    flags[prob_key_index(s.top_e[static_cast<size_t>(i)])] = 0;
  }
  return KernelStatus::kOk;
}

KernelStatus steer_row(const SteerArgs& a, int64_t r) {
  const float* x = a.x + r * a.x_stride;
  const float* v = a.v + r * a.v_stride;
  float* out = a.out + r * a.out_stride;
  const int64_t d = a.dim;
  if (!finite(a.alpha)) return KernelStatus::kBadArgument;
  KernelStatus st = KernelStatus::kOk;
  float xx = 0.0f, vv = 0.0f, xv = 0.0f, yy = 0.0f;  // fp32 accumulation in chunks of kSumChunk
  for (int64_t c0 = 0; c0 < d; c0 += kSumChunk) {
    const int64_t c1 = std::min(d, c0 + kSumChunk);
    float pxx = 0.0f, pvv = 0.0f, pxv = 0.0f, pyy = 0.0f;
    for (int64_t i = c0; i < c1; ++i) {
      const float xi = x[i];
      const float vi = v[i];
      if (!finite(xi) || !finite(vi)) {
        st = worse_status(st, (is_nan(xi) || is_nan(vi)) ? KernelStatus::kNanInput : KernelStatus::kInfInput);
      }
      const float yi = xi + a.alpha * vi;
      pxx += xi * xi;
      pvv += vi * vi;
      pxv += xi * vi;
      pyy += yi * yi;
    }
    xx += pxx;
    vv += pvv;
    xv += pxv;
    yy += pyy;
  }
  if (st != KernelStatus::kOk) return st;
  const SteerCoefficients k = steer_coefficients(xx, vv, xv, yy, a.alpha, a.form);
  for (int64_t i = 0; i < d; ++i) out[i] = steer_apply(x[i], v[i], k);
  return KernelStatus::kOk;
}

}  // namespace safedec
