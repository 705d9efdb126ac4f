// Test helper: the message of the safedec::Error a callable throws.
#pragma once
#include <functional>
#include <string>

#include "core/error.h"

namespace safedec::testing_support {

// What error_of returns when nothing was thrown.
inline const char* const kNoError = "<no safedec::Error thrown>";

// Runs f; returns the what() of the safedec::Error it throws, or kNoError.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return kNoError;
}

}  // namespace safedec::testing_support
