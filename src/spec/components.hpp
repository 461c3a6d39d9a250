// Builders that turn the sections of a validated spec into component objects. The parser
// (parse.cpp) has already checked every field and filled in every default, so these read without
// checking. One `from_spec` specialisation per registered component.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry.hpp"

namespace miras::spec_registry {

using nlohmann::json;

inline Axis axis_from(const std::string& name) {
    if (name == "key") return Axis::key;
    if (name == "value") return Axis::value;
    return Axis::head;
}

/// Builds the GateConfig of a normalised gate: {"gate": "per_token", "axis": ...} or
/// {"values": [...], "axis": ...}.
inline GateConfig gate_from(const json& gate) {
    GateConfig config;
    config.axis = axis_from(gate.at("axis").get<std::string>());
    config.per_token = gate.contains("gate");
    if (config.per_token) {
        config.fixed.clear();
    } else {
        config.fixed = gate.at("values").get<std::vector<double>>();
    }
    return config;
}

inline FeatureMap feature_map_from(const json& memory) {
    const json& section = memory.at("feature_map");
    const std::string type = section.at("type").get<std::string>();
    if (type == "elu_plus_one") return FeatureMap::elu_plus_one();
    if (type == "polynomial") {
        FeatureMap map{FeatureKind::polynomial, section.at("coefficients").get<std::vector<double>>()};
        return map;
    }
    return FeatureMap::identity();
}

inline LayerOptions options_from(const json& spec) {
    LayerOptions options;
    const json& dims = spec.at("dims");
    options.heads = dims.at("heads").get<Index>();
    options.key_dim = dims.at("key").get<Index>();
    options.value_dim = dims.at("value").get<Index>();
    const json& execution = spec.at("execution");
    if (!execution.at("query_scale").is_null()) options.query_scale = execution.at("query_scale").get<double>();
    options.read = execution.at("read").get<std::string>() == "before_write" ? ReadTiming::before_write
                                                                            : ReadTiming::after_write;
    options.steps_per_token = execution.at("steps_per_token").get<Index>();
    return options;
}

template <class T>
struct from_spec;

template <>
struct from_spec<MatrixMemory> {
    static MatrixMemory build(const json& spec) { return MatrixMemory{feature_map_from(spec.at("memory"))}; }
};
template <>
struct from_spec<VectorMemory> {
    static VectorMemory build(const json& spec) { return VectorMemory{feature_map_from(spec.at("memory"))}; }
};
template <>
struct from_spec<KVCacheMemory> {
    static KVCacheMemory build(const json& spec) {
        const json& memory = spec.at("memory");
        return KVCacheMemory{feature_map_from(memory), memory.at("window").get<Index>()};
    }
};

template <>
struct from_spec<DotProductBias> {
    static DotProductBias build(const json&) { return {}; }
};
template <>
struct from_spec<L2Bias> {
    static L2Bias build(const json&) { return {}; }
};

template <>
struct from_spec<NoRetention> {
    static NoRetention build(const json&) { return {}; }
};
template <>
struct from_spec<DecayRetention> {
    static DecayRetention build(const json& spec) {
        const json& retention = spec.at("retention");
        const Placement placement = retention.at("placement").get<std::string>() == "gradient_then_decay"
                                        ? Placement::gradient_then_decay
                                        : Placement::decay_then_gradient;
        return DecayRetention{gate_from(retention.at("gate")), placement};
    }
};

template <>
struct from_spec<GradientStep> {
    static GradientStep build(const json& spec) {
        const json& algorithm = spec.at("algorithm");
        return GradientStep{gate_from(algorithm.at("rate")), algorithm.at("separate_read_key").get<bool>()};
    }
};
template <>
struct from_spec<ImplicitStep> {
    static ImplicitStep build(const json& spec) {
        const json& algorithm = spec.at("algorithm");
        return ImplicitStep{gate_from(algorithm.at("rate")), algorithm.at("diagonal").get<bool>()};
    }
};
template <>
struct from_spec<LeastSquares> {
    static LeastSquares build(const json& spec) {
        const json& algorithm = spec.at("algorithm");
        const LinearSolver solver = algorithm.at("solver").get<std::string>() == "conjugate_gradient"
                                        ? LinearSolver::conjugate_gradient
                                        : LinearSolver::exact;
        return LeastSquares{gate_from(algorithm.at("strength")), gate_from(algorithm.at("ridge")), solver,
                            algorithm.at("cg_iterations").get<int>()};
    }
};
template <>
struct from_spec<GeneralizedDelta> {
    static GeneralizedDelta build(const json& spec) { return GeneralizedDelta{gate_from(spec.at("algorithm").at("rate"))}; }
};
template <>
struct from_spec<NonParametric> {
    static NonParametric build(const json&) { return {}; }
};

}  // namespace miras::spec_registry
