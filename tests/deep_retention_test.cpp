// The mirror retentions (lq, elastic net, KL, sigmoid): one or two steps against the formula
// written here, and the domain each keeps (Memora on the simplex, sigmoid in (0, 1)).
#include <cmath>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/layer/presets.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using miras::testing::Sequence;

using MirrorLayer = Layer<MatrixMemory, L2Bias, MirrorRetention, GradientStep>;

LayerOptions dims(Index key, Index value) {
    LayerOptions options;
    options.key_dim = key;
    options.value_dim = value;
    return options;
}

Vec<double> row(const Tensor<double>& t, Index i, Index n) { return Eigen::Map<const Vec<double>>(t.data() + i * n, n); }

/// Runs `tokens` steps from W0 with eta = 0.3 and g = -0.2 and returns the final memory.
Mat<double> run(const MirrorRetention& retention, const Mat<double>& W0, const Sequence<double>& seq) {
    const MirrorLayer layer(dims(seq.K, seq.V), {}, {}, retention, GradientStep{GateConfig::constant(0.3)});
    auto state = layer.initial_state<double>(1);
    state.heads[0].memory = W0;
    layer.forward(seq.inputs, state);
    return state.heads[0].memory;
}

Mat<double> gradient(const Mat<double>& W, const Sequence<double>& seq, Index t) {
    const Vec<double> k = row(seq.k, t, seq.K), v = row(seq.v, t, seq.V);
    return (W * k - v) * k.transpose();
}

double q_norm(const Mat<double>& m, double q) { return std::pow(m.array().abs().pow(q).sum(), 1.0 / q); }

