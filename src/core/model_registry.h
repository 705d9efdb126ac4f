// Model-name registry: configs/models/*.yaml maps a short name (e.g. smollm2-135m-instruct) to a
// file in the model cache and its chat-template choice.
#pragma once
#include <string>
#include <vector>

namespace safedec {

struct ModelEntry {
  std::string name;
  std::string path;           // resolved: a file in the model cache, or the path given
  std::string chat_template;  // "auto" or a family name
  std::string config_file;    // the YAML it came from ("" for a plain path)
  std::string weights = "fp32";  // "fp32" | "quantized" (`weights:`; GGUF block formats kept in memory)
};

// Every registered model, sorted by name ($SAFEDEC_HOME/configs/models or the source tree's).
std::vector<ModelEntry> registered_models();
// A registered name or a path to a model file/directory. An unknown name that is not an
// existing path throws safedec::Error listing the registered names; a registered model whose
// file is missing throws with the command that fetches it.
ModelEntry resolve_model(const std::string& name_or_path);

}  // namespace safedec
