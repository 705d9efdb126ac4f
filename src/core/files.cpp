// Small file-system and process helpers shared by every module that writes run files or artifacts:
// atomic whole-file writes, directory fsync, the git commit of the source tree, UTC timestamps.
#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace safedec {

namespace fs = std::filesystem;

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems do not allow opening directories
  ::fsync(fd);
  ::close(fd);
}

namespace {

// Runs a shell command and returns its stdout (trimmed) when it exits 0.
std::optional<std::string> capture(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), &::pclose);
  if (!pipe) return std::nullopt;
  std::string out;
  std::array<char, 256> buf;
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), pipe.get())) > 0) out.append(buf.data(), got);
  const int status = ::pclose(pipe.release());
  if (status != 0) return std::nullopt;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' '))
    out.pop_back();
  return out;
}


}  // namespace

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string utc_now_iso8601() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  SAFEDEC_CHECK(fd >= 0, "cannot create a temporary file next to ", path, ": ",
                std::strerror(errno), ".");
  const std::string tmp(name.data());
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t w = ::write(fd, content.data() + done, content.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("cannot write ", tmp, ": ", std::strerror(e), ".");
    }
    done += static_cast<size_t>(w);
  }
  ::fchmod(fd, 0644);  // mkstemp creates 0600; run files are meant to be shared
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot flush ", tmp, ": ", std::strerror(e), ".");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename ", tmp, " to ", path, ": ", std::strerror(e), ".");
  }
  fsync_directory(dir.string());
}

std::optional<std::string> git_commit(const std::string& dir) {
  return capture("git -C " + shell_quote(dir) + " rev-parse HEAD 2>/dev/null");
}

std::optional<bool> git_dirty(const std::string& dir) {
  auto out = capture("git -C " + shell_quote(dir) + " status --porcelain --untracked-files=no 2>/dev/null");
  if (!out) return std::nullopt;
  return !out->empty();
}

int64_t proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream s(line.substr(key.size() + 1));
    int64_t kb = 0;
    s >> kb;
    return kb * 1024;
  }
  return 0;
}

}  // namespace safedec
