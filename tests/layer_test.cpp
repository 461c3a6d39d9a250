// Properties every preset must have as a sequence layer, for several head sizes, including a key
// dimension different from the value dimension and dimensions 1 and 3. One call equals the same
// sequence split into calls that pass the state, and no initial state is the zero state. A state
// survives save_state and load_state, and each sequence of a batch is independent. T = 0 is an
// empty call, and state_size_per_head follows the memory's formula.
#include <cmath>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "support.hpp"

namespace {

using namespace miras;
using namespace miras::test;

/// Heads and the key and value dimension of each head.
struct Dims {
    Index heads, key, value;
};

constexpr Index kT = 8;

using Param = std::tuple<Preset, Dims>;

class LayerProperty : public ::testing::TestWithParam<Param> {
protected:
    void SetUp() override {
        preset_ = std::get<0>(GetParam());
        const Dims dims = std::get<1>(GetParam());
        LayerOptions o;
        o.heads = dims.heads;
        o.key_dim = dims.key;
        o.value_dim = dims.value;
        model_ = preset_.make(o);
    }

    const AnyLayer& layer() const { return model_->any(); }

    TensorMap<double> inputs(Index B, Index T, std::uint64_t seed) const {
        TensorMap<double> in = random_inputs(layer().dims(), layer().gates(), B, T, seed);
        finish_inputs(preset_, in);
        return in;
    }

    /// Runs the pieces [0, p0), [p0, p0 + p1), ... one call each, passing the state along, and
    /// returns the outputs joined along the token axis and the final state.
    std::pair<Tensor<double>, TensorMap<double>> run_pieces(const TensorMap<double>& in, Index T,
                                                            const std::vector<Index>& pieces,
                                                            bool through_tensors) const {
        const Index B = in.at("q").dim(0);
        std::unique_ptr<AnyState> state = layer().initial_state(B, true);
        std::vector<Tensor<double>> outputs;
        Index begin = 0;
        for (Index length : pieces) {
            const TensorMap<double> part = token_slice(in, T, begin, begin + length);
            outputs.push_back(layer().forward(as_inputs(part), *state));
            if (through_tensors) state = layer().load_state(layer().save_state(*state), true);
            begin += length;
        }
        EXPECT_EQ(begin, T);
        return {join_tokens(outputs), layer().save_state(*state)};
    }

    static Tensor<double> join_tokens(const std::vector<Tensor<double>>& parts) {
        Shape shape = parts.front().shape();
        shape[1] = 0;
        for (const auto& part : parts) shape[1] += part.dim(1);
        Tensor<double> joined(shape);
        const Index per_token = shape[2] * shape[3];
        Index offset = 0;
        for (const auto& part : parts) {
            for (Index b = 0; b < shape[0]; ++b) {
                for (Index i = 0; i < part.dim(1) * per_token; ++i) {
                    joined[(b * shape[1] + offset) * per_token + i] = part[b * part.dim(1) * per_token + i];
                }
            }
            offset += part.dim(1);
        }
        return joined;
    }

    static double max_state_diff(const TensorMap<double>& a, const TensorMap<double>& b) {
        if (a.size() != b.size()) return INFINITY;
        double worst = 0.0;
        for (const auto& [name, tensor] : a) {
            auto found = b.find(name);
            if (found == b.end()) return INFINITY;
            worst = std::max(worst, max_rel_diff(tensor, found->second));
        }
        return worst;
    }

