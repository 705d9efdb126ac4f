// scripts/fetch_models.sh on fabricated two-part models served from a local wheel directory
// (pip download --no-index --find-links): assembly in lock order, idempotence, model selection, and
// the error messages for a wrong part hash, a package pip cannot find, a wheel without the member
// and an unknown model name.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/paths.h"

namespace fs = std::filesystem;

namespace {

struct ShellResult {
  int rc;
  std::string out;  // stdout + stderr
};

ShellResult sh(const std::string& cmd) {
  ShellResult r{0, ""};
  FILE* p = popen(("( " + cmd + " ) 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// sha256 of "hello ", "world\n" and "hello world\n".
const char* kSha1 = "5e3235a8346e5a4585f8c58562f5052b8fe26a3bb122e1e96c76784964dfc461";
const char* kSha2 = "e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317";
const char* kShaAll = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
const char* kZeros = "0000000000000000000000000000000000000000000000000000000000000000";

class FetchModels : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string src = safedec::source_dir();
    script_ = src + "/scripts/fetch_models.sh";
    pip_ = src + "/.venv/bin/pip";
    python_ = src + "/.venv/bin/python";
    ASSERT_TRUE(fs::exists(script_)) << script_;
    ASSERT_TRUE(fs::exists(pip_)) << "this test needs the project venv: run scripts/setup.sh (missing " << pip_ << ")";
    dir_ = fs::temp_directory_path() / ("safedec_fetch_models_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "index");
    // Three one-member wheels; fake-part4 holds its data under the wrong member name.
    const std::string py =
        "import zipfile, sys\n"
        "d = sys.argv[1]\n"
        "for name, member, data in (('fake_part1', 'fake_part1/data/part01.bin', b'hello '),\n"
        "                           ('fake_part2', 'fake_part2/data/part02.bin', b'world\\n'),\n"
        "                           ('fake_part4', 'fake_part4/data/other.bin', b'world\\n')):\n"
        "    with zipfile.ZipFile(f'{d}/{name}-1.0-py3-none-any.whl', 'w') as z:\n"
        "        z.writestr(member, data)\n"
        "        di = f'{name}-1.0.dist-info'\n"
        "        z.writestr(di + '/METADATA', 'Metadata-Version: 2.1\\nName: ' + name.replace('_', '-') + '\\nVersion: 1.0\\n')\n"
        "        z.writestr(di + '/WHEEL', 'Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n"
        "        z.writestr(di + '/RECORD', '')\n";
    std::ofstream(dir_ / "mk.py") << py;
    const ShellResult mk = sh(python_ + " " + (dir_ / "mk.py").string() + " " + (dir_ / "index").string());
    ASSERT_EQ(mk.rc, 0) << mk.out;
    std::ofstream lock(dir_ / "models.lock");
    lock << "# fabricated models\n"
         << "model good good.bin " << kShaAll << " 12\n"
         << "part  good fake-part1==1.0 fake_part1/data/part01.bin " << kSha1 << "\n"
         << "part  good fake-part2==1.0 fake_part2/data/part02.bin " << kSha2 << "\n"
         << "model badhash badhash.bin " << kShaAll << " 12\n"
         << "part  badhash fake-part1==1.0 fake_part1/data/part01.bin " << kSha1 << "\n"
         << "part  badhash fake-part2==1.0 fake_part2/data/part02.bin " << kZeros << "\n"
         << "model missing missing.bin " << kShaAll << " 12\n"
         << "part  missing fake-part1==1.0 fake_part1/data/part01.bin " << kSha1 << "\n"
         << "part  missing fake-part3==1.0 fake_part3/data/part03.bin " << kSha2 << "\n"
         << "model nomember nomember.bin " << kShaAll << " 12\n"
         << "part  nomember fake-part1==1.0 fake_part1/data/part01.bin " << kSha1 << "\n"
         << "part  nomember fake-part4==1.0 fake_part4/data/part04.bin " << kSha2 << "\n"
         << "model badfile badfile.bin " << kZeros << " 12\n"
         << "part  badfile fake-part1==1.0 fake_part1/data/part01.bin " << kSha1 << "\n"
         << "part  badfile fake-part2==1.0 fake_part2/data/part02.bin " << kSha2 << "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  ShellResult fetch(const std::string& models) {
    return sh("SAFEDEC_MODELS_LOCK=" + (dir_ / "models.lock").string() + " SAFEDEC_MODEL_DIR=" +
              (dir_ / "cache").string() + " SAFEDEC_PIP=" + pip_ + " SAFEDEC_PIP_ARGS='--no-index --find-links " +
              (dir_ / "index").string() + "' bash " + script_ + " " + models);
  }

  std::string script_, pip_, python_;
  fs::path dir_;
};

TEST_F(FetchModels, AssemblesPartsInOrderAndIsIdempotent) {
  ShellResult r = fetch("good");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(slurp(dir_ / "cache" / "good.bin"), "hello world\n");
  EXPECT_NE(r.out.find("assembled from 2 part(s) and verified"), std::string::npos) << r.out;
  r = fetch("good");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("good: good.bin verified"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("pip download"), std::string::npos) << "a verified file must not be fetched again: " << r.out;
  // A corrupted cached file is rebuilt from the cached wheels.
  std::ofstream(dir_ / "cache" / "good.bin") << "hello WORLD\n";
  r = fetch("good");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(slurp(dir_ / "cache" / "good.bin"), "hello world\n");
}

TEST_F(FetchModels, WrongPartHashNamesPackageAndBothHashes) {
  const ShellResult r = fetch("badhash");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("package fake-part2==1.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::string("has sha256 ") + kSha2 + ", expected " + kZeros), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "cache" / "badhash.bin"));
  for (const auto& e : fs::directory_iterator(dir_ / "cache"))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "partial file left: " << e.path();
}

TEST_F(FetchModels, MissingPackageIsNamed) {
  const ShellResult r = fetch("missing");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("model 'missing': part 2, package fake-part3==1.0, could not be downloaded"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "cache" / "missing.bin"));
}

TEST_F(FetchModels, WheelWithoutTheMemberIsNamed) {
  const ShellResult r = fetch("nomember");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("package fake-part4==1.0: its wheel fake_part4-1.0-py3-none-any.whl has no member "
                       "fake_part4/data/part04.bin"),
            std::string::npos)
      << r.out;
}

TEST_F(FetchModels, WrongFileHashNamesBothHashes) {
  const ShellResult r = fetch("badfile");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find(std::string("has sha256 ") + kShaAll + ", expected " + kZeros), std::string::npos) << r.out;
}

TEST_F(FetchModels, SelectionFetchesOnlyTheNamedModelsAndRefusesUnknownNames) {
  ShellResult r = fetch("good");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "cache" / "badfile.bin"));
  r = fetch("good,nope");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("unknown model 'nope' (models in "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("good badhash missing nomember badfile"), std::string::npos) << r.out;
}

}  // namespace
