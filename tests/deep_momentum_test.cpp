// Momentum (Titans, Atlas), the Omega window and the robust biases: each against a recurrence
// written here or against another execution form of the algebra.
#include <cmath>
#include <vector>

#include <Eigen/SVD>
#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/layer/presets.hpp"
#include "miras/bias/value_shift.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using miras::testing::max_abs_diff;
using miras::testing::dims;
using miras::testing::Sequence;

Vec<double> row(const Tensor<double>& t, Index i, Index n) { return Eigen::Map<const Vec<double>>(t.data() + i * n, n); }

using MatrixMomentum = Layer<MatrixMemory, L2Bias, DecayRetention, Momentum>;
using MatrixMiniBatch = Layer<MatrixMemory, L2Bias, DecayRetention, MiniBatchGD>;

DecayRetention forget() { return presets::forget_gate(); }

Sequence<double> gated_sequence(Index T, Index K, Index V, unsigned seed) {
    Sequence<double> seq(1, T, 1, K, V, seed);
    seq.add_gate("eta", 0.05, 0.5);
    seq.add_gate("g", -0.3, 0.0);
    seq.add_gate("theta", -1.0, -0.05);
    seq.add_gate("gamma", 0.2, 1.0);
    return seq;
}

TEST(Momentum, LinearTitansEqualsItsRecurrence) {
    const Index T = 15, K = 4, V = 3;
    const MatrixMomentum layer(dims(1, K, V), {}, {}, forget(), Momentum{presets::per_token(), presets::per_token()});
    auto seq = gated_sequence(T, K, V, 3);
    const Tensor<double> o = layer.forward(seq.inputs);
    Mat<double> W = Mat<double>::Zero(V, K), S = W;
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        const Vec<double> k = row(seq.k, t, K), v = row(seq.v, t, V), q = row(seq.q, t, K) / 2.0;
        S = std::exp(seq.gates["theta"][t]) * S - seq.gates["eta"][t] * (W * k - v) * k.transpose();
        W = std::exp(seq.gates["g"][t]) * W + S;
        worst = std::max(worst, (W * q - row(o, t, V)).cwiseAbs().maxCoeff());
    }
    EXPECT_LE(worst, 1e-12);
}

TEST(Momentum, WithoutMomentumEqualsMiniBatchDescent) {
    for (Index b : {1, 3}) {
        Momentum plain{presets::per_token()};
        plain.use_momentum = false;
        plain.minibatch_size = b;
        const MatrixMomentum momentum(dims(2, 4, 4), {}, {}, forget(), plain);
        const MatrixMiniBatch minibatch(dims(2, 4, 4), {}, {}, forget(), MiniBatchGD{b, presets::per_token()});
        Sequence<double> seq(2, 14, 2, 4, 4, 7);
        seq.add_gate("eta", 0.1, 0.6);
        seq.add_gate("g", -0.3, 0.0);
        EXPECT_LE(max_abs_diff(momentum.forward(seq.inputs), minibatch.forward(seq.inputs)), 1e-13) << "b = " << b;
    }
}

TEST(Momentum, OmegaWindowEqualsTheWindowedSum) {
    const Index T = 12, K = 4, V = 3, c = 3;
    Momentum omega{presets::per_token(), presets::per_token()};
    omega.window = c;
    omega.window_weight = presets::per_token();
    const MatrixMomentum layer(dims(1, K, V), {}, {}, forget(), omega);
    auto seq = gated_sequence(T, K, V, 5);
    const Tensor<double> o = layer.forward(seq.inputs);
    Mat<double> W = Mat<double>::Zero(V, K), S = W;
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        Mat<double> G = Mat<double>::Zero(V, K);
        for (Index i = std::max<Index>(0, t - c + 1); i <= t; ++i) {
            const Vec<double> k = row(seq.k, i, K), v = row(seq.v, i, V);
            G += seq.gates["gamma"][i] * (W * k - v) * k.transpose();
        }
        S = std::exp(seq.gates["theta"][t]) * S - seq.gates["eta"][t] * G;
        W = std::exp(seq.gates["g"][t]) * W + S;
        worst = std::max(worst, (W * row(seq.q, t, K) / 2.0 - row(o, t, V)).cwiseAbs().maxCoeff());
    }
    EXPECT_LE(worst, 1e-12);
}

