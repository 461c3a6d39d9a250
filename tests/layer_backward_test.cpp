// The reverse pass through the inner updates against central finite differences of Layer::forward
// in double: gradients of sum(R * o) + <R_W, W_T> with respect to q, k, v, every per-token gate and
// the initial state, for linear attention, RetNet, Mamba2, GLA, DeltaNet, Gated DeltaNet in both
// placements, KDA and per-channel rates. Checkpoint spacing must not change any gradient.
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/backward.hpp"
#include "miras/layer/presets.hpp"

namespace {

using namespace miras;

constexpr Index B = 2, T = 5, H = 2, K = 3, V = 2;

LayerOptions options(ReadTiming read = ReadTiming::after_write) {
    LayerOptions o;
    o.heads = H;
    o.key_dim = K;
    o.value_dim = V;
    o.read = read;
    return o;
}

Tensor<double> uniform(std::mt19937_64& rng, Shape shape, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    Tensor<double> t(std::move(shape));
    for (Index i = 0; i < t.size(); ++i) t[i] = u(rng);
    return t;
}

/// Random q, k, v, per-token gates (log-gates in [-1, -0.05], rates in [0.1, 0.9]), initial state
/// and loss weights for one layer.
struct Problem {
    std::map<std::string, Tensor<double>> tensors;  // q, k, v, each per-token gate, W0
    Tensor<double> r_output, r_state;
    std::vector<std::string> gate_names;

    template <class L>
    Problem(const L& layer, std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        tensors["q"] = uniform(rng, {B, T, H, K}, -1, 1);
        tensors["k"] = uniform(rng, {B, T, H, K}, -1, 1);
        tensors["v"] = uniform(rng, {B, T, H, V}, -1, 1);
        tensors["W0"] = uniform(rng, {B, H, V, K}, -0.5, 0.5);
        for (const GateSpec& spec : layer.gates()) {
            if (!spec.config.per_token) continue;
            Shape shape{B, T, H};
            if (spec.config.axis == Axis::key) shape.push_back(K);
            if (spec.config.axis == Axis::value) shape.push_back(V);
            tensors[spec.name] = spec.range == Range::log_gate ? uniform(rng, shape, -1, -0.05) : uniform(rng, shape, 0.1, 0.9);
            gate_names.push_back(spec.name);
        }
        r_output = uniform(rng, {B, T, H, V}, -1, 1);
        r_state = uniform(rng, {B, H, V, K}, -1, 1);
    }

    Inputs<double> inputs() const {
        Inputs<double> in{tensors.at("q").view(), tensors.at("k").view(), tensors.at("v").view(), {}};
        for (const std::string& name : gate_names) in.gates.emplace(name, tensors.at(name).view());
        return in;
    }

    template <class L>
    double loss(const L& layer) const {
        auto state = layer.template load_state<double>({{"W", tensors.at("W0")}});
        const Tensor<double> o = layer.forward(inputs(), state);
        const Tensor<double> W = layer.save_state(state).at("W");
        double total = 0;
        for (Index i = 0; i < o.size(); ++i) total += r_output[i] * o[i];
        for (Index i = 0; i < W.size(); ++i) total += r_state[i] * W[i];
        return total;
    }

