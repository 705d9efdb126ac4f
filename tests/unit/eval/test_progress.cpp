// Progress bar with an injected clock and stream: plain lines at the interval, TTY redraws,
// rate and ETA arithmetic, duration formatting.
#include <gtest/gtest.h>

#include <sstream>

#include "eval/progress.h"

using namespace safedec;

TEST(Progress, FormatDuration) {
  EXPECT_EQ(ProgressBar::format_duration(0), "0s");
  EXPECT_EQ(ProgressBar::format_duration(59.4), "59s");
  EXPECT_EQ(ProgressBar::format_duration(65), "1:05");
  EXPECT_EQ(ProgressBar::format_duration(3725), "1:02:05");
  EXPECT_EQ(ProgressBar::format_duration(-1), "?");
}

TEST(Progress, PlainModePrintsAtIntervalsWithRateAndEta) {
  std::ostringstream out;
  double now = 100.0;
  ProgressOptions o;
  o.out = &out;
  o.tty = 0;
  o.plain_interval_s = 10;
  o.clock = [&] { return now; };
  {
    ProgressBar bar("advbench", 10, o);
    EXPECT_EQ(out.str(), "") << "plain mode prints nothing at start";
    now = 105;
    bar.tick(2);
    EXPECT_EQ(out.str(), "") << "before the interval: silent";
    now = 110;
    bar.tick(3, "ngsd");  // 5 of 10 after 10 s: 0.5 it/s, 10 s left
    EXPECT_EQ(out.str(), "advbench 5/10 (50%) 0.50 it/s elapsed 10s eta 10s | ngsd\n");
    now = 112;
    bar.tick(5);
    bar.finish();
    bar.tick(1);  // ignored after finish
    EXPECT_EQ(bar.done(), 10u);
  }
  EXPECT_EQ(out.str(), "advbench 5/10 (50%) 0.50 it/s elapsed 10s eta 10s | ngsd\n"
                       "advbench 10/10 (100%) 0.83 it/s elapsed 12s | ngsd\n");
}

TEST(Progress, TtyModeRedrawsInPlaceWithABar) {
  std::ostringstream out;
  double now = 0;
  ProgressOptions o;
  o.out = &out;
  o.tty = 1;
  o.bar_width = 10;
  o.clock = [&] { return now; };
  ProgressBar bar("gen", 4, o);
  now = 1;
  bar.tick();
  now = 2;
  bar.tick();
  bar.finish();
  const std::string s = out.str();
  EXPECT_NE(s.find("\rgen [..........] 0/4 (0%)"), std::string::npos) << s;
  EXPECT_NE(s.find("\rgen [##........] 1/4 (25%)"), std::string::npos) << s;
  EXPECT_NE(s.find("\rgen [#####.....] 2/4 (50%) 1.00 it/s elapsed 2s eta 2s"), std::string::npos) << s;
  EXPECT_EQ(s.back(), '\n') << "the final TTY line ends with a newline";
  EXPECT_EQ(s.find('\n'), s.size() - 1) << "only the final line ends with a newline";
}

TEST(Progress, UnknownTotalShowsCountOnly) {
  std::ostringstream out;
  double now = 0;
  ProgressOptions o;
  o.out = &out;
  o.tty = 0;
  o.clock = [&] { return now; };
  ProgressBar bar("items", 0, o);
  now = 4;
  bar.tick(8);
  bar.finish();
  EXPECT_EQ(out.str(), "items 8 2.00 it/s elapsed 4s\n");
}

TEST(Progress, SkippedItemsFillTheBarButNotTheRateAndNoDuplicateFinalLine) {
  std::ostringstream out;
  double now = 0.0;
  ProgressOptions o;
  o.out = &out;
  o.tty = 0;
  o.plain_interval_s = 10;
  o.clock = [&] { return now; };
  {
    ProgressBar bar("cell", 20, o);
    bar.skip(10, "resumed");  // finished before the resume: instant, must not inflate the rate
    now = 10;
    bar.tick(5);  // 5 real items in 10 s: 0.5 it/s, 5 left -> 10 s
    EXPECT_EQ(out.str(), "cell 15/20 (75%) 0.50 it/s elapsed 10s eta 10s | resumed\n");
    now = 20;
    bar.tick(5);
    bar.finish();  // the line at 20/20 was just printed: not repeated
  }
  EXPECT_EQ(out.str(), "cell 15/20 (75%) 0.50 it/s elapsed 10s eta 10s | resumed\n"
                       "cell 20/20 (100%) 0.50 it/s elapsed 20s | resumed\n");
}