TEST(Momentum, NewtonSchulzStepEqualsItsRecurrence) {
    const Index T = 9, K = 4, V = 3;
    Momentum atlas{presets::per_token(), presets::per_token()};
    atlas.newton_schulz_steps = 5;
    const MatrixMomentum layer(dims(1, K, V), {}, {}, forget(), atlas);
    auto seq = gated_sequence(T, K, V, 8);
    const Tensor<double> o = layer.forward(seq.inputs);
    Mat<double> W = Mat<double>::Zero(V, K), S = W;
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        const Vec<double> k = row(seq.k, t, K), v = row(seq.v, t, V);
        S = std::exp(seq.gates["theta"][t]) * S + (W * k - v) * k.transpose();
        W = std::exp(seq.gates["g"][t]) * W - seq.gates["eta"][t] * newton_schulz(S, 5);
        worst = std::max(worst, (W * row(seq.q, t, K) / 2.0 - row(o, t, V)).cwiseAbs().maxCoeff());
    }
    EXPECT_LE(worst, 1e-12);
}

TEST(NewtonSchulz, SingularValuesMoveTowardsOne) {
    Mat<double> g(6, 4);
    g.reshaped<Eigen::RowMajor>() = Eigen::Map<const Vec<double>>(Sequence<double>(1, 1, 1, 24, 1, 4).q.data(), 24) * 3.0;
    const Mat<double> x = newton_schulz(g, 5);
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(x);
    for (Index i = 0; i < 4; ++i) {
        EXPECT_GT(svd.singularValues()[i], 0.5);
        EXPECT_LT(svd.singularValues()[i], 1.5);
    }
    EXPECT_EQ(x.rows(), 6);
}

TEST(Momentum, ClippingBoundsTheGradient) {
    Momentum clipped{GateConfig::constant(1.0)};
    clipped.clip_norm = 0.2;
    const Layer<MatrixMemory, L2Bias, NoRetention, Momentum> layer(dims(1, 4, 4), {}, {}, {}, clipped);
    Sequence<double> seq(1, 1, 1, 4, 4, 2, 2.0);
    auto state = layer.initial_state<double>(1);
    layer.forward(seq.inputs, state);
    EXPECT_NEAR(state.heads[0].memory.norm(), 0.2, 1e-12);
}

// Split inside a mini-batch and inside the Omega window, with a save and load in between.
TEST(Momentum, SplitAndResumeKeepsWindowAndMomentum) {
    const auto layer = presets::atlas(dims(1, 4, 4), 3, 5);
    Momentum chunked = layer.algorithm();
    chunked.minibatch_size = 4;
    const presets::Atlas chunk_layer(layer.options(), layer.memory(), {}, layer.retention(), chunked);
    Sequence<double> seq(1, 11, 1, 4, 4, 12);
    seq.add_gate("eta", 0.01, 0.1);
    seq.add_gate("g", -0.1, 0.0);
    seq.add_gate("theta", -0.5, -0.1);
    for (const auto* l : {&layer, &chunk_layer}) {
        const Tensor<double> whole = l->forward(seq.inputs);
        auto state = l->initial_state<double>(1);
        const auto first = seq.slice(0, 6), second = seq.slice(6, 11);
        l->forward(first.inputs, state);
        state = l->load_state(l->save_state(state));
        const Tensor<double> tail = l->forward(second.inputs, state);
        for (Index i = 0; i < tail.size(); ++i) EXPECT_NEAR(tail[i], whole[6 * 4 + i], 1e-13) << "entry " << i;
    }
}

TEST(Momentum, OverfullWindowInAStateIsRejected) {
    const auto layer = presets::omeganet(dims(1, 4, 4), 3);
    auto saved = layer.save_state(layer.initial_state<double>(1));
    saved["window.gamma"] = Tensor<double>({1, 1, 3, 1}, 1.0);
    EXPECT_THROW(layer.load_state(saved), InputError);
}

TEST(Momentum, InvalidSettingsAreRejected) {
    using L = Layer<MatrixMemory, L2Bias, NoRetention, Momentum>;
    Momentum window;
    window.window = 0;
    EXPECT_THROW(L(dims(1, 4, 4), {}, {}, {}, window), ConfigError);
    Momentum ns;
    ns.newton_schulz_steps = -1;
    EXPECT_THROW(L(dims(1, 4, 4), {}, {}, {}, ns), ConfigError);
    Momentum channel;
    channel.rate = GateConfig::input(Axis::key);
    EXPECT_THROW(L(dims(1, 4, 4), {}, {}, {}, channel), ConfigError);
}

