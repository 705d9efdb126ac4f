// Adversarial-style wrappers for training prompts: the risk probe should read what a prompt asks for,
// not its surface. Each wrapper re-frames a prompt the way jailbreaks do in general (a gibberish
// suffix, fiction, nested role play, an unrestricted persona, a forced affirmative prefix, a research
// framing, a hypothetical); they are written for this project, not taken from any evaluation set.
// The risk probe's `data.augment: wrappers` adds wrapped copies of harmful AND benign training prompts
// with their original labels, so a wrapper alone never decides the label.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace safedec {

// Names of the wrappers, in the order wrap_prompt indexes them.
const std::vector<std::string>& prompt_wrapper_names();
// `text` inside wrapper `index` (modulo the count); `seed` drives the random parts (the suffix noise).
// Deterministic for equal arguments.
std::string wrap_prompt(const std::string& text, size_t index, uint64_t seed);

}  // namespace safedec
