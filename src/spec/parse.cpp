// Validation of JSON layer specs. Every field is checked where it is read. Every failure names the
// JSON pointer of the field, the value found and what is valid, and a misspelt name gets the
// nearest valid one as a suggestion. The validated spec has every default filled in, so the
// registry's builders read it without checking again.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "miras/spec/spec.hpp"
#include "registry.hpp"

namespace miras {

SpecError::SpecError(std::string pointer, std::string message)
    : Error((pointer.empty() ? std::string("spec: ") : "spec field '" + pointer + "': ") + message),
      pointer_(std::move(pointer)),
      message_(std::move(message)) {}

std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> previous(b.size() + 1), current(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        current[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
        }
        std::swap(previous, current);
    }
    return previous[b.size()];
}

namespace {

using nlohmann::json;

// ---- messages -------------------------------------------------------------------------------

std::string child(const std::string& pointer, const std::string& key) {
    std::string escaped;
    for (char c : key) {
        if (c == '~') escaped += "~0";
        else if (c == '/') escaped += "~1";
        else escaped += c;
    }
    return pointer + "/" + escaped;
}

std::string shown(const json& value) {
    std::string text = value.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return text;
}

std::string kind_of(const json& value) {
    if (value.is_object()) return "an object";
    if (value.is_array()) return "an array";
    if (value.is_string()) return "a string";
    if (value.is_boolean()) return "a boolean";
    if (value.is_number()) return "a number";
    return "null";
}

std::string listed(const std::vector<std::string>& choices) {
    std::string text;
    for (std::size_t i = 0; i < choices.size(); ++i) {
        if (i > 0) text += (i + 1 == choices.size()) ? " or " : ", ";
        text += "'" + choices[i] + "'";
    }
    return text;
}

std::string suggestion(const std::string& found, const std::vector<std::string>& choices) {
    std::string best;
    std::size_t best_distance = std::string::npos;
    for (const auto& choice : choices) {
        const std::size_t d = edit_distance(found, choice);
        if (d < best_distance) {
            best_distance = d;
            best = choice;
        }
    }
    const std::size_t allowed = std::max<std::size_t>(2, found.size() / 3);
    if (best.empty() || best_distance > allowed) return "";
    return " (did you mean '" + best + "'?)";
}

[[noreturn]] void fail(const std::string& pointer, const std::string& message) { throw SpecError(pointer, message); }

std::string number_text(double x) {
    std::ostringstream out;
    out << x;
    return out.str();
}

// ---- field readers --------------------------------------------------------------------------

void require_object(const json& value, const std::string& pointer, const std::string& what) {
    if (!value.is_object()) fail(pointer, "found " + kind_of(value) + " " + shown(value) + "; " + what + " must be an object");
}

/// Rejects every key of `object` that is not in `allowed`, suggesting the nearest allowed one.
void allow_only(const json& object, const std::string& pointer, const std::vector<std::string>& allowed,
                const std::string& owner) {
    for (const auto& item : object.items()) {
        if (std::find(allowed.begin(), allowed.end(), item.key()) == allowed.end()) {
            fail(child(pointer, item.key()), "unknown field '" + item.key() + "' in " + owner +
                                                 suggestion(item.key(), allowed) + "; valid fields are " + listed(allowed));
        }
    }
}

const json* find(const json& object, const std::string& key) {
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

std::string choice(const json& object, const std::string& pointer, const std::string& key,
                   const std::vector<std::string>& choices, std::optional<std::string> fallback) {
    const json* value = find(object, key);
    const std::string where = child(pointer, key);
    if (value == nullptr) {
        if (fallback) return *fallback;
        fail(where, "missing required field '" + key + "'; valid values are " + listed(choices));
    }
    if (!value->is_string()) {
        fail(where, "found " + kind_of(*value) + " " + shown(*value) + "; expected a string, one of " + listed(choices));
    }
    const std::string text = value->get<std::string>();
    if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
        fail(where, "unknown value '" + text + "'" + suggestion(text, choices) + "; valid values are " + listed(choices));
    }
    return text;
}

Index integer(const json& object, const std::string& pointer, const std::string& key, std::optional<Index> fallback,
              Index low, Index high) {
    const json* value = find(object, key);
    const std::string where = child(pointer, key);
    const std::string range = "an integer from " + std::to_string(low) + " to " + std::to_string(high);
    if (value == nullptr) {
        if (fallback) return *fallback;
        fail(where, "missing required field '" + key + "'; valid is " + range);
    }
    if (value->is_number_float()) {
        const double x = value->get<double>();
        if (std::floor(x) != x) fail(where, "found " + shown(*value) + "; valid is " + range);
        if (!(x >= static_cast<double>(low) && x <= static_cast<double>(high))) {
            fail(where, "found " + shown(*value) + ", out of range; valid is " + range);
        }
        return static_cast<Index>(x);
    }
    if (!value->is_number_integer()) fail(where, "found " + kind_of(*value) + " " + shown(*value) + "; valid is " + range);
    if (value->is_number_unsigned() && value->get<std::uint64_t>() > static_cast<std::uint64_t>(high)) {
        fail(where, "found " + shown(*value) + ", out of range; valid is " + range);
    }
    const Index x = value->get<Index>();
    if (x < low || x > high) fail(where, "found " + shown(*value) + ", out of range; valid is " + range);
    return x;
}

double number(const json& value, const std::string& where, Range range) {
    if (!value.is_number()) {
        fail(where, "found " + kind_of(value) + " " + shown(value) + "; valid is " + range_description(range));
    }
    const double x = value.get<double>();
    if (!in_range(x, range)) fail(where, "found " + shown(value) + ", out of range; valid is " + range_description(range));
    return x;
}

bool boolean(const json& object, const std::string& pointer, const std::string& key, bool fallback) {
    const json* value = find(object, key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
        fail(child(pointer, key), "found " + kind_of(*value) + " " + shown(*value) + "; valid is true or false");
    }
    return value->get<bool>();
}

const json& section(const json& spec, const std::string& key) {
    const json* value = find(spec, key);
    if (value == nullptr) fail("/" + key, "missing required section '" + key + "'");
    require_object(*value, "/" + key, "section '" + key + "'");
    return *value;
}

// ---- gates ----------------------------------------------------------------------------------

struct Sizes {
    Index heads = 1, key = 1, value = 1, key_features = 1;
};

/// A gate, normalised to {"gate": "per_token", "axis": A} or {"values": [...], "axis": A}.
json gate(const json* value, const std::string& where, Range range, const json& fallback, const Sizes& sizes,
          bool allow_per_token = true) {
    if (value == nullptr) {
        if (fallback.is_null()) fail(where, "missing required gate; valid is {\"gate\": \"per_token\", \"axis\": ...}, {\"value\": x} or {\"values\": [...], \"axis\": ...}");
        return fallback;
    }
    require_object(*value, where, "a gate");
    allow_only(*value, where, {"gate", "axis", "value", "values"}, "a gate");
    const int forms = int(value->contains("gate")) + int(value->contains("value")) + int(value->contains("values"));
    if (forms != 1) {
        fail(where, "a gate has exactly one of 'gate' (per token), 'value' (one fixed value) or 'values' (fixed per head "
                    "or channel); found " + std::to_string(forms));
    }
    json normal;
    normal["axis"] = choice(*value, where, "axis", {"head", "key", "value"}, std::string("head"));
    if (value->contains("gate")) {
        choice(*value, where, "gate", {"per_token"}, std::nullopt);
        if (!allow_per_token) fail(child(where, "gate"), "this gate must be fixed; valid is {\"value\": x} or {\"values\": [...]}");
        normal["gate"] = "per_token";
        return normal;
    }
    if (value->contains("value")) {
        normal["values"] = json::array({number(value->at("value"), child(where, "value"), range)});
        return normal;
    }
    const json& values = value->at("values");
    const std::string values_at = child(where, "values");
    if (!values.is_array() || values.empty()) {
        fail(values_at, "found " + shown(values) + "; expected a non-empty array of numbers");
    }
    const std::string axis = normal["axis"].get<std::string>();
    Index channels = 1;
    if (axis == "key") channels = sizes.key_features;
    if (axis == "value") channels = sizes.value;
    const Index n = static_cast<Index>(values.size());
    if (n != 1 && n != sizes.heads && n != sizes.heads * channels) {
        fail(values_at, "found " + std::to_string(n) + " values; valid is 1, H = " + std::to_string(sizes.heads) +
                            " (one per head) or H * C = " + std::to_string(sizes.heads * channels) + " (" + axis +
                            " axis, C = " + std::to_string(channels) + ")");
    }
    json numbers = json::array();
    for (std::size_t i = 0; i < values.size(); ++i) numbers.push_back(number(values[i], child(values_at, std::to_string(i)), range));
    normal["values"] = numbers;
    return normal;
}

json fixed_gate(double value, const char* axis = "head") { return json{{"values", json::array({value})}, {"axis", axis}}; }

// ---- sections -------------------------------------------------------------------------------

/// Checks the nesting depth of a parsed value without recursing past the limit.
void check_depth(const json& value, int depth, const std::string& pointer) {
    if (!value.is_structured()) return;
    if (depth > spec_max_depth) fail(pointer, "nesting deeper than " + std::to_string(spec_max_depth) + " levels");
    if (value.is_object()) {
        for (const auto& item : value.items()) check_depth(item.value(), depth + 1, child(pointer, item.key()));
    } else {
        for (std::size_t i = 0; i < value.size(); ++i) check_depth(value[i], depth + 1, child(pointer, std::to_string(i)));
    }
}

json parse_feature_map(const json& memory, Sizes& sizes) {
    const std::string where = "/memory/feature_map";
    const json* value = find(memory, "feature_map");
    json normal{{"type", "identity"}};
    if (value == nullptr) return normal;
    require_object(*value, where, "memory.feature_map");
    const std::string type = choice(*value, where, "type", {"identity", "elu_plus_one", "polynomial"}, std::nullopt);
    normal["type"] = type;
    if (type != "polynomial") {
        allow_only(*value, where, {"type"}, "feature_map.type '" + type + "'");
        return normal;
    }
    allow_only(*value, where, {"type", "degree", "coefficients"}, "feature_map.type 'polynomial'");
    const json* coefficients = find(*value, "coefficients");
    std::optional<Index> implied;
    if (coefficients != nullptr && coefficients->is_array() && coefficients->size() >= 2) {
        implied = static_cast<Index>(coefficients->size()) - 1;
    }
    const Index degree = integer(*value, where, "degree", implied ? implied : std::optional<Index>(2), 1, 6);
    json a = json::array();
    if (coefficients == nullptr) {
        double factorial = 1.0;
        for (Index i = 0; i <= degree; ++i) {
            if (i > 0) factorial *= static_cast<double>(i);
            a.push_back(1.0 / factorial);
        }
    } else {
        const std::string at = where + "/coefficients";
        if (!coefficients->is_array() || static_cast<Index>(coefficients->size()) != degree + 1) {
            fail(at, "found " + shown(*coefficients) + "; expected an array of degree + 1 = " + std::to_string(degree + 1) +
                         " numbers a_0 .. a_" + std::to_string(degree));
        }
        for (std::size_t i = 0; i < coefficients->size(); ++i) {
            a.push_back(number((*coefficients)[i], child(at, std::to_string(i)), Range::nonnegative));
        }
    }
    normal["degree"] = degree;
    normal["coefficients"] = a;

    // Dimension sum_{i <= p} K^i, computed in double so that it cannot overflow.
    double features = 0.0, power = 1.0;
    for (Index i = 0; i <= degree; ++i) {
        features += power;
        power *= static_cast<double>(sizes.key);
    }
    if (features > 2147483647.0) {
        fail(where + "/degree", "degree " + std::to_string(degree) + " with dims.key = " + std::to_string(sizes.key) +
                                    " gives " + number_text(features) +
                                    " features per key, more than 2^31 - 1; lower the degree or the key dimension");
    }
    sizes.key_features = static_cast<Index>(features);
    return normal;
}

json parse_memory(const json& spec, const std::string& type, Sizes& sizes) {
    const json& memory = section(spec, "memory");
    std::vector<std::string> fields{"type", "feature_map"};
    if (type == "kv_cache") fields.push_back("window");
    allow_only(memory, "/memory", fields, "memory.type '" + type + "'");
    json normal{{"type", type}};
    normal["feature_map"] = parse_feature_map(memory, sizes);
    if (type == "kv_cache") normal["window"] = integer(memory, "/memory", "window", 0, 0, 1 << 30);
    if (type == "vector" && sizes.key_features != sizes.value) {
        fail("/dims/value", "memory.type 'vector' reads elementwise, so dims.value (" + std::to_string(sizes.value) +
                                ") must equal the key feature dimension (" + std::to_string(sizes.key_features) + ")");
    }
    return normal;
}

json parse_retention(const json& spec, const std::string& type, const std::string& memory_type,
                     const std::string& algorithm_type, const Sizes& sizes) {
    const json& retention = section(spec, "retention");
    json normal{{"type", type}};
    if (type == "none") {
        allow_only(retention, "/retention", {"type"}, "retention.type 'none'");
        return normal;
    }
    allow_only(retention, "/retention", {"type", "placement", "gate"}, "retention.type 'decay'");
    normal["placement"] = choice(retention, "/retention", "placement", {"decay_then_gradient", "gradient_then_decay"},
                                 std::string("decay_then_gradient"));
    normal["gate"] = gate(find(retention, "gate"), "/retention/gate", Range::log_gate, json(), sizes);
    const std::string axis = normal["gate"]["axis"].get<std::string>();
    if (axis != "head" && memory_type == "kv_cache") {
        fail("/retention/gate/axis", "retention.gate.axis '" + axis + "' with memory.type 'kv_cache': the cache "
                                     "weighs whole pairs, so its decay must be per head; valid is 'head'");
    }
    if (axis != "head" && algorithm_type == "least_squares") {
        fail("/retention/gate/axis", "retention.gate.axis '" + axis + "' with algorithm.type 'least_squares': "
                                     "the ridge problem needs one decay per head; valid is 'head'");
    }
    return normal;
}

json parse_algorithm(const json& spec, const std::string& type, const Sizes& sizes) {
    const json& algorithm = section(spec, "algorithm");
    const std::string owner = "algorithm.type '" + type + "'";
    json normal{{"type", type}};
    const auto rate = [&](const char* name) {
        return gate(find(algorithm, name), std::string("/algorithm/") + name, Range::nonnegative, fixed_gate(1.0), sizes);
    };
    if (type == "gd") {
        allow_only(algorithm, "/algorithm", {"type", "rate", "separate_read_key"}, owner);
        normal["rate"] = rate("rate");
        normal["separate_read_key"] = boolean(algorithm, "/algorithm", "separate_read_key", false);
    } else if (type == "implicit") {
        allow_only(algorithm, "/algorithm", {"type", "rate", "diagonal"}, owner);
        normal["rate"] = rate("rate");
        normal["diagonal"] = boolean(algorithm, "/algorithm", "diagonal", false);
    } else if (type == "generalized_delta") {
        allow_only(algorithm, "/algorithm", {"type", "rate"}, owner);
        normal["rate"] = rate("rate");
    } else if (type == "least_squares") {
        allow_only(algorithm, "/algorithm", {"type", "strength", "ridge", "solver", "cg_iterations"}, owner);
        normal["strength"] = rate("strength");
        if (normal["strength"]["axis"] != "head") {
            fail("/algorithm/strength/axis", "found '" + normal["strength"]["axis"].get<std::string>() +
                                                 "'; least_squares needs its strength beta per head; valid is 'head'");
        }
        normal["ridge"] = gate(find(algorithm, "ridge"), "/algorithm/ridge", Range::positive, fixed_gate(1.0, "key"),
                               sizes, false);
        if (normal["ridge"]["axis"] == "value") {
            fail("/algorithm/ridge/axis", "found 'value'; the ridge lambda is per head or per key channel; valid is "
                                          "'head' or 'key'");
        }
        normal["solver"] = choice(algorithm, "/algorithm", "solver", {"exact", "conjugate_gradient"}, std::string("exact"));
        normal["cg_iterations"] = integer(algorithm, "/algorithm", "cg_iterations", 30, 1, 10000);
    } else {
        allow_only(algorithm, "/algorithm", {"type"}, owner);
    }
    return normal;
}

json parse_execution(const json& spec) {
    json normal{{"read", "after_write"}, {"query_scale", nullptr}, {"steps_per_token", 1}};
    const json* execution = find(spec, "execution");
    if (execution == nullptr) return normal;
    require_object(*execution, "/execution", "section 'execution'");
    allow_only(*execution, "/execution", {"read", "query_scale", "steps_per_token"}, "section 'execution'");
    normal["read"] = choice(*execution, "/execution", "read", {"after_write", "before_write"}, std::string("after_write"));
    if (const json* scale = find(*execution, "query_scale"); scale != nullptr && !scale->is_null()) {
        normal["query_scale"] = number(*scale, "/execution/query_scale", Range::positive);
    }
    normal["steps_per_token"] = integer(*execution, "/execution", "steps_per_token", 1, 1, 64);
    return normal;
}

Sizes parse_dims(const json& spec, json& normal) {
    const json& dims = section(spec, "dims");
    allow_only(dims, "/dims", {"heads", "key", "value"}, "section 'dims'");
    Sizes sizes;
    sizes.heads = integer(dims, "/dims", "heads", std::nullopt, 1, 65536);
    sizes.key = integer(dims, "/dims", "key", std::nullopt, 1, 1 << 20);
    sizes.value = integer(dims, "/dims", "value", std::nullopt, 1, 1 << 20);
    sizes.key_features = sizes.key;
    normal = json{{"heads", sizes.heads}, {"key", sizes.key}, {"value", sizes.value}};
    return sizes;
}

json parse_expect(const json& spec) {
    const json* expect = find(spec, "expect");
    if (expect == nullptr || expect->is_null()) return nullptr;
    require_object(*expect, "/expect", "section 'expect'");
    allow_only(*expect, "/expect", {"equivalent_to", "tolerance", "finite_for_tokens", "probe"}, "section 'expect'");
    json normal = json::object();
    if (const json* other = find(*expect, "equivalent_to"); other != nullptr && !other->is_null()) {
        if (!other->is_string() || other->get<std::string>().empty()) {
            fail("/expect/equivalent_to", "found " + shown(*other) + "; expected the path of another spec file, "
                                          "relative to this one");
        }
        normal["equivalent_to"] = *other;
        normal["tolerance"] = 1e-10;
    }
    if (const json* tolerance = find(*expect, "tolerance"); tolerance != nullptr) {
        if (!normal.contains("equivalent_to")) fail("/expect/tolerance", "a tolerance needs expect.equivalent_to");
        normal["tolerance"] = number(*tolerance, "/expect/tolerance", Range::positive);
    }
    if (find(*expect, "finite_for_tokens") != nullptr) {
        normal["finite_for_tokens"] = integer(*expect, "/expect", "finite_for_tokens", std::nullopt, 1, 1 << 20);
    }
    if (const json* probe = find(*expect, "probe"); probe != nullptr) {
        // pairs, min_accuracy and max_error drive the probe of `miras check`; other numbers are
        // thresholds for the recall benchmarks and pass through.
        require_object(*probe, "/expect/probe", "expect.probe");
        for (const auto& item : probe->items()) {
            number(item.value(), child("/expect/probe", item.key()), Range::any);
        }
        normal["probe"] = *probe;
        if (probe->contains("pairs")) normal["probe"]["pairs"] = integer(*probe, "/expect/probe", "pairs", std::nullopt, 1, 4096);
        if (const json* accuracy = find(*probe, "min_accuracy"); accuracy != nullptr) {
            const double a = number(*accuracy, "/expect/probe/min_accuracy", Range::nonnegative);
            if (a > 1.0) fail("/expect/probe/min_accuracy", "found " + shown(*accuracy) + ", out of range; valid is 0 to 1");
        }
        if (const json* error = find(*probe, "max_error"); error != nullptr) {
            number(*error, "/expect/probe/max_error", Range::nonnegative);
        }
    }
    return normal;
}

double default_probe_value(const std::string& gate_name) {
    if (gate_name == "eta" || gate_name == "beta") return 1.0;
    return 0.0;
}

std::map<std::string, double> parse_probe(const json& spec, const std::vector<GateSpec>& gates, json& normal) {
    std::map<std::string, double> values;
    std::map<std::string, Range> ranges;
    for (const auto& g : gates) {
        if (!g.config.per_token) continue;
        values[g.name] = default_probe_value(g.name);
        ranges[g.name] = g.range;
    }
    std::vector<std::string> names;
    for (const auto& [name, value] : values) names.push_back(name);
    if (const json* probe = find(spec, "probe"); probe != nullptr) {
        require_object(*probe, "/probe", "section 'probe'");
        allow_only(*probe, "/probe", {"gates"}, "section 'probe'");
        if (const json* given = find(*probe, "gates"); given != nullptr) {
            require_object(*given, "/probe/gates", "probe.gates");
            for (const auto& item : given->items()) {
                const std::string where = child("/probe/gates", item.key());
                if (values.count(item.key()) == 0) {
                    fail(where, "'" + item.key() + "' is not a per-token gate of this layer" + suggestion(item.key(), names) +
                                    (names.empty() ? "; the layer has no per-token gates" : "; valid gates are " + listed(names)));
                }
                values[item.key()] = number(item.value(), where, ranges[item.key()]);
            }
        }
    }
    normal = json{{"gates", values}};
    return values;
}

std::string check_name(const json& spec) {
    const json* name = find(spec, "name");
    if (name == nullptr) fail("/name", "missing required field 'name'; valid is a non-empty string of letters, digits, '_', '-' or '.'");
    const bool ok = name->is_string() && !name->get<std::string>().empty() &&
                    std::all_of(name->get_ref<const std::string&>().begin(), name->get_ref<const std::string&>().end(),
                                [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'; });
    if (!ok) fail("/name", "found " + shown(*name) + "; valid is a non-empty string of letters, digits, '_', '-' or '.'");
    return name->get<std::string>();
}

std::string component_type(const json& spec, const std::string& role) {
    const json& s = section(spec, role);
    return choice(s, "/" + role, "type", component_types(role), std::nullopt);
}

}  // namespace

LayerSpec parse_spec(const nlohmann::json& spec, const std::string& source) {
    check_depth(spec, 1, "");
    if (!spec.is_object()) fail("", "found " + kind_of(spec) + "; a spec is a JSON object");
    allow_only(spec, "",
               {"$schema", "name", "description", "memory", "attentional_bias", "retention", "algorithm", "dims",
                "execution", "probe", "expect"},
               "the spec");
    if (const json* description = find(spec, "description"); description != nullptr && !description->is_string()) {
        fail("/description", "found " + kind_of(*description) + "; expected a string");
    }

    LayerSpec result;
    result.source = source;
    result.name = check_name(spec);
    const std::string memory = component_type(spec, "memory");
    const std::string bias = component_type(spec, "attentional_bias");
    const std::string retention = component_type(spec, "retention");
    const std::string algorithm = component_type(spec, "algorithm");
    const auto clash = spec_registry::combination_clash(memory, bias, retention, algorithm);
    if (!clash.pointer.empty()) fail(clash.pointer, clash.message);
    allow_only(section(spec, "attentional_bias"), "/attentional_bias", {"type"}, "attentional_bias.type '" + bias + "'");

    json normal;
    normal["name"] = result.name;
    if (spec.contains("description")) normal["description"] = spec.at("description");
    Sizes sizes = parse_dims(spec, normal["dims"]);
    normal["memory"] = parse_memory(spec, memory, sizes);
    normal["attentional_bias"] = json{{"type", bias}};
    normal["retention"] = parse_retention(spec, retention, memory, algorithm, sizes);
    normal["algorithm"] = parse_algorithm(spec, algorithm, sizes);
    normal["execution"] = parse_execution(spec);
    result.json = normal;

    std::unique_ptr<AnyLayer> layer = build_layer(result);
    double state = static_cast<double>(layer->state_size_per_head()) * static_cast<double>(sizes.heads);
    if (memory == "kv_cache") {
        const double window = normal["memory"]["window"].get<double>();
        if (window > 0) state *= window;
    }
    if (state > spec_max_state_scalars) {
        fail("/dims", "the state holds " + number_text(state) + " scalars per sequence (" +
                          number_text(state * 8.0 / 1073741824.0) + " GiB in double), more than the limit of 2^30 "
                          "scalars (8 GiB); lower dims.heads, dims.key, dims.value or the feature degree");
    }
    result.probe_gates = parse_probe(spec, layer->gates(), result.json["probe"]);
    result.expect = parse_expect(spec);
    result.json["expect"] = result.expect;
    return result;
}

namespace {

/// Rejects nesting deeper than spec_max_depth before the JSON parser reads the text.
void check_text_depth(const std::string& text) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > spec_max_depth) {
                fail("", "nesting deeper than " + std::to_string(spec_max_depth) + " levels at byte " + std::to_string(i));
            }
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
}

/// Tracks the JSON pointer during parsing so that a duplicate key is reported where it occurs.
struct DuplicateKeyFinder {
    struct Frame {
        bool object = false;
        std::string pointer;
        std::vector<std::string> keys;
        std::string key;
        std::size_t index = 0;
    };
    std::vector<Frame> frames;

