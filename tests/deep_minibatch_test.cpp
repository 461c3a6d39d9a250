// Mini-batch gradient descent: b = 1 is the online rule, the closed form with decay products equals
// stepping, batch GD from zero is linear attention (TTT Theorem 1), the official TTT primal form
// equals a dual (matmul) form written here, split-and-resume inside a mini-batch, gradient clipping.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/layer/presets.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using miras::testing::max_abs_diff;
using miras::testing::dims;
using miras::testing::Sequence;

using MatrixMiniBatch = Layer<MatrixMemory, L2Bias, DecayRetention, MiniBatchGD>;

class OnlineEquivalence : public ::testing::TestWithParam<Placement> {};

TEST_P(OnlineEquivalence, MiniBatchOfOneEqualsTheOnlineRule) {
    const LayerOptions options = dims(2, 4, 3);
    const DecayRetention decay{GateConfig::input(Axis::head), GetParam()};
    const MatrixMiniBatch minibatch(options, {}, {}, decay, MiniBatchGD{1, GateConfig::input(Axis::head)});
    const presets::GatedDeltaNet online(options, {}, {}, decay, presets::per_token_step());
    Sequence<double> seq(2, 17, 2, 4, 3, 5);
    seq.add_gate("eta", 0.1, 0.8);
    seq.add_gate("g", -0.5, 0.0);
    auto s1 = minibatch.initial_state<double>(2);
    auto s2 = online.initial_state<double>(2);
    EXPECT_LE(max_abs_diff(minibatch.forward(seq.inputs, s1), online.forward(seq.inputs, s2)), 1e-13);
    EXPECT_LE(max_abs_diff(minibatch.save_state(s1).at("W"), online.save_state(s2).at("W")), 1e-13);
}

INSTANTIATE_TEST_SUITE_P(Placements, OnlineEquivalence,
                         ::testing::Values(Placement::decay_then_gradient, Placement::gradient_then_decay));

// Titans Eq. 16 / Miras Eq. 28: W_t = beta_t W0 - sum_i eta_i (beta_t / beta_i) G_i(W0) in a chunk.
TEST(MiniBatch, ClosedFormWithDecayProductsEqualsStepping) {
    const Index T = 13, b = 4, K = 4, V = 3;
    const LayerOptions options = dims(1, K, V);
    const MatrixMiniBatch layer(options, {}, {}, DecayRetention{GateConfig::input(Axis::head), Placement::gradient_then_decay},
                                MiniBatchGD{b, GateConfig::input(Axis::head)});
    Sequence<double> seq(1, T, 1, K, V, 9);
    seq.add_gate("eta", 0.1, 0.6);
    seq.add_gate("g", -0.4, 0.0);
    const Tensor<double> o = layer.forward(seq.inputs);

    const double scale = 1.0 / std::sqrt(static_cast<double>(K));
    const auto vec = [](const Tensor<double>& t, Index i, Index n) { return Vec<double>(Eigen::Map<const Vec<double>>(t.data() + i * n, n)); };
    Mat<double> W0 = Mat<double>::Zero(V, K);
    double worst = 0.0;
    for (Index start = 0; start < T; start += b) {
        Mat<double> Wt;
        for (Index t = start; t < std::min(T, start + b); ++t) {
            double beta_t = 1.0;
            for (Index j = start; j <= t; ++j) beta_t *= std::exp(seq.gates["g"][j]);
            Wt = beta_t * W0;
            for (Index i = start; i <= t; ++i) {
                double beta_i = 1.0;
                for (Index j = start; j <= i; ++j) beta_i *= std::exp(seq.gates["g"][j]);
                const Vec<double> k = vec(seq.k, i, K), v = vec(seq.v, i, V);
                Wt -= seq.gates["eta"][i] * (beta_t / beta_i) * (W0 * k - v) * k.transpose();
            }
            const Vec<double> expected = Wt * (scale * vec(seq.q, t, K));
            for (Index c = 0; c < V; ++c) worst = std::max(worst, std::abs(expected[c] - o[t * V + c]));
        }
        W0 = Wt;
    }
    EXPECT_LE(worst, 1e-12);
}

// TTT Theorem 1: linear f, batch GD over the whole sequence from W0 = 0, eta = 1 (1/2 for the
// un-halved loss) is linear attention.
TEST(MiniBatch, BatchGradientDescentFromZeroIsLinearAttention) {
    const Index T = 11;
    const LayerOptions options = dims(2, 4, 4);
    MlpMemory linear;
    linear.depth = 1;
    linear.residual = false;
    linear.activation = Activation::identity;
    linear.init.zero = true;
    const Layer<MlpMemory, L2Bias, NoRetention, MiniBatchGD> ttt(options, linear, {}, {}, MiniBatchGD{T});
    Sequence<double> seq(1, T, 2, 4, 4, 13);
    EXPECT_LE(max_abs_diff(ttt.forward(seq.inputs), presets::linear_attention(options).forward(seq.inputs)), 1e-12);
}