    template <class L>
    LayerGradients<double> gradients(const L& layer, Index checkpoint_every) const {
        auto state = layer.template load_state<double>({{"W", tensors.at("W0")}});
        const TensorView<double> d_state = r_state.view();
        return layer_backward(layer, inputs(), &state, r_output.view(), &d_state, checkpoint_every);
    }
};

const Tensor<double>& gradient_of(const LayerGradients<double>& g, const std::string& name) {
    if (name == "q") return g.q;
    if (name == "k") return g.k;
    if (name == "v") return g.v;
    if (name == "W0") return g.initial_state;
    return g.gates.at(name);
}

template <class L>
void check_against_finite_differences(const L& layer, std::uint64_t seed) {
    Problem p(layer, seed);
    const LayerGradients<double> g = p.gradients(layer, 2);

    const Tensor<double> reference = layer.forward(p.inputs(), *std::make_unique<typename L::template State<double>>(
                                                                     layer.template load_state<double>({{"W", p.tensors.at("W0")}})));
    for (Index i = 0; i < reference.size(); ++i) ASSERT_NEAR(g.output[i], reference[i], 1e-12) << "output " << i;

    const double h = 1e-6;
    for (auto& [name, tensor] : p.tensors) {
        const Tensor<double>& analytic = gradient_of(g, name);
        ASSERT_EQ(analytic.shape(), tensor.shape()) << name;
        for (Index i = 0; i < tensor.size(); ++i) {
            const double saved = tensor[i];
            tensor[i] = saved + h;
            const double up = p.loss(layer);
            tensor[i] = saved - h;
            const double down = p.loss(layer);
            tensor[i] = saved;
            const double numeric = (up - down) / (2 * h);
            EXPECT_NEAR(analytic[i], numeric, 1e-7 * std::max(1.0, std::abs(numeric))) << name << " element " << i;
        }
    }
}

template <class L>
void check_checkpoint_invariance(const L& layer, std::uint64_t seed) {
    Problem p(layer, seed);
    const LayerGradients<double> every = p.gradients(layer, 1);
    for (Index c : {2, 3, 5, 8}) {
        const LayerGradients<double> g = p.gradients(layer, c);
        for (const auto& [name, tensor] : p.tensors) {
            const Tensor<double>& a = gradient_of(every, name);
            const Tensor<double>& b = gradient_of(g, name);
            for (Index i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << name << " " << i << " with C = " << c;
        }
    }
}

struct Case {
    const char* name;
    std::function<void(std::uint64_t)> finite_differences;
    std::function<void(std::uint64_t)> checkpoints;
};

template <class L>
Case make_case(const char* name, L layer) {
    return {name, [layer](std::uint64_t s) { check_against_finite_differences(layer, s); },
            [layer](std::uint64_t s) { check_checkpoint_invariance(layer, s); }};
}

const std::vector<Case>& cases() {
    using presets::per_token_decay;
    static const std::vector<Case> table{
        make_case("LinearAttention", presets::linear_attention(options())),
        make_case("RetNet", presets::retnet(options())),
        make_case("Mamba2", presets::mamba2(options())),
        make_case("GLA", presets::gla(options())),
        make_case("DeltaNet", presets::deltanet(options())),
        make_case("GatedDeltaNetDecayThenGradient", presets::gated_deltanet(options())),
        make_case("GatedDeltaNetGradientThenDecay",
                  presets::GatedDeltaNet(options(), {}, {}, per_token_decay(Axis::head, Placement::gradient_then_decay),
                                         presets::per_token_step())),
        make_case("KDA", presets::kda(options())),
        make_case("DeltaRatePerValueChannel",
                  presets::DeltaNet(options(), {}, {}, {}, GradientStep{GateConfig::input(Axis::value)})),
        make_case("GatedDeltaValueDecayKeyRate",
                  presets::GatedDeltaNet(options(), {}, {}, per_token_decay(Axis::value, Placement::gradient_then_decay),
                                         GradientStep{GateConfig::input(Axis::key)})),
        make_case("DecayedLinearAttentionKeyRate",
                  presets::DecayedLinearAttention(options(), {}, {}, per_token_decay(Axis::key),
                                                  GradientStep{GateConfig::input(Axis::key)})),
        make_case("DeltaNetReadBeforeWrite", presets::deltanet(options(ReadTiming::before_write))),
    };
    return table;
}

class LayerBackward : public ::testing::TestWithParam<std::size_t> {};

INSTANTIATE_TEST_SUITE_P(Layers, LayerBackward, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const auto& info) { return std::string(cases()[info.param].name); });

TEST_P(LayerBackward, MatchesCentralDifferences) { cases()[GetParam()].finite_differences(100 + GetParam()); }

TEST_P(LayerBackward, CheckpointSpacingChangesNothing) { cases()[GetParam()].checkpoints(200 + GetParam()); }

TEST(LayerBackwardErrors, RejectsUncoveredOptionsAndShapes) {
    const auto comba = presets::comba(options());
    Problem p(comba, 1);
    p.tensors["p"] = Tensor<double>({B, T, H, K}, 0.1);
    auto in = p.inputs();
    in.gates.emplace("p", p.tensors.at("p").view());
    EXPECT_THROW(layer_backward(comba, in, nullptr, p.r_output.view()), ConfigError);

    const auto delta = presets::deltanet(options());
    Problem d(delta, 2);
    const Tensor<double> wrong({B, T, H, V + 1});
    EXPECT_THROW(layer_backward(delta, d.inputs(), nullptr, wrong.view()), InputError);
    EXPECT_THROW(layer_backward(delta, d.inputs(), nullptr, d.r_output.view(), static_cast<const TensorView<double>*>(nullptr), 0),
                 ConfigError);
}

}  // namespace

namespace {

// The same gradients in float agree with double to float precision.
TEST(LayerBackwardFloat, AgreesWithDouble) {
    const auto layer = miras::presets::gated_deltanet(options());
    Problem p(layer, 7);

    std::map<std::string, Tensor<float>> narrow;
    for (const auto& [name, tensor] : p.tensors) {
        Tensor<float> t(tensor.shape());
        for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<float>(tensor[i]);
        narrow.emplace(name, std::move(t));
    }
    Tensor<float> r_output(p.r_output.shape());
    for (Index i = 0; i < r_output.size(); ++i) r_output[i] = static_cast<float>(p.r_output[i]);
    Inputs<float> in{narrow.at("q").view(), narrow.at("k").view(), narrow.at("v").view(), {}};
    for (const std::string& name : p.gate_names) in.gates.emplace(name, narrow.at(name).view());
    auto state = layer.load_state<float>({{"W", narrow.at("W0")}});
    const LayerGradients<float> g = layer_backward(layer, in, &state, r_output.view(), nullptr, 3);

    const auto double_state = layer.load_state<double>({{"W", p.tensors.at("W0")}});
    const LayerGradients<double> no_final = layer_backward(layer, p.inputs(), &double_state, p.r_output.view(), nullptr, 2);
    for (Index i = 0; i < g.k.size(); ++i) EXPECT_NEAR(g.k[i], no_final.k[i], 1e-4) << "k " << i;
    for (Index i = 0; i < g.q.size(); ++i) EXPECT_NEAR(g.q[i], no_final.q[i], 1e-4) << "q " << i;
    for (Index i = 0; i < g.v.size(); ++i) EXPECT_NEAR(g.v[i], no_final.v[i], 1e-4) << "v " << i;
    for (Index i = 0; i < g.initial_state.size(); ++i) {
        EXPECT_NEAR(g.initial_state[i], no_final.initial_state[i], 1e-4) << "W0 " << i;
    }
    for (const std::string& name : p.gate_names) {
        for (Index i = 0; i < g.gates.at(name).size(); ++i) {
            EXPECT_NEAR(g.gates.at(name)[i], no_final.gates.at(name)[i], 1e-4) << name << " " << i;
        }
    }
}

}  // namespace