TEST(MirrorRetention, LqStepsKeepTheirAccumulator) {
    const double q = 4.0, alpha = std::exp(-0.2);
    Sequence<double> seq(1, 2, 1, 3, 3, 1);
    Mat<double> W0(3, 3);
    W0.reshaped<Eigen::RowMajor>() = row(Sequence<double>(1, 1, 1, 9, 1, 2).q, 0, 9);
    // The accumulator A of W0 = A / ||A||^{q-2}: A = W0 / ||W0||^2 for q = 4.
    Mat<double> A = W0 / std::pow(q_norm(W0, q), 2.0), W = W0;
    for (Index t = 0; t < 2; ++t) {
        A = alpha * A - 0.3 * gradient(W, seq, t);
        W = A / std::pow(q_norm(A, q), q - 2.0);
    }
    MirrorRetention lq{MirrorKind::lq, GateConfig::constant(-0.2)};
    lq.q = q;
    EXPECT_LE((run(lq, W0, seq) - W).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(MirrorRetention, ElasticNetIsASoftThreshold) {
    Sequence<double> seq(1, 1, 1, 3, 3, 4);
    const Mat<double> W0 = Mat<double>::Constant(3, 3, 0.05);
    const Mat<double> z = std::exp(-0.2) * W0 - 0.3 * gradient(W0, seq, 0);
    const Mat<double> expected = z.unaryExpr([](double x) { return x > 0.1 ? x - 0.1 : (x < -0.1 ? x + 0.1 : 0.0); });
    MirrorRetention elastic{MirrorKind::elastic_net, GateConfig::constant(-0.2)};
    elastic.threshold = 0.1;
    const Mat<double> got = run(elastic, W0, seq);
    EXPECT_LE((got - expected).cwiseAbs().maxCoeff(), 1e-15);
    EXPECT_GT((got.array() == 0.0).count(), 0);
}

TEST(MirrorRetention, KlStepIsASoftmaxPerRow) {
    Sequence<double> seq(1, 1, 1, 3, 2, 6);
    const Mat<double> W0 = Mat<double>::Constant(2, 3, 1.0 / 3.0);
    const Mat<double> logits = std::exp(-0.2) * W0.array().log().matrix() - 0.3 * gradient(W0, seq, 0);
    Mat<double> expected = logits.array().exp();
    for (Index r = 0; r < 2; ++r) expected.row(r) /= expected.row(r).sum();
    EXPECT_LE((run(MirrorRetention{MirrorKind::kl, GateConfig::constant(-0.2)}, W0, seq) - expected).cwiseAbs().maxCoeff(), 1e-15);
}

TEST(MirrorRetention, KlOverTheWholeMatrixSumsToOne) {
    Sequence<double> seq(1, 5, 1, 3, 2, 6);
    MirrorRetention kl{MirrorKind::kl, GateConfig::constant(-0.2)};
    kl.domain = SoftmaxDomain::whole;
    const Mat<double> W = run(kl, Mat<double>::Constant(2, 3, 1.0 / 6.0), seq);
    EXPECT_NEAR(W.sum(), 1.0, 1e-14);
    EXPECT_GT(W.minCoeff(), 0.0);
}

// E13: alpha = 1 and a zero gradient leave a normalised W unchanged.
TEST(MirrorRetention, KlWithoutGradientIsTheIdentity) {
    const Layer<MatrixMemory, DotProductBias, MirrorRetention, GradientStep> layer(dims(3, 2), {}, {},
                                                                                   MirrorRetention{}, presets::unit_step());
    Sequence<double> seq(1, 4, 1, 3, 2, 6);
    for (Index i = 0; i < seq.v.size(); ++i) seq.v[i] = 0.0;
    auto state = layer.initial_state<double>(1);
    Mat<double> W0(2, 3);
    W0 << 0.2, 0.3, 0.5, 0.6, 0.1, 0.3;
    state.heads[0].memory = W0;
    layer.forward(seq.inputs, state);
    EXPECT_LE((state.heads[0].memory - W0).cwiseAbs().maxCoeff(), 1e-15);
}

TEST(MirrorRetention, SigmoidStepAndDomain) {
    Sequence<double> seq(1, 1, 1, 3, 3, 8);
    const Mat<double> W0 = Mat<double>::Constant(3, 3, 0.4);
    const Mat<double> z = (W0.array() / (1.0 - W0.array())).log().matrix() - 0.3 * gradient(W0, seq, 0);
    const Mat<double> expected = z.unaryExpr([](double x) { return 1.0 / (1.0 + std::exp(-x)); });
    EXPECT_LE((run(MirrorRetention{MirrorKind::sigmoid}, W0, seq) - expected).cwiseAbs().maxCoeff(), 1e-15);
    Sequence<double> longer(1, 50, 1, 3, 3, 9, 3.0);
    const Mat<double> W = run(MirrorRetention{MirrorKind::sigmoid}, W0, longer);
    EXPECT_GT(W.minCoeff(), 0.0);
    EXPECT_LT(W.maxCoeff(), 1.0);
}

// E13 for the Memora preset: every row of every weight matrix stays on the simplex.
TEST(Memora, WeightsStayOnTheSimplex) {
    LayerOptions options = dims(4, 4);
    options.heads = 2;
    const auto layer = presets::memora(options);
    Sequence<double> seq(1, 200, 2, 4, 4, 10);
    seq.add_gate("eta", 0.05, 0.5);
    seq.add_gate("g", -0.3, 0.0);
    auto state = layer.initial_state<double>(1);
    layer.forward(seq.inputs, state);
    for (const auto& head : state.heads) {
        for (const auto& w : head.memory.weights) {
            EXPECT_LE((w.rowwise().sum().array() - 1.0).abs().maxCoeff(), 1e-12);
            EXPECT_GT(w.minCoeff(), 0.0);
        }
    }
}

TEST(MirrorRetention, InvalidSettingsAreRejected) {
    MirrorRetention three{MirrorKind::lq};
    three.q = 3.0;
    EXPECT_THROW(MirrorLayer(dims(3, 3), {}, {}, three), ConfigError);
    MirrorRetention channel{MirrorKind::kl, GateConfig::input(Axis::key)};
    EXPECT_THROW(MirrorLayer(dims(3, 3), {}, {}, channel), ConfigError);
    MirrorRetention floor{MirrorKind::sigmoid};
    floor.floor = 0.0;
    EXPECT_THROW(MirrorLayer(dims(3, 3), {}, {}, floor), ConfigError);
    LayerOptions pairs = dims(3, 3);
    pairs.steps_per_token = 2;
    EXPECT_THROW(MirrorLayer(pairs, {}, {}, MirrorRetention{}), ConfigError);
}

}  // namespace
