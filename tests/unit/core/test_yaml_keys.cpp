// YamlKeys: known keys are read, unknown ones and wrong types are errors with FILE:LINE:COLUMN.
#include <gtest/gtest.h>

#include "core/yaml_keys.h"
#include "support/error_of.h"

using namespace safedec;
using safedec::testing_support::error_of;
using safedec::testing_support::kNoError;

TEST(YamlKeys, ReadsKnownKeysAndNamesUnknownOnesWithPosition) {
  YAML::Node n = YAML::Load("alpha: 0.25\nname: x\nalhpa: 3\n");
  YamlKeys k(n, "c.yaml", "the test config");
  double alpha = 0;
  std::string name, absent = "kept";
  k.read("alpha", alpha);
  k.read("name", name);
  k.read("absent", absent);
  EXPECT_DOUBLE_EQ(alpha, 0.25);
  EXPECT_EQ(name, "x");
  EXPECT_EQ(absent, "kept");
  EXPECT_FALSE(k.get("missing"));
  const std::string m = error_of([&] { k.finish(); });
  EXPECT_NE(m.find("c.yaml:3:1: unknown key `alhpa` in the test config"), std::string::npos) << m;
  EXPECT_NE(m.find("allowed keys: alpha, name, absent, missing"), std::string::npos) << m;
}

TEST(YamlKeys, WrongTypesNonMappingsAndOptionalNodes) {
  YAML::Node n = YAML::Load("top_k: many\n");
  YamlKeys k(n, "c.yaml", "`generation`");
  int top_k = 0;
  const std::string m = error_of([&] { k.read("top_k", top_k); });
  EXPECT_NE(m.find("c.yaml:1:8: `generation` key `top_k` has a value of the wrong type ('many')"), std::string::npos)
      << m;
  EXPECT_NE(error_of([] { YamlKeys(YAML::Load("[1, 2]"), "l.yaml", "the list"); }).find("must be a YAML mapping"),
            std::string::npos);
  YAML::Node root = YAML::Load("a: 1\n");
  YamlKeys absent(root["steer"], "s.yaml", "`steer`", /*optional=*/true);  // an absent sub-mapping reads as empty
  std::string icv = "none";
  absent.read("icv", icv);
  EXPECT_EQ(icv, "none");
  EXPECT_NO_THROW(absent.finish());
  YamlKeys null_node(YAML::Load("~"), "s.yaml", "`steer`", true);
  EXPECT_NO_THROW(null_node.finish());
}