// E8: (2, 2)-Moneta is Titans without momentum at twice the rate (l_2 without the 1/2).
TEST(Moneta, TwoTwoEqualsTitansWithoutMomentum) {
    const LayerOptions options = dims(1, 4, 4);
    const auto moneta = presets::moneta(options, 2.0, 2.0, MlpInit{false, 0.3, 1});
    Momentum plain{presets::per_token()};
    plain.use_momentum = false;
    const presets::Titans titans(options, moneta.memory(), {}, presets::forget_gate(), plain);
    Sequence<double> seq(1, 20, 1, 4, 4, 14);
    seq.add_gate("eta", 0.05, 0.3);
    seq.add_gate("g", -0.2, 0.0);
    const Tensor<double> o1 = moneta.forward(seq.inputs);
    for (Index i = 0; i < seq.gates["eta"].size(); ++i) seq.gates["eta"][i] *= 2.0;
    EXPECT_LE(max_abs_diff(o1, titans.forward(seq.inputs)), 1e-12);
}

using HuberLayer = Layer<MatrixMemory, HuberBias, NoRetention, GradientStep>;

TEST(Huber, LargeDeltaIsTheL2Bias) {
    for (HuberKind kind : {HuberKind::coordinate, HuberKind::norm, HuberKind::mixture}) {
        const HuberLayer huber(dims(1, 4, 4), {}, HuberBias{kind, GateConfig::constant(1e9)}, {}, presets::per_token_step());
        Sequence<double> seq(1, 10, 1, 4, 4, 3);
        seq.add_gate("eta", 0.1, 0.5);
        EXPECT_LE(max_abs_diff(huber.forward(seq.inputs), presets::deltanet(dims(1, 4, 4)).forward(seq.inputs)), 1e-13);
    }
}

TEST(Huber, SmallDeltaMixtureStepsBySign) {
    const double delta = 1e-3, eta = 0.5;
    const HuberLayer yaad(dims(1, 3, 3), {}, HuberBias{HuberKind::mixture, GateConfig::constant(delta)}, {},
                          GradientStep{GateConfig::constant(eta)});
    Sequence<double> seq(1, 1, 1, 3, 3, 6);
    auto state = yaad.initial_state<double>(1);
    yaad.forward(seq.inputs, state);
    const Vec<double> k = row(seq.k, 0, 3), v = row(seq.v, 0, 3);
    const Mat<double> expected = -eta * delta * (-v).array().sign().matrix() * k.transpose();
    EXPECT_LE((state.heads[0].memory - expected).cwiseAbs().maxCoeff(), 1e-15);
}

TEST(Huber, PerTokenDeltaEqualsFixedDelta) {
    const HuberLayer fixed(dims(2, 4, 4), {}, HuberBias{HuberKind::norm, GateConfig::constant(0.3)}, {}, presets::unit_step());
    const HuberLayer gated(dims(2, 4, 4), {}, HuberBias{HuberKind::norm, presets::per_token()}, {}, presets::unit_step());
    Sequence<double> seq(1, 8, 2, 4, 4, 9);
    seq.add_gate("delta", 0.3, 0.3);
    EXPECT_LE(max_abs_diff(fixed.forward(seq.inputs), gated.forward(seq.inputs)), 1e-15);
}

TEST(Huber, PerTokenDeltaIsRead) {
    const HuberLayer small(dims(1, 4, 4), {}, HuberBias{HuberKind::norm, GateConfig::constant(0.01)}, {}, presets::unit_step());
    const HuberLayer gated(dims(1, 4, 4), {}, HuberBias{HuberKind::norm, presets::per_token()}, {}, presets::unit_step());
    Sequence<double> seq(1, 8, 1, 4, 4, 9);
    seq.add_gate("delta", 5.0, 6.0);
    EXPECT_GT(max_abs_diff(small.forward(seq.inputs), gated.forward(seq.inputs)), 1e-3);
}

TEST(Huber, NonPositiveDeltaIsRejected) {
    const HuberLayer gated(dims(1, 4, 4), {}, HuberBias{HuberKind::norm, presets::per_token()}, {}, presets::unit_step());
    Sequence<double> seq(1, 3, 1, 4, 4, 9);
    seq.add_gate("delta", -1.0, 0.0);
    EXPECT_THROW(gated.forward(seq.inputs), InputError);
}

TEST(ValueShift, ZeroRadiusIsTheL2Bias) {
    const Layer<MatrixMemory, ValueShiftBias, NoRetention, GradientStep> shift(dims(1, 4, 4), {}, ValueShiftBias{0.0}, {},
                                                                               presets::per_token_step());
    Sequence<double> seq(1, 10, 1, 4, 4, 3);
    seq.add_gate("eta", 0.1, 0.5);
    EXPECT_LE(max_abs_diff(shift.forward(seq.inputs), presets::deltanet(dims(1, 4, 4)).forward(seq.inputs)), 1e-15);
}

}  // namespace
