// State files: a layer's state saved with its identity, its scalar type, the token position and a
// format version, as JSON. Doubles are written with enough digits to read back bitwise.
//
// {"format": "miras-state", "version": 1, "layer": "...", "scalar": "float32" | "float64",
//  "position": N, "tensors": {"W": {"shape": [...], "data": [...]}, ...}}
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "miras/io/tensor_json.hpp"
#include "miras/layer/layer.hpp"

namespace miras::io {

inline constexpr int state_file_version = 1;

/// Returns the identity of a layer: the four component names, the sizes and the options that
/// shape the state.
template <class L>
std::string layer_identity(const L& layer) {
    const LayerDims& d = layer.dims();
    return std::string(L::memory_type::name) + "/" + L::bias_type::name + "/" + L::retention_type::name + "/" +
           L::algorithm_type::name + " heads=" + std::to_string(d.heads) + " key=" + std::to_string(d.key) +
           " value=" + std::to_string(d.value) + " features=" + std::to_string(d.key_features) +
           " steps=" + std::to_string(d.steps_per_token);
}

/// Writes the state atomically (temporary file, then rename). An existing file is replaced only
/// with overwrite = true.
template <class L, class S>
void save_state_file(const std::string& path, const L& layer, const typename L::template State<S>& state,
                     Index position, bool overwrite = false) {
    namespace fs = std::filesystem;
    if (!overwrite && fs::exists(path)) {
        throw InputError("state file '" + path + "' exists; pass overwrite = true to replace it");
    }
    nlohmann::json j;
    j["format"] = "miras-state";
    j["version"] = state_file_version;
    j["layer"] = layer_identity(layer);
    j["scalar"] = std::is_same_v<S, float> ? "float32" : "float64";
    j["position"] = position;
    auto& tensors = j["tensors"] = nlohmann::json::object();
    for (const auto& [name, tensor] : layer.save_state(state)) tensors[name] = tensor_to_json(tensor.view());

    const std::string temporary = path + ".tmp";
    {
        std::ofstream out(temporary);
        if (!out) throw InputError("cannot open '" + temporary + "' for writing");
        out << j.dump();
        if (!out) throw InputError("writing '" + temporary + "' failed");
    }
    std::error_code error;
    fs::rename(temporary, path, error);
    if (error) {
        fs::remove(temporary);
        throw InputError("renaming '" + temporary + "' to '" + path + "' failed: " + error.message());
    }
}

/// A state read back from a file, with the token position it was saved at.
template <class L, class S>
struct LoadedState {
    typename L::template State<S> state;
    Index position = 0;
};

/// Reads a state file, rejecting another format version, another layer or another scalar type.
template <class L, class S>
LoadedState<L, S> load_state_file(const std::string& path, const L& layer) {
    const nlohmann::json j = read_json_file(path);
    if (!j.is_object() || j.value("format", "") != "miras-state") {
        throw InputError("'" + path + "' is not a miras state file (field \"format\" is not \"miras-state\")");
    }
    if (!j.contains("version") || !j.at("version").is_number_integer() || j.at("version").get<int>() != state_file_version) {
        throw InputError("state file '" + path + "' has format version " + (j.contains("version") ? j.at("version").dump() : "none") +
                         "; this build reads version " + std::to_string(state_file_version));
    }
    const std::string identity = layer_identity(layer);
    if (j.value("layer", "") != identity) {
        throw InputError("state file '" + path + "' was saved by the layer '" + j.value("layer", "") +
                         "'; this layer is '" + identity + "'");
    }
    const std::string scalar = std::is_same_v<S, float> ? "float32" : "float64";
    if (j.value("scalar", "") != scalar) {
        throw InputError("state file '" + path + "' holds " + j.value("scalar", "?") + " values; this stream uses " + scalar);
    }
    std::map<std::string, Tensor<S>> tensors;
    for (const auto& [name, tensor] : j.at("tensors").items()) {
        tensors.emplace(name, tensor_from_json<S>(tensor, "/tensors/" + name));
    }
    return {layer.load_state(tensors), j.value("position", Index(0))};
}

}  // namespace miras::io
