// The entry that the spec fuzzer and its replay test share: parse bytes as a spec, build the layer
// and run three tokens at the spec's probe gates, in double and in float, then save and reload the
// state. A malformed spec ends in a miras::Error; any other exception, a crash or a sanitizer report
// is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras::fuzz {

enum class Outcome {
    rejected,   // the parser refused the spec
    too_large,  // accepted, but too large to run inside a fuzzing iteration
    refused,    // accepted, then a miras::Error while running it
    ran,        // accepted and ran
};

/// Largest state (scalars per sequence) and input width (heads * (key + value)) the entry runs.
inline constexpr double max_run_scalars = 65536.0;

/// Scalars of the state of one sequence of `layer`, as the parser counts them.
inline double state_scalars(const LayerSpec& spec, const AnyLayer& layer) {
    double state = static_cast<double>(layer.state_size_per_head()) * static_cast<double>(layer.dims().heads);
    const nlohmann::json& memory = spec.json.at("memory");
    if (memory.contains("window") && memory.at("window").get<double>() > 0) state *= memory.at("window").get<double>();
    return state;
}

/// Runs `tokens` tokens of the layer in one scalar type and round-trips its state.
template <class S>
void run_tokens(const AnyLayer& layer, const SpecInputs& inputs, bool use_double) {
    auto state = layer.initial_state(1, use_double);
    if constexpr (std::is_same_v<S, double>) {
        layer.forward(inputs.view(), *state);
    } else {
        const Tensor<float> q = tensor_cast<float>(inputs.q.view());
        const Tensor<float> k = tensor_cast<float>(inputs.k.view());
        const Tensor<float> v = tensor_cast<float>(inputs.v.view());
        std::map<std::string, Tensor<float>> gates;
        for (const auto& [name, gate] : inputs.gates) gates.emplace(name, tensor_cast<float>(gate.view()));
        Inputs<float> view{q.view(), k.view(), v.view(), {}};
        for (const auto& [name, gate] : gates) view.gates.emplace(name, gate.view());
        layer.forward(view, *state);
    }
    const auto saved = layer.save_state(*state);
    layer.load_state(saved, use_double);
}

inline Outcome run_spec_bytes(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    LayerSpec spec;
    try {
        spec = parse_spec_text(text, "<fuzz>");
    } catch (const Error&) {
        return Outcome::rejected;
    }
    try {
        const std::unique_ptr<AnyLayer> layer = build_layer(spec);
        const LayerDims& dims = layer->dims();
        const double width = static_cast<double>(dims.heads) * static_cast<double>(dims.key + dims.value);
        if (state_scalars(spec, *layer) > max_run_scalars || width > max_run_scalars) return Outcome::too_large;
        const SpecInputs inputs = random_inputs(*layer, 1, 3, 7, &spec.probe_gates);
        run_tokens<double>(*layer, inputs, true);
        run_tokens<float>(*layer, inputs, false);
        return Outcome::ran;
    } catch (const Error&) {
        return Outcome::refused;
    }
}

}  // namespace miras::fuzz
