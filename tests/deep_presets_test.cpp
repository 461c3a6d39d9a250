// Every deep preset runs 65,536 tokens (small dimensions, normalised keys and queries) and stays
// finite, in float; the outputs move with the inputs.
#include <chrono>
#include <cmath>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/spec/any_layer.hpp"

namespace {

using namespace miras;
using miras::testing::Sequence;

constexpr Index kTokens = 65536;
constexpr Index kDim = 4;

LayerOptions small() {
    LayerOptions options;
    options.key_dim = options.value_dim = kDim;
    return options;
}

Sequence<float> long_sequence() {
    Sequence<float> seq(1, kTokens, 1, kDim, kDim, 2024);
    for (auto* t : {&seq.q, &seq.k}) {
        for (Index i = 0; i < kTokens; ++i) {
            float norm = 0.0f;
            for (Index c = 0; c < kDim; ++c) norm += (*t)[i * kDim + c] * (*t)[i * kDim + c];
            for (Index c = 0; c < kDim; ++c) (*t)[i * kDim + c] /= std::sqrt(norm) + 1e-6f;
        }
    }
    seq.add_gate("eta", 0.01, 0.1);
    seq.add_gate("g", -0.05, 0.0);
    seq.add_gate("theta", -0.5, -0.05);
    seq.add_gate("delta", 0.5, 2.0);
    return seq;
}

struct Case {
    std::string name;
    std::function<Tensor<float>(const Inputs<float>&)> run;
};

template <class L>
Case make(std::string name, L layer) {
    return {std::move(name), [layer](const Inputs<float>& inputs) { return layer.forward(inputs); }};
}

// Titans with mini-batches of 16 takes 16 momentum steps on gradients that do not see the moving
// weights; without clipping this float run grows until it overflows after about 32,000 tokens in some
// builds (it depends on the rounding of fused multiply-adds), so the mini-batch case clips G_t at 1.
presets::Titans clipped(presets::Titans layer) {
    Momentum algorithm = layer.algorithm();
    algorithm.clip_norm = 1.0;
    return presets::Titans(layer.options(), layer.memory(), layer.bias(), layer.retention(), algorithm);
}

class DeepPreset : public ::testing::TestWithParam<Case> {};

TEST_P(DeepPreset, LongRunStaysFinite) {
    static const Sequence<float> seq = long_sequence();
    const auto begin = std::chrono::steady_clock::now();
    const Tensor<float> o = GetParam().run(seq.inputs);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    Index bad = 0;
    double spread = 0.0;
    for (Index i = 0; i < o.size(); ++i) {
        if (!std::isfinite(o[i])) ++bad;
        if (i >= kDim) spread = std::max(spread, std::abs(static_cast<double>(o[i] - o[i - kDim])));
    }
    EXPECT_EQ(bad, 0) << GetParam().name;
    EXPECT_GT(spread, 1e-3) << GetParam().name;
    RecordProperty("seconds", std::to_string(seconds));
}

INSTANTIATE_TEST_SUITE_P(Presets, DeepPreset,
                         ::testing::Values(make("ttt_linear", presets::ttt_linear(small(), 16)),
                                           make("ttt_mlp", presets::ttt_mlp(small(), 16)),
                                           make("ttt_linear_fla", presets::ttt_linear_fla(small(), 16)),
                                           make("titans", presets::titans(small())),
                                           make("titans_chunked", clipped(presets::titans(small(), 2, 16))),
                                           make("moneta", presets::moneta(small())),
                                           make("yaad", presets::yaad(small())),
                                           make("memora", presets::memora(small())),
                                           make("omeganet", presets::omeganet(small())),
                                           make("atlas", presets::atlas(small()))),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// A deep layer behind the run-time interface: the same outputs, its component names, and a float
// state that survives a save and load in the middle of a mini-batch.
TEST(DeepAnyLayer, ErasedTttMlpMatchesTheLayer) {
    // The token loop on both sides: whole mini-batches would otherwise run as matrix products in
    // one call and partly token by token in the split calls, equal only up to rounding.
    LayerOptions options = small();
    options.execution = Execution::reference;
    const auto layer = presets::ttt_mlp(options, 4);
    const ErasedLayer<presets::Ttt> erased(layer);
    EXPECT_EQ(erased.memory_name(), "mlp");
    EXPECT_EQ(erased.algorithm_name(), "minibatch_gd");
    Sequence<float> seq(1, 10, 1, kDim, kDim, 6);
    seq.add_gate("eta", 0.1, 0.4);
    const Tensor<float> direct = layer.forward(seq.inputs);
    auto state = erased.initial_state(1, false);
    const auto first = seq.slice(0, 6), second = seq.slice(6, 10);
    erased.forward(first.inputs, *state);
    auto reloaded = erased.load_state(erased.save_state(*state), false);
    const Tensor<float> tail = erased.forward(second.inputs, *reloaded);
    for (Index i = 0; i < tail.size(); ++i) EXPECT_EQ(tail[i], direct[6 * kDim + i]) << "entry " << i;
}

}  // namespace
