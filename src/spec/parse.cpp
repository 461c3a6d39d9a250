// Validation of JSON layer specs. Every field is checked where it is read. Every failure names the
// JSON pointer of the field, the value found and what is valid, and a misspelt name gets the
// nearest valid one as a suggestion. The validated spec has every default filled in, so the
// registry's builders read it without checking again.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
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

/// Reads an optional number field of `object`, checking it against the range.
double number_field(const json& object, const std::string& pointer, const std::string& key, double fallback, Range range) {
    const json* value = find(object, key);
    if (value == nullptr) return fallback;
    return number(*value, child(pointer, key), range);
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

/// Rejects a gate whose axis is not 'head', naming the component that needs one value per head.
void require_head_axis(const json& gate, const std::string& where, const std::string& owner) {
    const std::string axis = gate.at("axis").get<std::string>();
    if (axis != "head") {
        fail(where + "/axis", "found '" + axis + "'; " + owner + " takes one value per head; valid is 'head'");
    }
}

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

/// Reads a list of LayerNorm parameters: 1, V or H * V finite numbers.
json norm_values(const json& memory, const std::string& key, double fallback, const Sizes& sizes) {
    const json* value = find(memory, key);
    const std::string where = child("/memory", key);
    if (value == nullptr) return json::array({fallback});
    const Index n = value->is_array() ? static_cast<Index>(value->size()) : -1;
    if (n != 1 && n != sizes.value && n != sizes.heads * sizes.value) {
        fail(where, "found " + shown(*value) + "; expected an array of 1, V = " + std::to_string(sizes.value) +
                        " or H * V = " + std::to_string(sizes.heads * sizes.value) + " numbers");
    }
    json numbers = json::array();
    for (std::size_t i = 0; i < value->size(); ++i) numbers.push_back(number((*value)[i], child(where, std::to_string(i)), Range::any));
    return numbers;
}

/// Reads the fields of the MLP memory (memory/mlp.hpp), every one optional.
void parse_mlp(const json& memory, const Sizes& sizes, json& normal) {
    const std::string at = "/memory";
    normal["depth"] = integer(memory, at, "depth", 2, 1, 16);
    normal["expansion"] = number_field(memory, at, "expansion", 4.0, Range::positive);
    const double hidden = std::round(normal["expansion"].get<double>() * static_cast<double>(sizes.key_features));
    if (hidden > 1048576.0) {
        fail(at + "/expansion", "expansion " + number_text(normal["expansion"].get<double>()) + " gives " +
                                    number_text(hidden) + " hidden units, more than 2^20; lower the expansion");
    }
    normal["activation"] = choice(memory, at, "activation", {"gelu", "gelu_tanh", "silu", "relu", "tanh", "identity"},
                                  std::string("gelu"));

    normal["residual"] = boolean(memory, at, "residual", true);
    normal["biases"] = boolean(memory, at, "biases", false);
    normal["gated"] = boolean(memory, at, "gated", false);
    if (normal["gated"].get<bool>() && normal["biases"].get<bool>()) {
        fail(at + "/biases", "memory.biases true with memory.gated true: the gated branch W1 (s(W2 x) * W3 x) has no "
                             "biases; valid is false");
    }

    normal["norm"] = choice(memory, at, "norm", {"none", "plain", "affine"}, std::string("none"));
    const bool affine = normal["norm"] == "affine";
    for (const char* key : {"norm_weight", "norm_bias"}) {
        if (!affine && memory.contains(key)) {
            fail(child(at, key), std::string("memory.") + key + " with memory.norm '" + normal["norm"].get<std::string>() +
                                     "': only the affine LayerNorm has parameters; valid is memory.norm 'affine'");
        }
    }
    normal["norm_weight"] = norm_values(memory, "norm_weight", 1.0, sizes);
    normal["norm_bias"] = norm_values(memory, "norm_bias", 0.0, sizes);
    normal["norm_eps"] = number_field(memory, at, "norm_eps", 1e-6, Range::positive);

    normal["read_adds_branch"] = boolean(memory, at, "read_adds_branch", false);
    if (normal["read_adds_branch"].get<bool>() && normal["norm"] == "none") {
        fail(at + "/read_adds_branch", "memory.read_adds_branch true with memory.norm 'none': the read r + N(r) needs "
                                       "a LayerNorm N; valid is memory.norm 'plain' or 'affine'");
    }
    if ((normal["residual"].get<bool>() || normal["read_adds_branch"].get<bool>()) && sizes.key_features != sizes.value) {
        fail(at + (normal["residual"].get<bool>() ? "/residual" : "/read_adds_branch"),
             "the mlp memory adds its input to the branch, so dims.value (" + std::to_string(sizes.value) +
                 ") must equal the key feature dimension (" + std::to_string(sizes.key_features) +
                 "); valid is memory.residual false or equal dimensions");
    }

    json init{{"zero", false}, {"std", 0.02}, {"seed", 0}};
    if (const json* given = find(memory, "init"); given != nullptr) {
        require_object(*given, at + "/init", "memory.init");
        allow_only(*given, at + "/init", {"zero", "std", "seed"}, "memory.init");
        init["zero"] = boolean(*given, at + "/init", "zero", false);
        init["std"] = number_field(*given, at + "/init", "std", 0.02, Range::nonnegative);
        init["seed"] = integer(*given, at + "/init", "seed", 0, 0, std::numeric_limits<std::int64_t>::max());
    }
    normal["init"] = init;
}

json parse_memory(const json& spec, const std::string& type, Sizes& sizes) {
    const json& memory = section(spec, "memory");
    std::vector<std::string> fields{"type", "feature_map"};
    if (type == "kv_cache") fields.push_back("window");
    if (type == "mlp") {
        for (const char* key : {"depth", "expansion", "activation", "residual", "biases", "gated", "norm", "norm_weight",
                                "norm_bias", "norm_eps", "read_adds_branch", "init"}) {
            fields.push_back(key);
        }
    }
    allow_only(memory, "/memory", fields, "memory.type '" + type + "'");
    json normal{{"type", type}};
    normal["feature_map"] = parse_feature_map(memory, sizes);
    if (type == "kv_cache") normal["window"] = integer(memory, "/memory", "window", 0, 0, 1 << 30);
    if (type == "mlp") parse_mlp(memory, sizes, normal);
    if (type == "vector" && sizes.key_features != sizes.value) {
        fail("/dims/value", "memory.type 'vector' reads elementwise, so dims.value (" + std::to_string(sizes.value) +
                                ") must equal the key feature dimension (" + std::to_string(sizes.key_features) + ")");
    }
    return normal;
}

json parse_bias(const json& spec, const std::string& type, const Sizes& sizes) {
    const json& bias = section(spec, "attentional_bias");
    const std::string at = "/attentional_bias";
    const std::string owner = "attentional_bias.type '" + type + "'";
    json normal{{"type", type}};
    if (type == "l2") {
        allow_only(bias, at, {"type", "subtract_key"}, owner);
        normal["subtract_key"] = boolean(bias, at, "subtract_key", false);
        if (normal["subtract_key"].get<bool>() && sizes.key != sizes.value) {
            fail(at + "/subtract_key", "the target v - k needs dims.key (" + std::to_string(sizes.key) +
                                           ") to equal dims.value (" + std::to_string(sizes.value) + ")");
        }
    } else if (type == "lp") {
        allow_only(bias, at, {"type", "p", "smoothing", "sharpness", "eps"}, owner);
        const double p = number_field(bias, at, "p", 3.0, Range::any);
        if (!(p >= 1.0)) fail(at + "/p", "found " + number_text(p) + ", out of range; valid is a finite p >= 1");
        normal["p"] = p;
        normal["smoothing"] = choice(bias, at, "smoothing", {"none", "tanh_sign", "sqrt_abs"}, std::string("none"));
        normal["sharpness"] = number_field(bias, at, "sharpness", 10.0, Range::positive);
        normal["eps"] = number_field(bias, at, "eps", 1e-6, Range::positive);
    } else if (type == "huber") {
        allow_only(bias, at, {"type", "kind", "delta"}, owner);
        normal["kind"] = choice(bias, at, "kind", {"coordinate", "norm", "mixture"}, std::string("coordinate"));
        normal["delta"] = gate(find(bias, "delta"), at + "/delta", Range::positive, fixed_gate(1.0), sizes);
        require_head_axis(normal["delta"], at + "/delta", "the Huber threshold delta");
    } else if (type == "value_shift") {
        allow_only(bias, at, {"type", "radius"}, owner);
        normal["radius"] = number_field(bias, at, "radius", 0.1, Range::nonnegative);
    } else {
        allow_only(bias, at, {"type"}, owner);
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
    if (type == "mirror") {
        const std::string kind =
            choice(retention, "/retention", "kind", {"lq", "elastic_net", "kl", "sigmoid"}, std::nullopt);
        std::vector<std::string> fields{"type", "kind", "gate", "floor"};
        if (kind == "lq") fields.push_back("q");
        if (kind == "elastic_net") fields.push_back("threshold");
        if (kind == "kl") fields.push_back("domain");
        allow_only(retention, "/retention", fields, "retention.kind '" + kind + "'");
        normal["kind"] = kind;
        normal["gate"] = gate(find(retention, "gate"), "/retention/gate", Range::log_gate, fixed_gate(0.0), sizes);
        require_head_axis(normal["gate"], "/retention/gate", "the mirror retention");
        const double q = number_field(retention, "/retention", "q", 4.0, Range::any);
        if (!(q > 1.0) || q == 3.0) {
            fail("/retention/q", "found " + number_text(q) + ", out of range; valid is q > 1 except 3 (where "
                                 "||W||_q^{q-2} = ||W||_q and A cannot be recovered from W)");
        }
        normal["q"] = q;
        normal["threshold"] = number_field(retention, "/retention", "threshold", 1e-3, Range::nonnegative);
        normal["domain"] = choice(retention, "/retention", "domain", {"row", "whole"}, std::string("row"));
        const double floor = number_field(retention, "/retention", "floor", 1e-12, Range::positive);
        if (!(floor < 0.5)) fail("/retention/floor", "found " + number_text(floor) + ", out of range; valid is 0 < floor < 0.5");
        normal["floor"] = floor;
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

json parse_algorithm(const json& spec, const std::string& type, const std::string& retention_type, const Sizes& sizes) {
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
    } else if (type == "minibatch_gd") {
        allow_only(algorithm, "/algorithm", {"type", "minibatch_size", "rate", "rate_form", "token_factor", "clip_norm"},
                   owner);
        const Index b = integer(algorithm, "/algorithm", "minibatch_size", 1, 1, 65536);
        normal["minibatch_size"] = b;
        normal["rate"] = rate("rate");
        require_head_axis(normal["rate"], "/algorithm/rate", "the mini-batch rate eta");
        const std::string form = choice(algorithm, "/algorithm", "rate_form", {"per_token", "query_token", "factored"},
                                        std::string("per_token"));
        normal["rate_form"] = form;
        if (form != "per_token" && retention_type != "none") {
            fail("/algorithm/rate_form", "algorithm.rate_form '" + form + "' with retention.type '" + retention_type +
                                             "': the " + form + " rate restarts from the mini-batch's start weights, so "
                                             "it takes no retention; valid is rate_form 'per_token' or retention.type 'none'");
        }
        json factor = json::array();
        if (const json* given = find(algorithm, "token_factor"); given != nullptr) {
            const std::string at = "/algorithm/token_factor";
            if (form != "factored") fail(at, "a token_factor needs algorithm.rate_form 'factored'");
            if (!given->is_array() || static_cast<Index>(given->size()) != b) {
                fail(at, "found " + shown(*given) + "; expected an array of minibatch_size = " + std::to_string(b) +
                             " numbers >= 0, one per position of the mini-batch");
            }
            for (std::size_t i = 0; i < given->size(); ++i) factor.push_back(number((*given)[i], child(at, std::to_string(i)), Range::nonnegative));
        } else if (form == "factored") {
            for (Index i = 1; i <= b; ++i) factor.push_back(1.0 / static_cast<double>(i));  // TTT's 1/i
        }
        normal["token_factor"] = factor;
        normal["clip_norm"] = number_field(algorithm, "/algorithm", "clip_norm", 0.0, Range::nonnegative);
    } else if (type == "momentum") {
        allow_only(algorithm, "/algorithm",
                   {"type", "rate", "momentum", "minibatch_size", "window", "window_weight", "newton_schulz_steps",
                    "use_momentum", "clip_norm"},
                   owner);
        normal["rate"] = rate("rate");
        require_head_axis(normal["rate"], "/algorithm/rate", "the momentum algorithm's rate eta");
        normal["momentum"] = gate(find(algorithm, "momentum"), "/algorithm/momentum", Range::log_gate,
                                  fixed_gate(std::log(0.9)), sizes);
        require_head_axis(normal["momentum"], "/algorithm/momentum", "the momentum log-decay theta");
        normal["minibatch_size"] = integer(algorithm, "/algorithm", "minibatch_size", 1, 1, 65536);
        normal["window"] = integer(algorithm, "/algorithm", "window", 1, 1, 4096);
        normal["window_weight"] = gate(find(algorithm, "window_weight"), "/algorithm/window_weight", Range::nonnegative,
                                       fixed_gate(1.0), sizes);
        require_head_axis(normal["window_weight"], "/algorithm/window_weight", "the Omega window weight gamma");
        normal["newton_schulz_steps"] = integer(algorithm, "/algorithm", "newton_schulz_steps", 0, 0, 100);
        normal["use_momentum"] = boolean(algorithm, "/algorithm", "use_momentum", true);
        normal["clip_norm"] = number_field(algorithm, "/algorithm", "clip_norm", 0.0, Range::nonnegative);
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
    if (gate_name == "eta" || gate_name == "beta" || gate_name == "gamma" || gate_name == "delta") return 1.0;
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
    if (!clash.pointer.empty() && !clash.unregistered) fail(clash.pointer, clash.message);

    json normal;
    normal["name"] = result.name;
    if (spec.contains("description")) normal["description"] = spec.at("description");
    Sizes sizes = parse_dims(spec, normal["dims"]);
    normal["memory"] = parse_memory(spec, memory, sizes);
    normal["attentional_bias"] = parse_bias(spec, bias, sizes);
    normal["retention"] = parse_retention(spec, retention, memory, algorithm, sizes);
    normal["algorithm"] = parse_algorithm(spec, algorithm, retention, sizes);
    normal["execution"] = parse_execution(spec);
    if (retention == "mirror" && normal["execution"]["steps_per_token"].get<Index>() != 1) {
        fail("/execution/steps_per_token", "found " + normal["execution"]["steps_per_token"].dump() +
                                               " with retention.type 'mirror': the mirror map acts once per token "
                                               "around a single step; valid is 1");
    }
    result.json = normal;

    // A valid combination that this build does not register is reported after its fields, so
    // that a malformed field is named first.
    if (clash.unregistered) fail(clash.pointer, clash.message);
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