    Preset preset_;
    std::unique_ptr<Model> model_;
};

TEST_P(LayerProperty, SplitCallsEqualOneCall) {
    const auto in = inputs(2, kT, 1);
    const auto [whole, whole_state] = run_pieces(in, kT, {kT}, false);
    const std::vector<std::vector<Index>> splits{{1, 1, 1, 1, 1, 1, 1, 1}, {3, 5}, {1, 3, 1, 2, 1}, {7, 1}};
    for (const auto& pieces : splits) {
        const auto [split, split_state] = run_pieces(in, kT, pieces, false);
        EXPECT_LE(max_rel_diff(split, whole), 1e-12) << "pieces of " << pieces.size();
        EXPECT_LE(max_state_diff(split_state, whole_state), 1e-12) << "pieces of " << pieces.size();
    }
}

TEST_P(LayerProperty, ResumingFromSavedStateEqualsOneCall) {
    const auto in = inputs(2, kT, 2);
    const auto [whole, whole_state] = run_pieces(in, kT, {kT}, false);
    const auto [split, split_state] = run_pieces(in, kT, {1, 4, 1, 2}, true);
    EXPECT_LE(max_rel_diff(split, whole), 1e-12);
    EXPECT_LE(max_state_diff(split_state, whole_state), 1e-12);
}

TEST_P(LayerProperty, SaveLoadRoundTripIsExact) {
    const auto in = inputs(2, kT, 3);
    auto state = layer().initial_state(2, true);
    layer().forward(as_inputs(in), *state);
    const TensorMap<double> saved = layer().save_state(*state);
    const TensorMap<double> again = layer().save_state(*layer().load_state(saved, true));
    EXPECT_EQ(max_state_diff(again, saved), 0.0);
}

TEST_P(LayerProperty, NoInitialStateIsZeroState) {
    const auto in = inputs(2, kT, 4);
    // Zero tensors of the shapes the layer gives its own empty state (no cached pairs for a kv cache).
    TensorMap<double> zeros;
    for (const auto& [name, tensor] : layer().save_state(*layer().initial_state(2, true))) {
        zeros.emplace(name, Tensor<double>(tensor.shape(), 0.0));
    }
    const Tensor<double> without = model_->run(in);
    const Tensor<double> with_zero = model_->run(in, &zeros);
    EXPECT_EQ(max_rel_diff(without, with_zero), 0.0);
}

TEST_P(LayerProperty, NonzeroInitialStateChangesOutput) {
    const auto in = inputs(1, kT, 5);
    auto state = layer().initial_state(1, true);
    layer().forward(as_inputs(inputs(1, 3, 6)), *state);
    const TensorMap<double> warm = layer().save_state(*state);
    EXPECT_GT(max_rel_diff(model_->run(in, &warm), model_->run(in)), 1e-6);
}

TEST_P(LayerProperty, BatchOfTwoEqualsTwoBatchesOfOne) {
    const auto in = inputs(2, kT, 7);
    const Tensor<double> both = model_->run(in);
    const Tensor<double> first = model_->run(batch_slice(in, 0, 1));
    const Tensor<double> second = model_->run(batch_slice(in, 1, 2));
    ASSERT_EQ(both.size(), first.size() + second.size());
    const auto middle = both.values().begin() + first.size();
    const Tensor<double> both_first(first.shape(), std::vector<double>(both.values().begin(), middle));
    const Tensor<double> both_second(second.shape(), std::vector<double>(middle, both.values().end()));
    EXPECT_LE(max_rel_diff(both_first, first), 1e-14);
    EXPECT_LE(max_rel_diff(both_second, second), 1e-14);
}

// Each sequence keeps its own initial state: a batch of two with different states equals two
// batches of one, each with its own slice of the state.
TEST_P(LayerProperty, BatchWithDifferentStatesEqualsSeparateRuns) {
    auto state = layer().initial_state(2, true);
    layer().forward(as_inputs(inputs(2, 3, 12)), *state);
    const TensorMap<double> warm = layer().save_state(*state);
    const auto in = inputs(2, kT, 13);
    const Tensor<double> both = model_->run(in, &warm);
    for (Index b = 0; b < 2; ++b) {
        const TensorMap<double> own_state = batch_slice(warm, b, b + 1);
        const Tensor<double> alone = model_->run(batch_slice(in, b, b + 1), &own_state);
        const TensorMap<double> both_map{{"o", both}};
        EXPECT_LE(max_rel_diff(batch_slice(both_map, b, b + 1).at("o"), alone), 1e-14) << "sequence " << b;
    }
}

TEST_P(LayerProperty, EmptySequenceKeepsState) {
    const Index B = 2;
    auto state = layer().initial_state(B, true);
    layer().forward(as_inputs(inputs(B, 3, 8)), *state);
    const TensorMap<double> before = layer().save_state(*state);
    const TensorMap<double> empty = inputs(B, 0, 9);
    const Tensor<double> out = layer().forward(as_inputs(empty), *state);
    const LayerDims& dims = layer().dims();
    EXPECT_EQ(out.shape(), (Shape{B, 0, dims.heads, dims.value}));
    EXPECT_EQ(max_state_diff(layer().save_state(*state), before), 0.0);
}

TEST_P(LayerProperty, FloatStateSplitMatchesOneCall) {
    const auto in = cast_all<float>(inputs(1, kT, 10));
    auto whole_state = layer().initial_state(1, false);
    const Tensor<float> whole = layer().forward(as_inputs(in), *whole_state);
    auto split_state = layer().initial_state(1, false);
    const Tensor<float> head = layer().forward(as_inputs(token_slice(in, kT, 0, 3)), *split_state);
    const Tensor<float> tail = layer().forward(as_inputs(token_slice(in, kT, 3, kT)), *split_state);
    std::vector<float> joined = head.values();
    joined.insert(joined.end(), tail.values().begin(), tail.values().end());
    EXPECT_LE(max_rel_diff(Tensor<float>(whole.shape(), joined), whole), 1e-6);
}

TEST_P(LayerProperty, StateSizeFollowsFormula) {
    const LayerDims& dims = layer().dims();
    const std::string memory = layer().memory_name();
    const std::string algorithm = layer().algorithm_name();
    Index expected = 0;
    if (memory == "matrix") expected = dims.value * dims.key_features;
    if (memory == "vector") expected = dims.value;
    if (memory == "kv_cache") expected = dims.key_features + dims.value + 1;  // per cached pair
    if (algorithm == "least_squares") expected += dims.key_features * dims.key_features;
    EXPECT_EQ(layer().state_size_per_head(), expected);

    // Second route: the scalars per head (per cached pair for a kv cache) of a saved state.
    auto state = layer().initial_state(1, true);
    layer().forward(as_inputs(inputs(1, 4, 11)), *state);
    Index saved = 0;
    for (const auto& [name, tensor] : layer().save_state(*state)) {
        saved += memory == "kv_cache" ? tensor.dim(3) : tensor.dim(2) * tensor.dim(3);
    }
    EXPECT_EQ(layer().state_size_per_head(), saved);
}

/// Returns every preset with every head shape it accepts (the vector memory needs K = V).
std::vector<Param> params() {
    const std::vector<Dims> shapes{{2, 3, 2}, {1, 1, 1}, {3, 3, 3}, {2, 1, 4}};
    std::vector<Param> all;
    for (const Preset& preset : all_presets()) {
        for (const Dims& dims : shapes) {
            if (!preset.needs_square || dims.key == dims.value) all.emplace_back(preset, dims);
        }
    }
    return all;
}

void PrintTo(const Dims& d, std::ostream* out) { *out << "H=" << d.heads << " K=" << d.key << " V=" << d.value; }

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
    const Dims d = std::get<1>(info.param);
    return std::get<0>(info.param).name + "_h" + std::to_string(d.heads) + "k" + std::to_string(d.key) + "v" +
           std::to_string(d.value);
}

