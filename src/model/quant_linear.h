// QuantWeight: a linear layer's weight [N, K] kept in its GGUF block format (one or more row
// segments, each of one ggml type: a fused q|k|v or gate|up matrix may mix types), and
// quant_linear(), y = x W^T + b computed from it on the CPU:
//  * up to kQuantGemvMaxRows rows of x (decoding): the integer kernels of quant_kernels.h, with
//    the activations quantised to int16 (blocks of 32 for the legacy types, 256 for the K-quants),
//    so y differs from the fp32 path by about 1/65000 of each block's largest activation
//    ($SAFEDEC_QUANT_ACT=int8: int8 precision, ~1/254, as llama.cpp does), split over
//    at::get_num_threads() threads by weight rows (quant_linear's own pool: at::parallel_for does
//    not run in parallel in code built without -fopenmp);
//  * more rows (prefill): tiles of W dequantised to fp32 (exactly the fp32 path's weights) and
//    multiplied by ATen's GEMM.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "model/quant_kernels.h"

namespace safedec {

constexpr int64_t kQuantGemvMaxRows = 16;

class QuantWeight {
 public:
  struct Segment {
    GgmlType type;
    int64_t row0 = 0, rows = 0;  // rows [row0, row0 + rows) of the whole matrix
    size_t row_bytes = 0;
    std::vector<uint8_t> data;  // rows * row_bytes
  };

  explicit QuantWeight(int64_t cols) : cols_(cols) {}
  // Appends the rows of a GGUF tensor (ne[0] must equal cols). With heads > 0 the rows are
  // reordered as llama.cpp's Q/K permutation is undone (rows viewed [heads, head_dim / 2, 2] ->
  // [heads, 2, head_dim / 2]), so the matrix is in Hugging Face's rotate-half order.
  void append(const GgufTensorInfo& t, const std::string& file, int64_t heads = 0, int64_t head_dim = 0);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const std::vector<Segment>& segments() const { return segments_; }
  size_t nbytes() const;
  std::string describe() const;  // e.g. "Q4_K[1536+256] Q6_K[256]"
  // The whole matrix (or rows [row0, row0 + n)) dequantised to fp32.
  torch::Tensor dequantize() const;
  void dequantize_rows(int64_t row0, int64_t n, float* out) const;

 private:
  int64_t cols_;
  int64_t rows_ = 0;
  std::vector<Segment> segments_;
};

// Activation precision of the decode path: 2 (default: int16, as precise as two int8 levels;
// $SAFEDEC_QUANT_ACT=int16 or int8x2) or 1 ($SAFEDEC_QUANT_ACT=int8: one int8 level's precision).
int quant_activation_levels();

// Whether every GGUF tensor given can be kept quantised (its type has a kernel, its rows hold whole
// 32-element blocks).
bool quant_weight_supported(const GgufTensorInfo& t);

// y = x W^T (+ b) for x [..., K] fp32 on the CPU. Throws safedec::Error if autograd would need a
// gradient through it (quantised weights are for inference; train with weights: fp32).
torch::Tensor quant_linear(const torch::Tensor& x, const QuantWeight& w, const torch::Tensor& b = {},
                           quant::Isa isa = quant::best_isa());

}  // namespace safedec