    std::string next_pointer() const {
        if (frames.empty()) return "";
        const Frame& top = frames.back();
        return child(top.pointer, top.object ? top.key : std::to_string(top.index));
    }

    bool operator()(int, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                frames.push_back(Frame{event == json::parse_event_t::object_start, next_pointer(), {}, {}, 0});
                break;
            case json::parse_event_t::object_end:
            case json::parse_event_t::array_end:
                frames.pop_back();
                if (!frames.empty() && !frames.back().object) ++frames.back().index;
                break;
            case json::parse_event_t::key: {
                Frame& top = frames.back();
                const std::string key = parsed.get<std::string>();
                if (std::find(top.keys.begin(), top.keys.end(), key) != top.keys.end()) {
                    fail(child(top.pointer, key), "duplicate key '" + key + "'; each key may appear once in an object");
                }
                top.keys.push_back(key);
                top.key = key;
                break;
            }
            case json::parse_event_t::value:
                if (!frames.empty() && !frames.back().object) ++frames.back().index;
                break;
        }
        return true;
    }
};

}  // namespace

LayerSpec parse_spec_text(const std::string& text, const std::string& source) {
    if (std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); })) {
        fail("", "the spec is empty; expected a JSON object");
    }
    check_text_depth(text);
    DuplicateKeyFinder finder;
    json parsed;
    try {
        parsed = json::parse(text, [&finder](int depth, json::parse_event_t event, json& value) {
            return finder(depth, event, value);
        });
    } catch (const json::exception& e) {
        // parse_error for bad syntax, out_of_range for a number too large for a double.
        fail("", std::string("not valid JSON: ") + e.what());
    }
    return parse_spec(parsed, source);
}

LayerSpec load_spec_file(const std::string& path) {
    if (!std::filesystem::is_regular_file(path)) fail("", "no spec file at '" + path + "'");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("", "cannot open '" + path + "' for reading");
    std::ostringstream text;
    text << in.rdbuf();
    LayerSpec spec = parse_spec_text(text.str(), path);
    if (spec.expect.is_object() && spec.expect.contains("equivalent_to")) {
        const std::filesystem::path other =
            std::filesystem::path(path).parent_path() / spec.expect["equivalent_to"].get<std::string>();
        if (!std::filesystem::is_regular_file(other)) {
            fail("/expect/equivalent_to", "no spec file at '" + other.string() + "' (paths are relative to the spec)");
        }
        spec.expect["equivalent_to_path"] = other.string();
        spec.json["expect"] = spec.expect;
    }
    return spec;
}

}  // namespace miras
