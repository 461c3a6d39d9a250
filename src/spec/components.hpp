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
struct from_spec<MlpMemory> {
    static MlpMemory build(const json& spec) {
        const json& memory = spec.at("memory");
        MlpMemory m;
        m.features = feature_map_from(memory);
        m.depth = memory.at("depth").get<Index>();
        m.expansion = memory.at("expansion").get<double>();
        m.activation = parse_activation(memory.at("activation").get<std::string>());
        m.residual = memory.at("residual").get<bool>();
        m.biases = memory.at("biases").get<bool>();
        m.gated = memory.at("gated").get<bool>();
        const std::string norm = memory.at("norm").get<std::string>();
        m.norm = MlpNorm::none;
        if (norm == "plain") m.norm = MlpNorm::plain;
        if (norm == "affine") m.norm = MlpNorm::affine;
        m.norm_weight = memory.at("norm_weight").get<std::vector<double>>();
        m.norm_bias = memory.at("norm_bias").get<std::vector<double>>();
        m.norm_eps = memory.at("norm_eps").get<double>();
        m.read_adds_branch = memory.at("read_adds_branch").get<bool>();
        const json& init = memory.at("init");
        m.init.zero = init.at("zero").get<bool>();
        m.init.std = init.at("std").get<double>();
        m.init.seed = init.at("seed").get<std::uint64_t>();
        return m;
    }
};

template <>
struct from_spec<DotProductBias> {
    static DotProductBias build(const json&) { return {}; }
};
template <>
struct from_spec<L2Bias> {
    static L2Bias build(const json& spec) { return L2Bias{spec.at("attentional_bias").at("subtract_key").get<bool>()}; }
};
template <>
struct from_spec<LpBias> {
    static LpBias build(const json& spec) {
        const json& bias = spec.at("attentional_bias");
        const std::string smoothing = bias.at("smoothing").get<std::string>();
        LpBias lp{bias.at("p").get<double>(), LpSmoothing::none, bias.at("sharpness").get<double>(), bias.at("eps").get<double>()};
        if (smoothing == "tanh_sign") lp.smoothing = LpSmoothing::tanh_sign;
        if (smoothing == "sqrt_abs") lp.smoothing = LpSmoothing::sqrt_abs;
        return lp;
    }
};
template <>
struct from_spec<HuberBias> {
    static HuberBias build(const json& spec) {
        const json& bias = spec.at("attentional_bias");
        const std::string kind = bias.at("kind").get<std::string>();
        HuberBias huber{HuberKind::coordinate, gate_from(bias.at("delta"))};
        if (kind == "norm") huber.kind = HuberKind::norm;
        if (kind == "mixture") huber.kind = HuberKind::mixture;
        return huber;
    }
};
template <>
struct from_spec<ValueShiftBias> {
    static ValueShiftBias build(const json& spec) {
        return ValueShiftBias{spec.at("attentional_bias").at("radius").get<double>()};
    }
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
struct from_spec<MirrorRetention> {
    static MirrorRetention build(const json& spec) {
        const json& retention = spec.at("retention");
        const std::string kind = retention.at("kind").get<std::string>();
        MirrorRetention r;
        r.kind = MirrorKind::kl;
        if (kind == "lq") r.kind = MirrorKind::lq;
        if (kind == "elastic_net") r.kind = MirrorKind::elastic_net;
        if (kind == "sigmoid") r.kind = MirrorKind::sigmoid;
        r.gate = gate_from(retention.at("gate"));
        r.q = retention.at("q").get<double>();
        r.threshold = retention.at("threshold").get<double>();
        r.domain = retention.at("domain").get<std::string>() == "whole" ? SoftmaxDomain::whole : SoftmaxDomain::row;
        r.floor = retention.at("floor").get<double>();
        return r;
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
template <>
struct from_spec<MiniBatchGD> {
    static MiniBatchGD build(const json& spec) {
        const json& algorithm = spec.at("algorithm");
        const std::string form = algorithm.at("rate_form").get<std::string>();
        MiniBatchGD a;
        a.minibatch_size = algorithm.at("minibatch_size").get<Index>();
        a.rate = gate_from(algorithm.at("rate"));
        a.form = MiniBatchRate::per_token;
        if (form == "query_token") a.form = MiniBatchRate::query_token;
        if (form == "factored") a.form = MiniBatchRate::factored;
        a.token_factor = algorithm.at("token_factor").get<std::vector<double>>();
        a.clip_norm = algorithm.at("clip_norm").get<double>();
        return a;
    }
};
template <>
struct from_spec<Momentum> {
    static Momentum build(const json& spec) {
        const json& algorithm = spec.at("algorithm");
        Momentum a;
        a.rate = gate_from(algorithm.at("rate"));
        a.momentum = gate_from(algorithm.at("momentum"));
        a.minibatch_size = algorithm.at("minibatch_size").get<Index>();
        a.window = algorithm.at("window").get<Index>();
        a.window_weight = gate_from(algorithm.at("window_weight"));
        a.newton_schulz_steps = algorithm.at("newton_schulz_steps").get<int>();
        a.use_momentum = algorithm.at("use_momentum").get<bool>();
        a.clip_norm = algorithm.at("clip_norm").get<double>();
        return a;
    }
};

}  // namespace miras::spec_registry
