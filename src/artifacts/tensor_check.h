// The one conversion every typed artifact loader (ICV, harm vector, soft prompts, risk probe, gate,
// LoRA, expert weights) reads its tensors through: the stored dtype must be a floating-point type,
// every value finite and within kMaxArtifactMagnitude, or the load is refused naming the file and the
// tensor (an ICV stored as I32, or holding 1e30, is a corrupt or foreign file, not a strength).
#pragma once
#include <torch/torch.h>

#include <string>

namespace safedec {

struct SafetensorsTensor;

// No trained artifact holds a value this large (hidden-state differences, task vectors, LoRA
// factors, probe weights and model weights are all orders of magnitude below it).
constexpr double kMaxArtifactMagnitude = 1e6;

// True for the dtypes artifacts may be stored in: F32, F16, BF16, F64.
bool artifact_dtype_supported(const SafetensorsTensor& t);

// `t` (tensor of the safetensors file `path`) as an fp32 CPU tensor of its shape; throws
// safedec::Error naming `path` and the tensor when its dtype is not supported, or when a value is
// NaN, infinite or beyond kMaxArtifactMagnitude.
torch::Tensor artifact_tensor_f32(const SafetensorsTensor& t, const std::string& path);

// The value checks alone, for a tensor already in memory (`what` names it, e.g. "tensor 'icv' in F").
void check_artifact_values(const torch::Tensor& x, const std::string& what);

}  // namespace safedec