/// Row-wise LayerNorm of the official TTT code, for the dual form below.
struct RowNorm {
    Mat<double> xhat;
    Vec<double> std;
};

RowNorm row_norm(const Mat<double>& Z) {
    RowNorm out{Mat<double>(Z.rows(), Z.cols()), Vec<double>(Z.rows())};
    for (Index i = 0; i < Z.rows(); ++i) {
        const double mean = Z.row(i).mean();
        const double var = (Z.row(i).array() - mean).square().mean();
        out.std[i] = std::sqrt(var + 1e-6);
        out.xhat.row(i) = (Z.row(i).array() - mean) / out.std[i];
    }
    return out;
}

Mat<double> affine(const Mat<double>& xhat, const Vec<double>& w, const Vec<double>& b) {
    return (xhat.array().rowwise() * w.transpose().array()).rowwise() + b.transpose().array();
}

/// The dual form of official TTT-Linear over one sequence (one head), in the row-vector
/// convention Z = X W + b: per mini-batch, eta = tril(f[i] lr[j]), Z_bar = XQ W - (eta o tril(XQ XK^T)) dZ
/// + b - eta dZ, o = XQ + LN(Z_bar), W <- W - (eta[last, :] o XK)^T dZ.
Mat<double> ttt_linear_dual(const Mat<double>& XQ, const Mat<double>& XK, const Mat<double>& XV, const Vec<double>& lr,
                            const std::vector<double>& factor, const Vec<double>& w, const Vec<double>& bias,
                            Mat<double>& W, Vec<double>& b1) {
    const Index T = XQ.rows(), f = XQ.cols(), mb = static_cast<Index>(factor.size());
    Mat<double> out(T, f);
    for (Index start = 0; start < T; start += mb) {
        const Index n = std::min(mb, T - start);
        const Mat<double> q = XQ.middleRows(start, n), k = XK.middleRows(start, n), v = XV.middleRows(start, n);
        const Mat<double> Z = (k * W).rowwise() + b1.transpose();
        const RowNorm ln = row_norm(Z);
        const Mat<double> g = ((affine(ln.xhat, w, bias) - (v - k)).array().rowwise() * w.transpose().array()).matrix();
        Mat<double> dZ(n, f);
        for (Index i = 0; i < n; ++i) {
            const double sum_g = g.row(i).sum(), sum_gx = g.row(i).dot(ln.xhat.row(i));
            dZ.row(i) = (f * g.row(i).array() - sum_g - ln.xhat.row(i).array() * sum_gx) / (f * ln.std[i]);
        }
        Mat<double> eta = Mat<double>::Zero(n, n);
        for (Index i = 0; i < n; ++i) {
            for (Index j = 0; j <= i; ++j) eta(i, j) = factor[static_cast<std::size_t>(i)] * lr[start + j];
        }
        const Mat<double> attn = (q * k.transpose()).triangularView<Eigen::Lower>();
        const Mat<double> b_bar = (-(eta * dZ)).rowwise() + b1.transpose();
        const Mat<double> Z_bar = q * W - eta.cwiseProduct(attn) * dZ + b_bar;
        out.middleRows(start, n) = q + affine(row_norm(Z_bar).xhat, w, bias);
        const Vec<double> last = eta.row(n - 1).transpose();
        W -= (k.array().colwise() * last.array()).matrix().transpose() * dZ;
        b1 -= (last.transpose() * dZ).transpose();
    }
    return out;
}

class TttDual : public ::testing::TestWithParam<Index> {};

TEST_P(TttDual, PrimalFormEqualsDualForm) {
    const Index T = GetParam(), f = 4, mb = 4;
    const std::vector<double> factor = presets::ttt_token_factor(mb, {0.05, -0.1, 0.0, 0.2});
    const std::vector<double> ln_w{1.2, 0.8, 1.0, 0.9}, ln_b{0.1, 0.0, -0.2, 0.05};
    const auto layer = presets::ttt(dims(1, f, f), 1, mb, factor, ln_w, ln_b, MlpInit{false, 0.3, 4});
    Sequence<double> seq(1, T, 1, f, f, 21);
    seq.add_gate("eta", 0.05, 0.5);
    auto state = layer.initial_state<double>(1);
    Mat<double> W = state.heads[0].memory.weights[0].transpose();
    Vec<double> b1 = Vec<double>::Random(f) * 0.1;
    state.heads[0].memory.biases[0] = b1;
    const Tensor<double> o = layer.forward(seq.inputs, state);

    const auto rows = [&](const Tensor<double>& t) { return Mat<double>(Eigen::Map<const Mat<double>>(t.data(), T, f)); };
    const Vec<double> lr = Eigen::Map<const Vec<double>>(seq.gates["eta"].data(), T);
    const Vec<double> w = Eigen::Map<const Vec<double>>(ln_w.data(), f), bias = Eigen::Map<const Vec<double>>(ln_b.data(), f);
    const Mat<double> dual = ttt_linear_dual(rows(seq.q), rows(seq.k), rows(seq.v), lr, factor, w, bias, W, b1);
    EXPECT_LE((dual - rows(o)).cwiseAbs().maxCoeff(), 1e-12);
    if (T % mb == 0) {
        EXPECT_LE((W.transpose() - state.heads[0].memory.weights[0]).cwiseAbs().maxCoeff(), 1e-12);
        EXPECT_LE((b1 - state.heads[0].memory.biases[0]).cwiseAbs().maxCoeff(), 1e-12);
    }
}

