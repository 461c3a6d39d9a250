// The JSON of a spec file as written, before parsing fills in its defaults. Tools that change a
// field (the sizes, the read timing) edit this and parse it again: the filled-in LayerSpec::json
// cannot be parsed again, because parsing rewrites some fields (expect.equivalent_to becomes a
// resolved path, and every kind's defaults are written out).
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace miras {

/// Reads the spec file at `path` as written. Call it after load_spec_file has accepted the file.
inline nlohmann::json written_spec(const std::string& path) {
    std::ifstream file(path);
    return nlohmann::json::parse(file);
}

}  // namespace miras
