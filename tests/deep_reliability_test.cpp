// Fault kinds of deep-memory layers: batch invariance, length-1 pieces, gate extremes, state-size
// accounting and inner-optimiser stability under clipping.
#include <cmath>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using miras::testing::max_abs_diff;
using miras::testing::Sequence;

LayerOptions small(Index heads = 1) {
    LayerOptions options;
    options.heads = heads;
    options.key_dim = options.value_dim = 4;
    return options;
}

Sequence<double> sequence(Index B, Index T, Index H, unsigned seed, double g_lo = -0.1) {
    Sequence<double> seq(B, T, H, 4, 4, seed, 0.5);
    seq.add_gate("eta", 0.05, 0.3);
    seq.add_gate("g", g_lo, 0.0);
    seq.add_gate("theta", -0.5, -0.05);
    seq.add_gate("delta", 0.5, 1.5);
    return seq;
}

/// A type-erased deep layer: run from a state, save and load.
struct Model {
    std::string name;
    std::function<Tensor<double>(const Inputs<double>&)> run;
    std::function<Tensor<double>(const Sequence<double>&, Index piece)> run_in_pieces;
    std::function<void(const Inputs<double>&, Index& size, Index& saved)> sizes;
};

template <class L>
Model model(std::string name, L layer) {
    Model m{std::move(name)};
    m.run = [layer](const Inputs<double>& inputs) { return layer.forward(inputs); };
    m.run_in_pieces = [layer](const Sequence<double>& seq, Index piece) {
        auto state = layer.template initial_state<double>(seq.B);
        Tensor<double> out({seq.B, seq.T, seq.H, seq.V});
        for (Index begin = 0; begin < seq.T; begin += piece) {
            const Index end = std::min(seq.T, begin + piece);
            const auto part = seq.slice(begin, end);
            const Tensor<double> o = layer.forward(part.inputs, state);
            state = layer.load_state(layer.save_state(state));
            const Index row = seq.H * seq.V;
            for (Index b = 0; b < seq.B; ++b) {
                for (Index i = 0; i < (end - begin) * row; ++i) out[(b * seq.T + begin) * row + i] = o[b * (end - begin) * row + i];
            }
        }
        return out;
    };
    m.sizes = [layer](const Inputs<double>& inputs, Index& size, Index& saved) {
        auto state = layer.template initial_state<double>(inputs.q.dim(0));
        layer.forward(inputs, state);
        size = layer.state_size_per_head();
        saved = 0;
        for (const auto& [name, tensor] : layer.save_state(state)) saved += tensor.size();
        saved /= inputs.q.dim(0) * inputs.q.dim(2);
    };
    return m;
}

std::vector<Model> models() {
    Momentum omega = presets::atlas(small(2)).algorithm();
    omega.minibatch_size = 3;
    const auto atlas = presets::atlas(small(2));
    return {model("ttt_linear", presets::ttt_linear(small(2), 4)),
            model("ttt_mlp", presets::ttt_mlp(small(2), 4)),
            model("ttt_linear_fla", presets::ttt_linear_fla(small(2), 4)),
            model("titans", presets::titans(small(2), 2, 3)),
            model("moneta", presets::moneta(small(2))),
            model("yaad", presets::yaad(small(2))),
            model("memora", presets::memora(small(2))),
            model("omeganet", presets::omeganet(small(2), 3)),
            model("atlas_chunked", presets::Atlas(atlas.options(), atlas.memory(), {}, atlas.retention(), omega))};
}

class DeepModel : public ::testing::TestWithParam<Model> {};

// A batch of two sequences equals the two sequences run one at a time.
TEST_P(DeepModel, BatchOfTwoEqualsTwoBatchesOfOne) {
    const auto seq = sequence(2, 9, 2, 1);
    const Tensor<double> both = GetParam().run(seq.inputs);
    for (Index b = 0; b < 2; ++b) {
        Sequence<double> one(1, 9, 2, 4, 4, 1);
        const Index per = 9 * 2 * 4, gate = 9 * 2;
        for (Index i = 0; i < per; ++i) {
            one.q[i] = seq.q[b * per + i];
            one.k[i] = seq.k[b * per + i];
            one.v[i] = seq.v[b * per + i];
        }
        for (const auto& [name, g] : seq.gates) {
            Tensor<double> part({1, 9, 2});
            for (Index i = 0; i < gate; ++i) part[i] = g[b * gate + i];
            one.gates[name] = part;
        }
        one.bind();
        const Tensor<double> single = GetParam().run(one.inputs);
        for (Index i = 0; i < per; ++i) EXPECT_EQ(single[i], both[b * per + i]) << "sequence " << b << " entry " << i;
    }
}

TEST_P(DeepModel, LengthOnePiecesEqualTheWholeRun) {
    const auto seq = sequence(1, 10, 2, 2);
    EXPECT_LE(max_abs_diff(GetParam().run_in_pieces(seq, 1), GetParam().run(seq.inputs)), 1e-13);
}

TEST_P(DeepModel, ExtremeLogGatesStayFinite) {
    for (double g : {-50.0, -1e4}) {
        auto seq = sequence(1, 12, 2, 3);
        for (Index i = 0; i < seq.gates["g"].size(); i += 3) seq.gates["g"][i] = g;
        for (Index i = 0; i < seq.gates["theta"].size(); i += 2) seq.gates["theta"][i] = g;
        const Tensor<double> o = GetParam().run(seq.inputs);
        Index bad = 0;
        for (Index i = 0; i < o.size(); ++i) bad += std::isfinite(o[i]) ? 0 : 1;
        EXPECT_EQ(bad, 0) << "log-gate " << g;
    }
}

TEST_P(DeepModel, StateSizeCountsTheSavedScalars) {
    const auto seq = sequence(1, 10, 2, 4);
    Index size = 0, saved = 0;
    GetParam().sizes(seq.inputs, size, saved);
    EXPECT_EQ(size, saved);
}

INSTANTIATE_TEST_SUITE_P(Presets, DeepModel, ::testing::ValuesIn(models()),
                         [](const ::testing::TestParamInfo<Model>& info) { return info.param.name; });

// Large inner rates on unnormalised keys: clipping keeps the memory bounded.
TEST(DeepStability, ClippingBoundsTheMemoryAtLargeRates) {
    Momentum step{GateConfig::constant(5.0)};
    step.use_momentum = false;
    step.clip_norm = 1.0;
    const presets::Titans titans(small(), presets::miras_memory(false), {}, presets::forget_gate(), step);
    Sequence<double> seq(1, 2000, 1, 4, 4, 5, 3.0);
    seq.add_gate("g", -0.2, -0.1);
    auto state = titans.initial_state<double>(1);
    const double start = std::sqrt(params_squared_norm(state.heads[0].memory));
    const Tensor<double> o = titans.forward(seq.inputs, state);
    double largest = 0.0;
    for (Index i = 0; i < o.size(); ++i) largest = std::max(largest, std::abs(o[i]));
    EXPECT_TRUE(std::isfinite(largest));
    // Each step moves the weights by at most eta * clip = 5 and decays them by at least exp(-0.1).
    EXPECT_LE(std::sqrt(params_squared_norm(state.heads[0].memory)), start + 5.0 / (1.0 - std::exp(-0.1)));
}

}  // namespace
