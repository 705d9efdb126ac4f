// File-system and process helpers shared by every module that writes run files or artifacts.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace safedec {

// Writes `content` to `path` through a temporary file in the same directory: write, fsync,
// rename over the target, fsync the directory. Readers see the old or the new file, never a mix.
void write_file_atomic(const std::string& path, const std::string& content);
// fsync of a directory (after a rename inside it); best effort.
void fsync_directory(const std::string& dir);

// `git rev-parse HEAD` of `dir` (nullopt when git or the repository is unavailable), and whether the
// work tree has uncommitted changes (nullopt when unknown).
// `s` in single quotes for a POSIX shell (embedded quotes escaped).
std::string shell_quote(const std::string& s);

std::optional<std::string> git_commit(const std::string& dir);
std::optional<bool> git_dirty(const std::string& dir);

// The current time as "YYYY-MM-DDTHH:MM:SSZ".
std::string utc_now_iso8601();

// A byte field of /proc/self/status ("VmHWM", "VmRSS"; given there in kB); 0 when absent.
int64_t proc_status_bytes(const std::string& key);

}  // namespace safedec