INSTANTIATE_TEST_SUITE_P(Lengths, TttDual, ::testing::Values(8, 10, 3));

// A call may end inside a mini-batch; the next call, even from a saved and reloaded state, resumes it.
TEST(MiniBatch, SplitAndResumeInsideAMiniBatch) {
    const auto layer = presets::ttt_mlp(dims(2, 4, 4), 8);
    Sequence<double> seq(2, 21, 2, 4, 4, 8);
    seq.add_gate("eta", 0.1, 0.9);
    auto whole = layer.initial_state<double>(2);
    const Tensor<double> o = layer.forward(seq.inputs, whole);

    auto state = layer.initial_state<double>(2);
    for (auto [begin, end] : {std::pair<Index, Index>{0, 3}, {3, 10}, {10, 21}}) {
        const auto part = seq.slice(begin, end);
        const Tensor<double> out = layer.forward(part.inputs, state);
        state = layer.load_state(layer.save_state(state));
        for (Index b = 0; b < 2; ++b) {
            for (Index t = begin; t < end; ++t) {
                for (Index i = 0; i < 8; ++i) {
                    EXPECT_NEAR(out[((b * (end - begin)) + t - begin) * 8 + i], o[(b * 21 + t) * 8 + i], 1e-13)
                        << "b " << b << " token " << t;
                }
            }
        }
    }
    EXPECT_EQ(state.heads[3].algorithm.position, 5);
    EXPECT_LE(max_abs_diff(layer.save_state(state).at("W2"), layer.save_state(whole).at("W2")), 1e-13);
}

TEST(MiniBatch, ClippingBoundsTheStep) {
    const LayerOptions options = dims(1, 4, 4);
    MiniBatchGD clipped{1, GateConfig::constant(0.5)};
    clipped.clip_norm = 0.1;
    const Layer<MatrixMemory, L2Bias, NoRetention, MiniBatchGD> layer(options, {}, {}, {}, clipped);
    Sequence<double> seq(1, 1, 1, 4, 4, 2, 2.0);
    auto state = layer.initial_state<double>(1);
    layer.forward(seq.inputs, state);
    EXPECT_NEAR(state.heads[0].memory.norm(), 0.05, 1e-12);
}

TEST(MiniBatch, LooseClippingChangesNothing) {
    const LayerOptions options = dims(1, 4, 4);
    MiniBatchGD loose{1, GateConfig::input(Axis::head)};
    loose.clip_norm = 1e6;
    const Layer<MatrixMemory, L2Bias, NoRetention, MiniBatchGD> layer(options, {}, {}, {}, loose);
    Sequence<double> seq(1, 9, 1, 4, 4, 2);
    seq.add_gate("eta", 0.1, 0.5);
    EXPECT_LE(max_abs_diff(layer.forward(seq.inputs), presets::deltanet(options).forward(seq.inputs)), 1e-13);
}

TEST(MiniBatch, InvalidSettingsAreRejected) {
    const LayerOptions options = dims(1, 4, 4);
    using L = Layer<MatrixMemory, L2Bias, NoRetention, MiniBatchGD>;
    EXPECT_THROW(L(options, {}, {}, {}, MiniBatchGD{0}), ConfigError);
    EXPECT_THROW(L(options, {}, {}, {}, MiniBatchGD{4, GateConfig::constant(1.0), MiniBatchRate::factored, {1.0}}), ConfigError);
    MiniBatchGD clip{2};
    clip.clip_norm = -1.0;
    EXPECT_THROW(L(options, {}, {}, {}, clip), ConfigError);
    EXPECT_THROW(MatrixMiniBatch(options, {}, {}, DecayRetention{}, MiniBatchGD{2, GateConfig::constant(1.0), MiniBatchRate::query_token}),
                 ConfigError);
}

TEST(MiniBatch, InvalidPositionInAStateIsRejected) {
    const auto layer = presets::ttt_linear(dims(1, 4, 4), 4);
    auto saved = layer.save_state(layer.initial_state<double>(1));
    saved.at("position")[0] = 4.0;
    EXPECT_THROW(layer.load_state(saved), InputError);
    saved.at("position")[0] = 1.5;
    EXPECT_THROW(layer.load_state(saved), InputError);
}

}  // namespace
