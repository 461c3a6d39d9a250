// Forward-mode derivatives through every preset. One input entry is seeded in Dual<double>, and the
// derivative of every output entry must match a central finite difference of the double forward.
// The seeds are a key entry, each per-token gate in turn, and an entry of each initial-state tensor.
#include <cmath>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#define MIRAS_TEST_DUAL
#include "support.hpp"

namespace {

using namespace miras;
using namespace miras::test;

constexpr Index kT = 5, kWarmup = 4;
constexpr double kStep = 1e-6;

LayerOptions options() {
    LayerOptions o;
    o.heads = 2;
    o.key_dim = 3;
    o.value_dim = 3;  // equal, because the vector memory needs it
    return o;
}

/// The entry that receives the seed: tensor `name` of the inputs or of the initial state.
struct Entry {
    std::string name;
    Index index = 0;
    bool in_state = false;
};

/// Row 1 (the second token), last head, last channel of a [1, T, H, ...] tensor.
Index second_token_entry(const Tensor<double>& tensor) {
    const Index per_row = tensor.size() / tensor.dim(1);
    return 2 * per_row - 1;
}

/// Runs the preset with the entry moved by `shift`: a step of +-h in double, the unit seed in dual.
/// A gate moves before the derived keys are computed from it. A key moves after, so that the moved
/// key reaches HGRN2, whose keys are otherwise computed from its gate.
template <class S>
Tensor<S> run_shifted(const Preset& preset, const Model& model, const TensorMap<double>& in,
                      const TensorMap<double>& state, const Entry& entry, const S& shift) {
    TensorMap<S> inputs = cast_all<S>(in);
    TensorMap<S> start = cast_all<S>(state);
    if (entry.in_state) {
        start.at(entry.name)[entry.index] += shift;
        finish_inputs(preset, inputs);
    } else if (entry.name == "k") {
        finish_inputs(preset, inputs);
        inputs.at("k")[entry.index] += shift;
    } else {
        inputs.at(entry.name)[entry.index] += shift;
        finish_inputs(preset, inputs);
    }
    return model.run(inputs, &start);
}

class DualThroughPreset : public ::testing::TestWithParam<Preset> {
protected:
    void SetUp() override {
        model_ = GetParam().make(options());
        const AnyLayer& layer = model_->any();
        inputs_ = random_inputs(layer.dims(), layer.gates(), 1, kT, 7);
        // A state from a warm-up sequence, so that it is valid for every memory (a positive
        // definite H for least squares, cached pairs for the kv cache).
        TensorMap<double> warmup = random_inputs(layer.dims(), layer.gates(), 1, kWarmup, 8);
        finish_inputs(GetParam(), warmup);
        auto state = layer.initial_state(1, true);
        layer.forward(as_inputs(warmup), *state);
        state_ = layer.save_state(*state);
    }

    /// Compares the dual derivative of every output entry with the central difference.
    void check(const Entry& entry) const {
        const Preset& preset = GetParam();
        const Tensor<D1> dual = run_shifted(preset, *model_, inputs_, state_, entry, D1(0.0, 1.0));
        const Tensor<double> plus = run_shifted(preset, *model_, inputs_, state_, entry, kStep);
        const Tensor<double> minus = run_shifted(preset, *model_, inputs_, state_, entry, -kStep);
        const Tensor<double> plain = run_shifted(preset, *model_, inputs_, state_, entry, 0.0);
        ASSERT_EQ(dual.shape(), plus.shape());

        double worst = 0.0, largest = 0.0, value_error = 0.0;
        for (Index i = 0; i < dual.size(); ++i) {
            const double difference = (plus[i] - minus[i]) / (2.0 * kStep);
            worst = std::max(worst, std::abs(dual[i].d - difference) / std::max(1.0, std::abs(difference)));
            largest = std::max(largest, std::abs(difference));
            value_error = std::max(value_error, std::abs(dual[i].v - plain[i]));
        }
        EXPECT_LE(worst, 1e-6) << "seed " << entry.name << "[" << entry.index << "]";
        EXPECT_LE(value_error, 1e-13) << "seed " << entry.name << "[" << entry.index << "]";
        // The seeded entry must move the output, because otherwise the comparison above proves nothing.
        EXPECT_GT(largest, 1e-4) << "seed " << entry.name << "[" << entry.index << "]";
    }

    std::unique_ptr<Model> model_;
    TensorMap<double> inputs_;
    TensorMap<double> state_;
};

TEST_P(DualThroughPreset, KeyEntry) { check({"k", second_token_entry(inputs_.at("k")), false}); }

/// The presets with at least one per-token gate.
class DualThroughGatedPreset : public DualThroughPreset {};

TEST_P(DualThroughGatedPreset, PerTokenGateEntries) {
    int seeded = 0;
    for (const GateSpec& spec : model_->any().gates()) {
        if (!spec.config.per_token) continue;
        check({spec.name, second_token_entry(inputs_.at(spec.name)), false});
        ++seeded;
    }
    EXPECT_GT(seeded, 0);
}

TEST_P(DualThroughPreset, InitialStateEntries) {
    ASSERT_FALSE(state_.empty());
    for (const auto& [name, tensor] : state_) check({name, tensor.size() - 1, true});
}

std::vector<Preset> presets_with_token_gates() {
    std::vector<Preset> gated;
    for (const Preset& preset : all_presets()) {
        for (const GateSpec& spec : preset.make(options())->any().gates()) {
            if (spec.config.per_token) {
                gated.push_back(preset);
                break;
            }
        }
    }
    return gated;
}

INSTANTIATE_TEST_SUITE_P(Presets, DualThroughPreset, ::testing::ValuesIn(all_presets()), preset_name);
INSTANTIATE_TEST_SUITE_P(Presets, DualThroughGatedPreset, ::testing::ValuesIn(presets_with_token_gates()),
                         preset_name);

}  // namespace
