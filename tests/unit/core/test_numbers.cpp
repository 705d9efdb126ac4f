// Strict range-checked number reading (the CLI's flag reader): no wrap, no overflow, no NaN.
#include <gtest/gtest.h>

#include <limits>

#include "core/error.h"
#include "core/numbers.h"

using namespace safedec;

TEST(Numbers, AcceptsIntegersInsideTheRange) {
  int64_t v = -7;
  EXPECT_EQ(int_range_problem("0", 0, 10, &v), "");
  EXPECT_EQ(v, 0);
  EXPECT_EQ(int_range_problem("10", 0, 10, &v), "");
  EXPECT_EQ(v, 10);
  EXPECT_EQ(int_range_problem("-3", -5, 5, &v), "");
  EXPECT_EQ(v, -3);
  EXPECT_EQ(parse_int_in_range("9223372036854775807", 0, std::numeric_limits<int64_t>::max(), "--seed"),
            std::numeric_limits<int64_t>::max());
}

TEST(Numbers, RefusesNegativesWrapAndOverflowNamingTheRange) {
  EXPECT_EQ(int_range_problem("-1", 0, 100), "must be an integer in 0..100 (got '-1')");
  EXPECT_EQ(int_range_problem("100000", 1, 8), "must be an integer in 1..8 (got '100000')");
  EXPECT_EQ(int_range_problem("0", 1, 8), "must be an integer in 1..8 (got '0')");
  // Beyond int64: out of range, not wrapped to 2^64-1 or clamped.
  EXPECT_NE(int_range_problem("99999999999999999999999", 0, std::numeric_limits<int64_t>::max()), "");
  EXPECT_NE(int_range_problem("18446744073709551615", 0, std::numeric_limits<int64_t>::max()), "");
  EXPECT_NE(int_range_problem("9223372036854775808", 0, std::numeric_limits<int64_t>::max()), "");
  try {
    parse_int_in_range("-1", 0, 5, "--limit");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--limit must be an integer in 0..5 (got '-1')");
  }
}

TEST(Numbers, RefusesTextThatIsNotAPlainDecimalInteger) {
  for (const char* bad : {"", "-", "+3", " 3", "3 ", "0x10", "1e3", "2.0", "3abc", "1_000", "--1"})
    EXPECT_NE(int_range_problem(bad, -100, 100000), "") << "'" << bad << "'";
  EXPECT_NE(int_range_problem(std::string(500, '9'), 0, 10).size(), 0u);
  // The echo of an absurd argument is shortened.
  EXPECT_LT(int_range_problem(std::string(500, '9'), 0, 10).size(), 120u);
}

TEST(Numbers, RealsMustBeFiniteAndInsideTheInterval) {
  double v = 0;
  EXPECT_EQ(real_range_problem("0.5", 0, 1, false, false, &v), "");
  EXPECT_DOUBLE_EQ(v, 0.5);
  EXPECT_EQ(real_range_problem("1e-3", 0, 1), "");
  EXPECT_EQ(real_range_problem("1", 0, 1), "");
  EXPECT_NE(real_range_problem("1", 0, 1, false, true), "");   // [0, 1)
  EXPECT_NE(real_range_problem("0", 0, 1, true, false), "");   // (0, 1]
  EXPECT_NE(real_range_problem("-0.1", 0, 1), "");
  for (const char* bad : {"nan", "NaN", "inf", "-inf", "1e400", "0x1p3", "", " 1", "1,5", "abc"})
    EXPECT_NE(real_range_problem(bad, -1e9, 1e9), "") << "'" << bad << "'";
  EXPECT_THROW(parse_real_in_range("nan", 0, 1, "--top-p"), Error);
}

TEST(Numbers, ThreadCountsAreCapped) {
  const int m = max_threads();
  EXPECT_GE(m, 1);
  EXPECT_LE(m, 256);
  EXPECT_NO_THROW(check_threads(1, "--threads"));
  EXPECT_NO_THROW(check_threads(m, "--threads"));
  EXPECT_THROW(check_threads(0, "--threads"), Error);
  EXPECT_THROW(check_threads(-1, "--threads"), Error);
  EXPECT_THROW(check_threads(m + 1, "--threads"), Error);
  EXPECT_THROW(check_threads(100000, "--threads"), Error);
}
