// Deep layers evaluated on dual numbers: the derivative of every output along a direction in the
// keys, values and rates equals central finite differences of the double run. This is the path
// training uses for the terms of back-propagation through the inner updates.
#include <cmath>
#include <functional>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using D = Dual<double>;

LayerOptions small() {
    LayerOptions options;
    options.heads = 2;
    options.key_dim = options.value_dim = 4;
    return options;
}

/// Inputs at x + s u for a scalar s: q, k, v and the gates, each moved along its own direction.
struct Direction {
    miras::testing::Sequence<double> base{1, 7, 2, 4, 4, 3, 0.7};
    std::map<std::string, Tensor<double>> step;

    Direction() {
        base.add_gate("eta", 0.1, 0.4);
        base.add_gate("g", -0.3, -0.05);
        base.add_gate("theta", -0.6, -0.1);
        std::mt19937 rng(99);
        std::normal_distribution<double> normal(0.0, 1.0);
        for (const char* name : {"k", "v", "eta"}) {
            const Tensor<double>& t = tensor(name);
            Tensor<double> u(t.shape());
            for (Index i = 0; i < u.size(); ++i) u[i] = name == std::string("eta") ? 0.05 * normal(rng) : normal(rng);
            step.emplace(name, u);
        }
    }

    const Tensor<double>& tensor(const std::string& name) const {
        if (name == "k") return base.k;
        if (name == "v") return base.v;
        if (name == "q") return base.q;
        return base.gates.at(name);
    }

    template <class S>
    std::map<std::string, Tensor<S>> at(double s, bool seed) const {
        std::map<std::string, Tensor<S>> out;
        for (const char* name : {"q", "k", "v", "eta", "g", "theta"}) {
            const Tensor<double>& t = tensor(name);
            Tensor<S> moved(t.shape());
            const auto u = step.find(name);
            for (Index i = 0; i < t.size(); ++i) {
                const double d = u == step.end() ? 0.0 : u->second[i];
                if constexpr (std::is_same_v<S, D>) moved[i] = D(t[i], seed ? d : 0.0);
                else moved[i] = t[i] + s * d;
            }
            out.emplace(name, std::move(moved));
        }
        return out;
    }
};

template <class S>
Inputs<S> bind(const std::map<std::string, Tensor<S>>& tensors) {
    Inputs<S> inputs;
    inputs.q = tensors.at("q").view();
    inputs.k = tensors.at("k").view();
    inputs.v = tensors.at("v").view();
    for (const char* gate : {"eta", "g", "theta"}) inputs.gates[gate] = tensors.at(gate).view();
    return inputs;
}

template <class L>
void check(const L& layer) {
    const Direction dir;
    const auto dual_inputs = dir.at<D>(0.0, true);
    const Tensor<D> o = layer.forward(bind(dual_inputs));
    const double h = 1e-6;
    const auto plus_inputs = dir.at<double>(h, false), minus_inputs = dir.at<double>(-h, false);
    const Tensor<double> plus = layer.forward(bind(plus_inputs)), minus = layer.forward(bind(minus_inputs));
    double worst = 0.0, scale = 1e-3;
    for (Index i = 0; i < o.size(); ++i) {
        const double numeric = (plus[i] - minus[i]) / (2 * h);
        worst = std::max(worst, std::abs(numeric - derivative_of(o[i])));
        scale = std::max(scale, std::abs(numeric));
    }
    EXPECT_LE(worst / scale, 1e-6);
}

TEST(DeepDual, TttMlpDerivativeMatchesFiniteDifferences) { check(presets::ttt_mlp(small(), 3)); }

TEST(DeepDual, MonetaDerivativeMatchesFiniteDifferences) { check(presets::moneta(small(), 3.0, 4.0, MlpInit{false, 0.3, 2})); }

TEST(DeepDual, AtlasDerivativeMatchesFiniteDifferences) {
    check(presets::atlas(small(), 3, 5, 1, MlpInit{false, 0.3, 5}));
}

}  // namespace
