// The definition of entries_for<Memory, Part>: the cartesian product of {Memory} with the bias,
// retention and algorithm lists, filtered by is_valid_combination_v, one Entry per survivor of
// this part. Included only by the registry_<memory>*.cpp units, each of which instantiates one part.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "components.hpp"
#include "miras/layer/layer.hpp"

namespace miras::spec_registry {

/// max |G - G_fd| / max(1, max |G_fd|), where G = J^T dl/dy comes from the memory and the bias at a
/// random W, k and v, and G_fd is the central difference of l(M(W; phi(k)), v) in each entry of W
/// (at most 256 entries, spread over W).
template <class Memory, class Bias>
double inner_gradient_error(const Memory& memory, const Bias& bias, const LayerDims& dims, unsigned seed) {
    if constexpr (!Memory::parametric) {
        return -1.0;
    } else {
        std::mt19937_64 rng(seed);
        std::normal_distribution<double> normal(0.0, 1.0);
        auto W = memory.template zero_params<double>(dims);
        for (Index i = 0; i < W.rows(); ++i) {
            for (Index j = 0; j < W.cols(); ++j) W(i, j) = 0.5 * normal(rng);
        }
        std::vector<double> k(static_cast<std::size_t>(dims.key)), v(static_cast<std::size_t>(dims.value));
        for (double& x : k) x = normal(rng) / std::sqrt(static_cast<double>(dims.key));
        for (double& x : v) x = normal(rng);

        Vec<double> x, y, dy;
        memory.map(k.data(), dims.key, x);
        memory.predict(W, x, y);
        bias.gradient(y, v.data(), dy);
        auto G = memory.template zero_params<double>(dims);
        memory.add_gradient(G, 1.0, dy, x);

        const auto loss = [&](const auto& params) {
            Vec<double> prediction;
            memory.predict(params, x, prediction);
            return bias.loss(prediction, v.data());
        };
        const Index entries = W.rows() * W.cols();
        const Index stride = std::max<Index>(1, entries / 256);
        const double h = 1e-5;
        double largest = 0.0, worst = 0.0;
        for (Index flat = 0; flat < entries; flat += stride) {
            const Index i = flat / W.cols(), j = flat % W.cols();
            auto plus = W, minus = W;
            plus(i, j) += h;
            minus(i, j) -= h;
            const double fd = (loss(plus) - loss(minus)) / (2.0 * h);
            largest = std::max(largest, std::abs(fd));
            worst = std::max(worst, std::abs(G(i, j) - fd));
        }
        return worst / std::max(1.0, largest);
    }
}

/// Central difference of l(M(W; x), v) in every entry of W.
template <class Memory, class Bias, class Params>
Params loss_gradient(const Memory& memory, const Bias& bias, const Params& W, const Vec<double>& x, const double* v) {
    const auto loss = [&](const Params& params) {
        Vec<double> prediction;
        memory.predict(params, x, prediction);
        return bias.loss(prediction, v);
    };
    const double h = 1e-5;
    Params gradient = W;
    for (Index i = 0; i < W.rows(); ++i) {
        for (Index j = 0; j < W.cols(); ++j) {
            Params plus = W, minus = W;
            plus(i, j) += h;
            minus(i, j) -= h;
            gradient(i, j) = (loss(plus) - loss(minus)) / (2.0 * h);
        }
    }
    return gradient;
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
            for (Index i = 0; i < head.memory.rows(); ++i) {
                for (Index j = 0; j < head.memory.cols(); ++j) head.memory(i, j) = 0.5 * normal(rng);
            }
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
                double value = 0.0;
                if (gate.name == "eta") value = 0.5;
                if (gate.name == "beta") value = 1.0;
                gates.emplace(gate.name, Tensor<double>(shape, value));
            }
            inputs.gates[gate.name] = gates.at(gate.name).view();
        }
        layer.forward(inputs, state);

        double worst = 0.0;
        for (Index h = 0; h < H; ++h) {
            const auto& W0 = start.heads[static_cast<std::size_t>(h)].memory;
            const auto step = (state.heads[static_cast<std::size_t>(h)].memory - W0).eval();
            Vec<double> x;
            layer.memory().map(k.data() + h * K, K, x);
            const auto gradient = loss_gradient(layer.memory(), layer.bias(), W0, x, v.data() + h * V);
            const double step_norm = step.norm(), gradient_norm = gradient.norm();
            if (step_norm == 0.0 || gradient_norm == 0.0) return std::numeric_limits<double>::infinity();
            worst = std::max(worst, (step / step_norm + gradient / gradient_norm).norm());
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

template <class Memory, int Part>
std::vector<Entry> entries_for() {
    const auto combinations =
        hana::cartesian_product(hana::make_tuple(hana::tuple_t<Memory>, bias_types, retention_types, algorithm_types));
    const auto valid = hana::filter(combinations, [](auto combination) {
        using M = typename decltype(+hana::at_c<0>(combination))::type;
        using B = typename decltype(+hana::at_c<1>(combination))::type;
        using R = typename decltype(+hana::at_c<2>(combination))::type;
        using A = typename decltype(+hana::at_c<3>(combination))::type;
        return hana::bool_c<is_valid_combination_v<M, B, R, A>>;
    });
    constexpr std::size_t count = decltype(hana::length(valid))::value;
    std::vector<Entry> entries;
    hana::for_each(hana::make_range(hana::size_c<0>, hana::size_c<count>), [&](auto index) {
        if constexpr (decltype(index)::value % registry_parts<Memory> == Part) {
            const auto combination = hana::at(valid, index);
            using M = typename decltype(+hana::at_c<0>(combination))::type;
            using B = typename decltype(+hana::at_c<1>(combination))::type;
            using R = typename decltype(+hana::at_c<2>(combination))::type;
            using A = typename decltype(+hana::at_c<3>(combination))::type;
            entries.push_back(make_entry<M, B, R, A>());
        }
    });
    return entries;
}

}  // namespace miras::spec_registry
