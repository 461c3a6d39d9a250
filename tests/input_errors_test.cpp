// Invalid inputs and configurations raise InputError or ConfigError, and the message names the
// tensor or option, where the bad value is (for example "t=3"), and what is valid.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support.hpp"

namespace {

using namespace miras;
using namespace miras::test;

constexpr Index kB = 2, kT = 5, kH = 2, kK = 3, kV = 4;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

LayerOptions options() {
    LayerOptions o;
    o.heads = kH;
    o.key_dim = kK;
    o.value_dim = kV;
    return o;
}

/// Valid inputs of a layer, which each case then breaks in one place.
template <class L>
TensorMap<double> valid_inputs(const L& layer) {
    return random_inputs(layer.dims(), layer.gates(), kB, kT, 3);
}

/// Flat index of (b, t, h, c) in a [B, T, H, C] tensor, or of (b, t, h) when C = 0.
Index flat(Index b, Index t, Index h, Index c, Index C) {
    return C == 0 ? (b * kT + t) * kH + h : ((b * kT + t) * kH + h) * C + c;
}

template <class L>
void run(const L& layer, const TensorMap<double>& in) {
    layer.forward(as_inputs(in));
}

enum class Kind { input, config };

struct Case {
    std::string name;
    std::function<void()> action;
    Kind kind;
    std::vector<std::string> fragments;  // every one must appear in the message
};

void PrintTo(const Case& c, std::ostream* out) { *out << c.name; }

std::vector<Case> cases() {
    using namespace presets;
    std::vector<Case> table;

    table.push_back({"q_wrong_key_dim", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["q"] = Tensor<double>({kB, kT, kH, kK + 1});
                         run(layer, in);
                     },
                     Kind::input, {"'q'", "[2, 5, 2, 4]", "expected [2, 5, 2, 3]", "[B, T, H, K]"}});
    table.push_back({"k_wrong_token_count", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["k"] = Tensor<double>({kB, kT - 1, kH, kK});
                         run(layer, in);
                     },
                     Kind::input, {"'k'", "[2, 4, 2, 3]", "expected [2, 5, 2, 3]"}});
    table.push_back({"v_wrong_value_dim", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["v"] = Tensor<double>({kB, kT, kH, kV - 1});
                         run(layer, in);
                     },
                     Kind::input, {"'v'", "[2, 5, 2, 3]", "expected [2, 5, 2, 4]", "[B, T, H, V]"}});
    table.push_back({"deltaproduct_k_one_pair_per_token", [] {
                         const auto layer = deltaproduct(options(), 2);
                         auto in = valid_inputs(layer);
                         in["k"] = Tensor<double>({kB, kT, kH, kK});
                         run(layer, in);
                     },
                     Kind::input, {"'k'", "expected [2, 10, 2, 3]", "n pairs per token"}});
    table.push_back({"positive_log_gate", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["g"][flat(1, 3, 0, 0, 0)] = 0.25;
                         run(layer, in);
                     },
                     Kind::input, {"'g'", "b=1", "t=3", "h=0", "0.25", "g <= 0"}});
    table.push_back({"negative_rate", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["eta"][flat(0, 2, 1, 0, 0)] = -0.5;
                         run(layer, in);
                     },
                     Kind::input, {"'eta'", "t=2", "h=1", "-0.5", ">= 0"}});
    table.push_back({"nan_channel_gate", [] {
                         const auto layer = kda(options());
                         auto in = valid_inputs(layer);
                         in["g"][flat(0, 1, 1, 2, kK)] = kNaN;
                         run(layer, in);
                     },
                     Kind::input, {"'g'", "t=1", "h=1", "c=2", "nan", "finite"}});
    table.push_back({"inf_gate", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in["eta"][flat(1, 4, 1, 0, 0)] = kInf;
                         run(layer, in);
                     },
                     Kind::input, {"'eta'", "t=4", "inf", "finite"}});
    table.push_back({"nan_query", [] {
                         const auto layer = linear_attention(options());
                         auto in = valid_inputs(layer);
                         in["q"][flat(0, 3, 1, 2, kK)] = kNaN;
                         run(layer, in);
                     },
                     Kind::input, {"'q'", "t=3", "h=1", "c=2", "nan", "finite"}});
    table.push_back({"inf_value", [] {
                         const auto layer = softmax_attention(options());
                         auto in = valid_inputs(layer);
                         in["v"][flat(1, 0, 0, 3, kV)] = -kInf;
                         run(layer, in);
                     },
                     Kind::input, {"'v'", "b=1", "t=0", "c=3", "-inf", "finite"}});
    table.push_back({"channel_gate_wrong_channels", [] {
                         const auto layer = gla(options());
                         auto in = valid_inputs(layer);
                         in["g"] = Tensor<double>({kB, kT, kH, kK + 2}, -0.1);
                         run(layer, in);
                     },
                     Kind::input, {"'g'", "[2, 5, 2, 5]", "expected [2, 5, 2, 3]", "C = 3 key channels"}});
    table.push_back({"missing_per_token_gate", [] {
                         const auto layer = gated_deltanet(options());
                         auto in = valid_inputs(layer);
                         in.erase("eta");
                         run(layer, in);
                     },
                     Kind::input, {"missing", "'eta'", "[2, 5, 2]", ">= 0"}});
    table.push_back({"fixed_gate_wrong_count", [] {
                         const presets::DecayedLinearAttention layer(
                             options(), {}, {}, DecayRetention{GateConfig::per_head({-0.1, -0.2, -0.3})},
                             unit_step());
                         run(layer, valid_inputs(layer));
                     },
                     Kind::input, {"'g'", "3 values", "expected 1, H = 2"}});
    table.push_back({"fixed_gate_out_of_range", [] {
                         const presets::DecayedLinearAttention layer(
                             options(), {}, {}, DecayRetention{GateConfig::per_head({-0.1, 0.2})}, unit_step());
                         run(layer, valid_inputs(layer));
                     },
                     Kind::input, {"'g'", "value 1", "0.2", "g <= 0"}});
    table.push_back({"fixed_ridge_zero", [] {
                         const auto layer = mesanet(options(), {0.0});
                         run(layer, valid_inputs(layer));
                     },
                     Kind::input, {"'lambda'", "value 0", "> 0"}});
    table.push_back({"state_wrong_batch", [] {
                         const auto layer = gated_deltanet(options());
                         auto state = layer.initial_state<double>(kB + 1);
                         const auto in = valid_inputs(layer);
                         layer.forward(as_inputs(in), state);
                     },
                     Kind::input, {"state", "3 sequences", "B = 2", "initial_state(2)"}});
    table.push_back({"state_wrong_matrix_shape", [] {
                         const auto layer = gated_deltanet(options());
                         TensorMap<double> state{{"W", Tensor<double>({kB, kH, kV + 1, kK})}};
                         layer.load_state(state);
                     },
                     Kind::input, {"'W'", "[5, 3]", "expected [4, 3]"}});
    table.push_back({"state_wrong_heads", [] {
                         const auto layer = gated_deltanet(options());
                         TensorMap<double> state{{"W", Tensor<double>({kB, kH + 1, kV, kK})}};
                         layer.load_state(state);
                     },
                     Kind::input, {"'W'", "[2, 3, 4, 3]", "H = 2"}});
    table.push_back({"state_missing_tensor", [] {
                         const auto layer = mesanet(options());
                         TensorMap<double> state{{"W", Tensor<double>({kB, kH, kV, kK})}};
                         layer.load_state(state);
                     },
                     Kind::input, {"missing", "'H'"}});
    table.push_back({"state_nan_entry", [] {
                         const auto layer = gated_deltanet(options());
                         Tensor<double> W({kB, kH, kV, kK});
                         W[((1 * kH + 0) * kV + 3) * kK + 1] = kNaN;
                         layer.load_state(TensorMap<double>{{"W", W}});
                     },
                     Kind::input, {"state tensor 'W'", "b=1", "h=0", "i=3", "j=1", "nan", "finite"}});
    table.push_back({"zero_heads", [] {
                         LayerOptions o = options();
                         o.heads = 0;
                         (void)gated_deltanet(o);
                     },
                     Kind::config, {"heads", "0", "1 or more"}});
    table.push_back({"zero_key_dim", [] {
                         LayerOptions o = options();
                         o.key_dim = 0;
                         (void)linear_attention(o);
                     },
                     Kind::config, {"key dimension", "0", "1 or more"}});
    table.push_back({"zero_steps_per_token", [] {
                         (void)deltaproduct(options(), 0);
                     },
                     Kind::config, {"steps per token", "0", "1 or more"}});
    table.push_back({"infinite_query_scale", [] {
                         LayerOptions o = options();
                         o.query_scale = kInf;
                         (void)linear_attention(o);
                     },
                     Kind::config, {"query scale", "inf", "finite"}});
    table.push_back({"vector_memory_not_square", [] {
                         (void)elementwise_linear_rnn(options());
                     },
                     Kind::config, {"vector memory", "(3)", "(4)"}});
    table.push_back({"negative_window", [] {
                         (void)sliding_window_attention(options(), -2);
                     },
                     Kind::config, {"window", "-2", "positive"}});
    table.push_back({"polynomial_degree_zero", [] {
                         (void)FeatureMap::polynomial(0);
                     },
                     Kind::config, {"degree", "0", "1 to 6"}});
    table.push_back({"conjugate_gradient_no_iterations", [] {
                         (void)mesanet(options(), {1.0}, LinearSolver::conjugate_gradient, 0);
                     },
                     Kind::config, {"conjugate gradient", "0", "1 or more"}});
    return table;
}

