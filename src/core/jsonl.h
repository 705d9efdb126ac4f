// Line-by-line reading of JSONL input files (prompt lists, demonstration pairs).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace safedec {

// Calls fn(object, line_number) for every non-blank line of a JSONL file. `what` names the file's
// role in errors ("prompts file"); a line that is not valid JSON throws safedec::Error naming the
// file and the line.
void for_each_jsonl_line(const std::string& path, const std::string& what,
                         const std::function<void(const nlohmann::json&, int64_t)>& fn);

// A JSON parse error's description without the file's content: nlohmann's message ends with
// "last read: '<the text around the error>'", which for a dataset can be part of a harmful prompt.
// Keeps the position and the kind of error ("parse error at line 1, column 12: syntax error while
// parsing object - invalid literal").
std::string json_error_without_content(const std::exception& e);

}  // namespace safedec
