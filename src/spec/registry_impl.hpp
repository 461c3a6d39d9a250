// The definition of entries_for<Memory, Bias, Part>: the cartesian product of {Memory} x {Bias}
// with the retention and algorithm lists, filtered by is_valid_combination_v, one Entry per
// survivor of this part. Included only by the registry_<memory>_<bias>*.cpp units, each of which
// instantiates one part. The generic checks' routes (finite differences over every trained entry)
// are defined here too.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <type_traits>

#include "components.hpp"
#include "miras/layer/layer.hpp"

namespace miras::spec_registry {

/// Pointers to every trained entry of memory parameters (each weight matrix and bias vector; the
/// fixed LayerNorm parameters of an MLP memory are left out).
template <class Params>
std::vector<double*> trained_entries(Params& params) {
    std::vector<double*> entries;
    params_for_each_block(params, [&](auto& block) {
        for (Index i = 0; i < block.size(); ++i) entries.push_back(block.data() + i);
    });
    return entries;
}

/// The memory's parameters of head 0 (with its fixed LayerNorm parameters), every trained entry
/// drawn from 0.5 N(0, 1).
template <class Memory>
auto random_params(const Memory& memory, const LayerDims& dims, std::mt19937_64& rng) {
    auto W = [&] {
        if constexpr (requires { memory.template init_params<double>(dims, 0); }) {
            return memory.template init_params<double>(dims, 0);
        } else {
            return memory.template zero_params<double>(dims);
        }
    }();
    std::normal_distribution<double> normal(0.0, 1.0);
    for (double* entry : trained_entries(W)) *entry = 0.5 * normal(rng);
    return W;
}

/// The target the bias regresses onto: v, or v - k for the l2 bias with subtract_key (K = V).
template <class Bias>
std::vector<double> bias_target(const Bias& bias, const double* k, const double* v, const LayerDims& dims) {
    std::vector<double> target(v, v + dims.value);
    if constexpr (std::is_same_v<Bias, L2Bias>) {
        if (bias.subtract_key) {
            for (Index i = 0; i < dims.value; ++i) target[static_cast<std::size_t>(i)] -= k[i];
        }
    }
    return target;
}

/// The inner loss l(y, target); the Huber bias at threshold delta.
template <class Bias>
double bias_loss(const Bias& bias, const Vec<double>& y, const double* target, double delta) {
    if constexpr (std::is_same_v<Bias, HuberBias>) return bias.loss(y, target, delta);
    else return bias.loss(y, target);
}

/// dl/dy at y; the Huber bias at threshold delta.
template <class Bias>
void bias_gradient(const Bias& bias, const Vec<double>& y, const double* target, Vec<double>& dy, double delta) {
    if constexpr (std::is_same_v<Bias, HuberBias>) bias.gradient(y, target, dy, delta);
    else bias.gradient(y, target, dy);
}

/// The Huber threshold of head h when every per-token delta is 1 (1 for the other biases).
template <class Bias>
double check_delta(const Bias& bias, Index h) {
    if constexpr (std::is_same_v<Bias, HuberBias>) {
        if (bias.delta.per_token) return 1.0;
        const auto& values = bias.delta.fixed;
        return values.size() == 1 ? values[0] : values[static_cast<std::size_t>(h)];
    } else {
        return 1.0;
    }
}

/// Central difference of l(M(W; x), target) in every trained entry of W, in the order of
/// trained_entries.
template <class Memory, class Bias, class Params>
std::vector<double> loss_gradient(const Memory& memory, const Bias& bias, Params W, const Vec<double>& x,
                                  const double* target, double delta, Index stride = 1) {
    const auto loss = [&] {
        Vec<double> prediction;
        memory.predict(W, x, prediction);
        return bias_loss(bias, prediction, target, delta);
    };
    const double h = 1e-5;
    const std::vector<double*> entries = trained_entries(W);
    std::vector<double> gradient(entries.size(), 0.0);
    for (std::size_t e = 0; e < entries.size(); e += static_cast<std::size_t>(stride)) {
        const double saved = *entries[e];
        *entries[e] = saved + h;
        const double plus = loss();
        *entries[e] = saved - h;
        const double minus = loss();
        *entries[e] = saved;
        gradient[e] = (plus - minus) / (2.0 * h);
    }
    return gradient;
}

/// max |G - G_fd| / max(1, max |G_fd|), where G = J^T dl/dy comes from the memory and the bias at a
/// random W, k and v, and G_fd is the central difference of l(M(W; phi(k)), v) in each trained
/// entry of W (at most about 256 entries, spread over W).
template <class Memory, class Bias>
double inner_gradient_error(const Memory& memory, const Bias& bias, const LayerDims& dims, unsigned seed) {
    if constexpr (!Memory::parametric) {
        return -1.0;
    } else {
        std::mt19937_64 rng(seed);
        std::normal_distribution<double> normal(0.0, 1.0);
        auto W = random_params(memory, dims, rng);
        std::vector<double> k(static_cast<std::size_t>(dims.key)), v(static_cast<std::size_t>(dims.value));
        for (double& x : k) x = normal(rng) / std::sqrt(static_cast<double>(dims.key));
        for (double& x : v) x = normal(rng);
        const std::vector<double> target = bias_target(bias, k.data(), v.data(), dims);
        const double delta = check_delta(bias, 0);

        Vec<double> x, y, dy;
        memory.map(k.data(), dims.key, x);
        memory.predict(W, x, y);
        bias_gradient(bias, y, target.data(), dy, delta);
        auto G = W;
        params_set_zero(G);
        add_memory_gradient(memory, W, G, 1.0, dy, x);

        const std::vector<double*> analytic = trained_entries(G);
        const Index stride = std::max<Index>(1, static_cast<Index>(analytic.size()) / 256);
        const std::vector<double> fd = loss_gradient(memory, bias, W, x, target.data(), delta, stride);
        double largest = 0.0, worst = 0.0;
        for (std::size_t e = 0; e < fd.size(); e += static_cast<std::size_t>(stride)) {
            largest = std::max(largest, std::abs(fd[e]));
            worst = std::max(worst, std::abs(*analytic[e] - fd[e]));
        }
        return worst / std::max(1.0, largest);
    }
}

/// Returns the value a per-token gate takes in the update-direction check.
inline double direction_gate_value(const std::string& name) {
    if (name == "eta") return 0.5;
    if (name == "beta" || name == "gamma" || name == "delta") return 1.0;
    return 0.0;  // g and theta: no decay; a and b: no correction
}

template <class Memory, class Bias, class Retention, class Algorithm>
double update_direction_error(const nlohmann::json& spec, unsigned seed) {
    if constexpr (!Memory::parametric) {
        return -1.0;
    } else {
        using L = Layer<Memory, Bias, Retention, Algorithm>;
        const L layer(options_from(spec), from_spec<Memory>::build(spec), from_spec<Bias>::build(spec),
                      from_spec<Retention>::build(spec), from_spec<Algorithm>::build(spec));
        const LayerDims& dims = layer.dims();
        const Index H = dims.heads, K = dims.key, V = dims.value, n = dims.steps_per_token;
        std::mt19937_64 rng(seed);
        std::normal_distribution<double> normal(0.0, 1.0);

        auto state = layer.template initial_state<double>(1);
        for (auto& head : state.heads) {
            for (double* entry : trained_entries(head.memory)) *entry = 0.5 * normal(rng);
        }
        const auto start = state;

        Tensor<double> q({1, 1, H, K}), k({1, n, H, K}), v({1, n, H, V});
        for (Index i = 0; i < q.size(); ++i) q[i] = normal(rng);
        for (Index i = 0; i < v.size(); ++i) v[i] = normal(rng);
        for (Index row = 0; row < n * H; ++row) {
            double norm = 0.0;
            for (Index c = 0; c < K; ++c) {
                k[row * K + c] = normal(rng);
                norm += k[row * K + c] * k[row * K + c];
            }
            for (Index c = 0; c < K; ++c) k[row * K + c] /= std::sqrt(norm);
        }
        std::map<std::string, Tensor<double>> gates;
        Inputs<double> inputs{q.view(), k.view(), v.view(), {}};
        for (const GateSpec& gate : layer.gates()) {
            if (!gate.config.per_token) continue;
            if (gate.name == "p") {
                gates.emplace(gate.name, k);
            } else {
                Shape shape{1, gate.per_step ? n : 1, H};
                if (gate.config.axis == Axis::key) shape.push_back(gate.channels > 0 ? gate.channels : dims.key_features);
                if (gate.config.axis == Axis::value) shape.push_back(V);
                gates.emplace(gate.name, Tensor<double>(shape, direction_gate_value(gate.name)));
            }
            inputs.gates[gate.name] = gates.at(gate.name).view();
        }
        layer.forward(inputs, state);

        double worst = 0.0;
        for (Index h = 0; h < H; ++h) {
            auto W0 = start.heads[static_cast<std::size_t>(h)].memory;
            auto W1 = state.heads[static_cast<std::size_t>(h)].memory;
            const std::vector<double*> before = trained_entries(W0), after = trained_entries(W1);
            Vec<double> x;
            layer.memory().map(k.data() + h * K, K, x);
            const std::vector<double> target = bias_target(layer.bias(), k.data() + h * K, v.data() + h * V, dims);
            const std::vector<double> gradient =
                loss_gradient(layer.memory(), layer.bias(), W0, x, target.data(), check_delta(layer.bias(), h));
            double step_norm = 0.0, gradient_norm = 0.0;
            for (std::size_t e = 0; e < gradient.size(); ++e) {
                step_norm += (*after[e] - *before[e]) * (*after[e] - *before[e]);
                gradient_norm += gradient[e] * gradient[e];
            }
            step_norm = std::sqrt(step_norm);
            gradient_norm = std::sqrt(gradient_norm);
            if (step_norm == 0.0 || gradient_norm == 0.0) return std::numeric_limits<double>::infinity();
            double distance = 0.0;
            for (std::size_t e = 0; e < gradient.size(); ++e) {
                const double d = (*after[e] - *before[e]) / step_norm + gradient[e] / gradient_norm;
                distance += d * d;
            }
            worst = std::max(worst, std::sqrt(distance));
        }
        return worst;
    }
}

template <class Memory, class Bias, class Retention, class Algorithm>
Entry make_entry() {
    using L = Layer<Memory, Bias, Retention, Algorithm>;
    Entry entry;
    entry.memory = Memory::name;
    entry.bias = Bias::name;
    entry.retention = Retention::name;
    entry.algorithm = Algorithm::name;
    entry.build = [](const nlohmann::json& spec) -> std::unique_ptr<AnyLayer> {
        return std::make_unique<ErasedLayer<L>>(L(options_from(spec), from_spec<Memory>::build(spec),
                                                  from_spec<Bias>::build(spec), from_spec<Retention>::build(spec),
                                                  from_spec<Algorithm>::build(spec)));
    };
    entry.inner_gradient = [](const nlohmann::json& spec, unsigned seed) {
        const Memory memory = from_spec<Memory>::build(spec);
        const LayerOptions options = options_from(spec);
        LayerDims dims;
        dims.heads = options.heads;
        dims.key = options.key_dim;
        dims.value = options.value_dim;
        dims.key_features = memory.feature_dim(options.key_dim);
        return inner_gradient_error(memory, from_spec<Bias>::build(spec), dims, seed);
    };
    entry.update_direction = &update_direction_error<Memory, Bias, Retention, Algorithm>;
    return entry;
}

template <class Memory, class Bias, int Part>
std::vector<Entry> entries_for() {
    const auto combinations = hana::cartesian_product(hana::make_tuple(retention_types, algorithm_types));
    const auto valid = hana::filter(combinations, [](auto combination) {
        using R = typename decltype(+hana::at_c<0>(combination))::type;
        using A = typename decltype(+hana::at_c<1>(combination))::type;
        return hana::bool_c<registered_v<Memory, Bias, R, A>>;
    });
    constexpr std::size_t count = decltype(hana::length(valid))::value;
    std::vector<Entry> entries;
    hana::for_each(hana::make_range(hana::size_c<0>, hana::size_c<count>), [&](auto index) {
        if constexpr (decltype(index)::value % registry_parts<Memory, Bias> == Part) {
            const auto combination = hana::at(valid, index);
            using R = typename decltype(+hana::at_c<0>(combination))::type;
            using A = typename decltype(+hana::at_c<1>(combination))::type;
            entries.push_back(make_entry<Memory, Bias, R, A>());
        }
    });
    return entries;
}

}  // namespace miras::spec_registry