class InputErrors : public ::testing::TestWithParam<Case> {};

TEST_P(InputErrors, RaisesWithPositionAndValidRange) {
    const Case& c = GetParam();
    std::string message;
    bool right_type = false;
    try {
        c.action();
    } catch (const InputError& e) {
        message = e.what();
        right_type = c.kind == Kind::input;
    } catch (const ConfigError& e) {
        message = e.what();
        right_type = c.kind == Kind::config;
    }
    ASSERT_FALSE(message.empty()) << "no miras error was raised";
    EXPECT_TRUE(right_type) << "wrong error type; message: " << message;
    for (const std::string& fragment : c.fragments) {
        EXPECT_NE(message.find(fragment), std::string::npos) << "'" << fragment << "' not in: " << message;
    }
}

INSTANTIATE_TEST_SUITE_P(Cases, InputErrors, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// The same inputs without the fault run, so every case above fails only for its one change.
TEST(InputErrorsBaseline, ValidInputsRun) {
    using namespace presets;
    EXPECT_NO_THROW(run(gated_deltanet(options()), valid_inputs(gated_deltanet(options()))));
    EXPECT_NO_THROW(run(kda(options()), valid_inputs(kda(options()))));
    EXPECT_NO_THROW(run(gla(options()), valid_inputs(gla(options()))));
    EXPECT_NO_THROW(run(softmax_attention(options()), valid_inputs(softmax_attention(options()))));
    EXPECT_NO_THROW(run(mesanet(options()), valid_inputs(mesanet(options()))));
    EXPECT_NO_THROW(run(deltaproduct(options(), 2), valid_inputs(deltaproduct(options(), 2))));
}

}  // namespace
