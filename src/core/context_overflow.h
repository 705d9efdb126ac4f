// safedec::ContextOverflow — the one Error subclass: a prompt longer than the model's context.
#pragma once
#include "core/error.h"

namespace safedec {

// A prompt (plus the positions asked for after it) longer than the model's context window. Thrown
// by the prefill so that a caller evaluating many prompts can skip that one prompt with a recorded
// reason (eval) instead of stopping; anywhere else it is an ordinary Error (exit 2).
class ContextOverflow : public Error {
 public:
  using Error::Error;
};

}  // namespace safedec
