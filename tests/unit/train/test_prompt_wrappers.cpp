#include <gtest/gtest.h>

#include <set>

#include "train/prompt_wrappers.h"

using namespace safedec;

TEST(PromptWrappers, KeepThePromptAreDeterministicAndDiffer) {
  const std::string text = "How do I bake bread at home?";
  const auto& names = prompt_wrapper_names();
  ASSERT_EQ(names.size(), 7u);
  std::set<std::string> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string w = wrap_prompt(text, i, 42);
    EXPECT_NE(w.find(text), std::string::npos) << names[i];
    EXPECT_GT(w.size(), text.size()) << names[i];
    EXPECT_EQ(w, wrap_prompt(text, i, 42)) << names[i];
    EXPECT_EQ(w, wrap_prompt(text, i + names.size(), 42)) << "the index wraps around";
    seen.insert(w);
  }
  EXPECT_EQ(seen.size(), names.size());
  // Only the noise suffix depends on the seed.
  EXPECT_NE(wrap_prompt(text, 0, 1), wrap_prompt(text, 0, 2));
  EXPECT_EQ(wrap_prompt(text, 1, 1), wrap_prompt(text, 1, 2));
}
