// JSON layer specs: parse and validate a spec, build the layer it names through the registry of
// every valid (memory, attentional bias, retention, algorithm) combination, and list that registry.
// The format is documented in docs/specs.md and specs/schema.json.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miras/core/error.hpp"
#include "miras/spec/any_layer.hpp"

namespace miras {

/// A malformed spec. `pointer` is the JSON pointer of the bad field ("" for the whole document).
/// what() reads "spec field '<pointer>': <message>", or "spec: <message>" for the whole document.
class SpecError : public Error {
public:
    SpecError(std::string pointer, std::string message);
    const std::string& pointer() const { return pointer_; }
    const std::string& message() const { return message_; }

private:
    std::string pointer_;
    std::string message_;
};

struct LayerSpec {
    std::string name;            // "name" field
    std::string source;          // file path or "<string>"
    nlohmann::json json;         // the whole validated spec, with every default filled in
    std::map<std::string, double> probe_gates;  // constant value of each per-token gate for training-free probes
    nlohmann::json expect;       // the optional "expect" section (or null)
};

/// Validates a spec and fills in its defaults. Throws SpecError.
LayerSpec parse_spec(const nlohmann::json& spec, const std::string& source = "<string>");

/// Reads and validates a spec file. Rejects an empty file, text that is not JSON, duplicate keys and
/// nesting deeper than spec_max_depth, each with a SpecError.
LayerSpec load_spec_file(const std::string& path);

/// Parses spec text (what load_spec_file does after reading the file).
LayerSpec parse_spec_text(const std::string& text, const std::string& source);

/// Builds the layer a validated spec describes.
std::unique_ptr<AnyLayer> build_layer(const LayerSpec& spec);

/// Every combination the registry can build, as "memory/bias/retention/algorithm", sorted.
std::vector<std::string> registered_combinations();

/// Deepest nesting of arrays and objects a spec may have.
inline constexpr int spec_max_depth = 32;

/// Largest state a spec may declare, in scalars per sequence (8 GiB in double).
inline constexpr double spec_max_state_scalars = 1073741824.0;

/// The registered component types of one role ("memory", "attentional_bias", "retention",
/// "algorithm"), in the order of the registry's type lists.
std::vector<std::string> component_types(const std::string& role);

/// The fields a component accepts, with a one-line description of each, for `miras list`.
struct ComponentField {
    std::string name;
    std::string description;
};
struct ComponentInfo {
    std::string role;
    std::string type;
    std::string summary;
    std::vector<ComponentField> fields;
};
const std::vector<ComponentInfo>& component_catalog();

/// The update rule of a spec in words and in symbols, for `miras describe`.
struct UpdateDescription {
    std::string words;
    std::vector<std::string> symbols;
};
UpdateDescription describe_update(const LayerSpec& spec);

/// Levenshtein distance, used to suggest the nearest valid name.
std::size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace miras