INSTANTIATE_TEST_SUITE_P(Presets, LayerProperty, ::testing::ValuesIn(params()), param_name);

LayerOptions square_options() {
    LayerOptions o;
    o.heads = 2;
    o.key_dim = 3;
    o.value_dim = 3;
    return o;
}

/// Returns the presets that take a per-token log-gate g.
std::vector<Preset> gated_presets() {
    std::vector<Preset> gated;
    for (const Preset& preset : all_presets()) {
        for (const GateSpec& spec : preset.make(square_options())->any().gates()) {
            if (spec.name == "g" && spec.config.per_token) {
                gated.push_back(preset);
                break;
            }
        }
    }
    return gated;
}

class GateExtremes : public ::testing::TestWithParam<Preset> {};

// Log-gates of -50 and -1e4 on every token keep the outputs finite.
TEST_P(GateExtremes, VeryNegativeLogGatesStayFinite) {
    const auto model = GetParam().make(square_options());
    const AnyLayer& layer = model->any();
    for (double g : {-50.0, -1e4}) {
        TensorMap<double> in = random_inputs(layer.dims(), layer.gates(), 1, kT, 14);
        for (double& x : in.at("g").values()) x = g;
        finish_inputs(GetParam(), in);
        const Tensor<double> out = model->run(in);
        bool finite = true;
        for (double x : out.values()) finite = finite && std::isfinite(x);
        EXPECT_TRUE(finite) << "g = " << g;
    }
}

INSTANTIATE_TEST_SUITE_P(Presets, GateExtremes, ::testing::ValuesIn(gated_presets()), preset_name);

/// Runs a layer on the inputs in double from the zero state.
template <class L>
Tensor<double> forward(const L& layer, const TensorMap<double>& in) {
    return layer.forward(as_inputs(in));
}

// A log-gate of exactly 0 makes a gated rule equal its ungated twin.
TEST(ZeroLogGate, GatedDeltaNetEqualsDeltaNet) {
    LayerOptions o;
    o.heads = 2;
    o.key_dim = 3;
    o.value_dim = 2;
    const auto gated = presets::gated_deltanet(o);
    TensorMap<double> in = random_inputs(gated.dims(), gated.gates(), 2, kT, 15);
    for (double& x : in.at("g").values()) x = 0.0;
    TensorMap<double> ungated = in;
    ungated.erase("g");
    EXPECT_LE(max_rel_diff(forward(gated, in), forward(presets::deltanet(o), ungated)), 1e-15);
}

TEST(ZeroLogGate, Mamba2EqualsLinearAttention) {
    LayerOptions o;
    o.heads = 2;
    o.key_dim = 3;
    o.value_dim = 2;
    const auto gated = presets::mamba2(o);
    TensorMap<double> in = random_inputs(gated.dims(), gated.gates(), 2, kT, 16);
    for (double& x : in.at("g").values()) x = 0.0;
    TensorMap<double> ungated = in;
    ungated.erase("g");
    EXPECT_LE(max_rel_diff(forward(gated, in), forward(presets::linear_attention(o), ungated)), 1e-15);
}

}  // namespace
