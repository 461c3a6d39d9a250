// The MLP memory: its gradient and input vjp against central finite differences for every
// (memory, bias) pair, the linear depth-1 case against the matrix memory, initialisation,
// state round trips and configuration errors.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "deep_test_util.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/bias/huber.hpp"
#include "miras/bias/l2.hpp"
#include "miras/bias/lp.hpp"
#include "miras/bias/value_shift.hpp"
#include "miras/layer/presets.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/memory/mlp.hpp"
#include "miras/memory/vector.hpp"

namespace {

using namespace miras;
using miras::testing::max_abs_diff;
using miras::testing::Sequence;

struct NamedBias {
    std::string name;
    std::function<double(const Vec<double>&, const double*)> loss;
    std::function<void(const Vec<double>&, const double*, Vec<double>&)> gradient;
};

template <class B>
NamedBias wrap(std::string name, B bias) {
    return {name, [bias](const Vec<double>& y, const double* v) { return bias.loss(y, v); },
            [bias](const Vec<double>& y, const double* v, Vec<double>& dy) { bias.gradient(y, v, dy); }};
}

NamedBias wrap_huber(std::string name, HuberKind kind, double delta) {
    HuberBias bias{kind, GateConfig::constant(delta)};
    return {name, [bias, delta](const Vec<double>& y, const double* v) { return bias.loss(y, v, delta); },
            [bias, delta](const Vec<double>& y, const double* v, Vec<double>& dy) { bias.gradient(y, v, dy, delta); }};
}

std::vector<NamedBias> biases() {
    return {wrap("l2", L2Bias{}),
            wrap("dot_product", DotProductBias{}),
            wrap("lp3", LpBias{3.0}),
            wrap("lp1_5_sqrt_abs", LpBias{1.5, LpSmoothing::sqrt_abs, 10.0, 1e-3}),
            wrap("value_shift", ValueShiftBias{0.3}),
            wrap_huber("huber_coordinate", HuberKind::coordinate, 0.4),
            wrap_huber("huber_norm", HuberKind::norm, 0.4),
            wrap_huber("huber_mixture", HuberKind::mixture, 0.4)};
}

struct NamedMemory {
    std::string name;
    MlpMemory memory;
};

std::vector<NamedMemory> memories() {
    std::vector<NamedMemory> out;
    MlpMemory linear;
    linear.depth = 1;
    linear.residual = false;
    linear.biases = true;
    linear.activation = Activation::identity;
    out.push_back({"linear_bias", linear});
    MlpMemory ttt = presets::ttt_memory(2, {1.3, 0.7, 1.1, 0.9}, {0.1, -0.2, 0.0, 0.3});
    out.push_back({"ttt_mlp", ttt});
    MlpMemory deep;
    deep.depth = 3;
    deep.expansion = 1.5;
    deep.activation = Activation::silu;
    deep.residual = false;
    deep.biases = true;
    deep.norm = MlpNorm::plain;
    out.push_back({"depth3_silu_plain_norm", deep});
    MlpMemory gated;
    gated.gated = true;
    gated.activation = Activation::tanh;
    out.push_back({"gated_tanh", gated});
    MlpMemory gelu;
    gelu.activation = Activation::gelu;
    gelu.norm = MlpNorm::affine;
    gelu.norm_weight = {0.8};
    out.push_back({"gelu_residual_norm", gelu});
    for (auto& m : out) m.memory.init.std = 0.6;  // large weights, so that every nonlinearity matters
    return out;
}

LayerDims dims4() {
    LayerDims d;
    d.heads = 1;
    d.key = d.value = d.key_features = 4;
    return d;
}

Vec<double> random_vec(Index n, unsigned seed, double scale = 1.0) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, scale);
    Vec<double> x(n);
    for (Index i = 0; i < n; ++i) x[i] = normal(rng);
    return x;
}

struct Pair {
    NamedMemory memory;
    NamedBias bias;
};

class DeepGradient : public ::testing::TestWithParam<Pair> {};

TEST_P(DeepGradient, MatchesCentralDifferences) {
    const auto& [named, bias] = GetParam();
    const MlpMemory& memory = named.memory;
    const LayerDims dims = dims4();
    memory.validate(dims);
    MlpParams<double> W = memory.init_params<double>(dims, 0);
    for (auto& b : W.biases) b = random_vec(b.size(), 11, 0.3);
    const Vec<double> x = random_vec(4, 3), v = random_vec(4, 5, 2.0);

    Vec<double> y, dy;
    memory.predict(W, x, y);
    bias.gradient(y, v.data(), dy);
    MlpParams<double> grad = W;
    params_set_zero(grad);
    memory.add_gradient(W, grad, 1.0, dy, x);

    const auto loss_at = [&](const MlpParams<double>& P) {
        Vec<double> out;
        memory.predict(P, x, out);
        return bias.loss(out, v.data());
    };
    const double h = 1e-6;
    double worst = 0.0, scale = 1e-3;
    for (std::size_t m = 0; m < W.weights.size() + W.biases.size(); ++m) {
        const bool is_weight = m < W.weights.size();
        const Index size = is_weight ? W.weights[m].size() : W.biases[m - W.weights.size()].size();
        for (Index i = 0; i < size; ++i) {
            MlpParams<double> plus = W, minus = W;
            double& p = is_weight ? plus.weights[m].data()[i] : plus.biases[m - W.weights.size()][i];
            double& n = is_weight ? minus.weights[m].data()[i] : minus.biases[m - W.weights.size()][i];
            p += h;
            n -= h;
            const double numeric = (loss_at(plus) - loss_at(minus)) / (2 * h);
            const double analytic = is_weight ? grad.weights[m].data()[i] : grad.biases[m - W.weights.size()][i];
            worst = std::max(worst, std::abs(numeric - analytic));
            scale = std::max(scale, std::abs(numeric));
        }
    }
    EXPECT_LE(worst / scale, 1e-6) << named.name << " with " << bias.name;
}

TEST_P(DeepGradient, InputVjpMatchesCentralDifferences) {
    const auto& [named, bias] = GetParam();
    const MlpMemory& memory = named.memory;
    const LayerDims dims = dims4();
    const MlpParams<double> W = memory.init_params<double>(dims, 1);
    const Vec<double> x = random_vec(4, 7), dy = random_vec(4, 9);
    Vec<double> dx;
    memory.input_vjp(W, x, dy, dx);
    const double h = 1e-6;
    for (Index i = 0; i < 4; ++i) {
        Vec<double> plus = x, minus = x, yp, ym;
        plus[i] += h;
        minus[i] -= h;
        memory.predict(W, plus, yp);
        memory.predict(W, minus, ym);
        EXPECT_NEAR(dy.dot(yp - ym) / (2 * h), dx[i], 1e-6) << named.name << " input " << i;
    }
}

std::vector<Pair> pairs() {
    std::vector<Pair> out;
    for (const auto& m : memories()) {
        for (const auto& b : biases()) out.push_back({m, b});
    }
    return out;
}

INSTANTIATE_TEST_SUITE_P(MemoryBias, DeepGradient, ::testing::ValuesIn(pairs()),
                         [](const ::testing::TestParamInfo<Pair>& info) {
                             return info.param.memory.name + "_" + info.param.bias.name;
                         });

// The matrix and vector memories' gradients under every bias, through finite differences.
class MatrixGradient : public ::testing::TestWithParam<NamedBias> {};

TEST_P(MatrixGradient, MatchesCentralDifferences) {
    const NamedBias& bias = GetParam();
    MatrixMemory memory;
    Mat<double> W = Mat<double>::Zero(4, 4);
    W.reshaped<Eigen::RowMajor>() = random_vec(16, 21, 0.7);
    const Vec<double> x = random_vec(4, 23), v = random_vec(4, 25, 2.0);
    Vec<double> y, dy;
    memory.predict(W, x, y);
    bias.gradient(y, v.data(), dy);
    Mat<double> grad = Mat<double>::Zero(4, 4);
    memory.add_gradient(grad, 1.0, dy, x);
    for (Index i = 0; i < W.size(); ++i) {
        Mat<double> plus = W, minus = W;
        plus.data()[i] += 1e-6;
        minus.data()[i] -= 1e-6;
        Vec<double> yp, ym;
        memory.predict(plus, x, yp);
        memory.predict(minus, x, ym);
        const double numeric = (bias.loss(yp, v.data()) - bias.loss(ym, v.data())) / 2e-6;
        EXPECT_NEAR(numeric, grad.data()[i], 1e-6 * std::max(1.0, std::abs(numeric))) << bias.name << " entry " << i;
    }
}

TEST_P(MatrixGradient, VectorMemoryMatchesCentralDifferences) {
    const NamedBias& bias = GetParam();
    VectorMemory memory;
    Mat<double> w(1, 4);
    w.row(0) = random_vec(4, 27, 0.7).transpose();
    const Vec<double> x = random_vec(4, 29), v = random_vec(4, 31, 2.0);
    Vec<double> y, dy;
    memory.predict(w, x, y);
    bias.gradient(y, v.data(), dy);
    Mat<double> grad = Mat<double>::Zero(1, 4);
    memory.add_gradient(grad, 1.0, dy, x);
    for (Index i = 0; i < 4; ++i) {
        Mat<double> plus = w, minus = w;
        plus(0, i) += 1e-6;
        minus(0, i) -= 1e-6;
        Vec<double> yp, ym;
        memory.predict(plus, x, yp);
        memory.predict(minus, x, ym);
        const double numeric = (bias.loss(yp, v.data()) - bias.loss(ym, v.data())) / 2e-6;
        EXPECT_NEAR(numeric, grad(0, i), 1e-6 * std::max(1.0, std::abs(numeric))) << bias.name << " entry " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Biases, MatrixGradient, ::testing::ValuesIn(biases()),
                         [](const ::testing::TestParamInfo<NamedBias>& info) { return info.param.name; });

TEST(Activation, DerivativesMatchCentralDifferences) {
    for (Activation a : {Activation::gelu, Activation::gelu_tanh, Activation::silu, Activation::relu, Activation::tanh,
                         Activation::identity}) {
        for (double z : {-2.3, -0.4, 0.3, 1.7}) {
            const double numeric = (activate(a, z + 1e-6) - activate(a, z - 1e-6)) / 2e-6;
            EXPECT_NEAR(activate_derivative(a, z), numeric, 1e-7) << activation_name(a) << " at " << z;
        }
    }
}

TEST(Activation, GeluTanhIsCloseToGelu) {
    for (double z : {-2.0, -0.5, 0.5, 2.0}) EXPECT_NEAR(activate(Activation::gelu_tanh, z), activate(Activation::gelu, z), 1e-3);
}

TEST(Activation, UnknownNameIsRejected) { EXPECT_THROW(parse_activation("swish"), ConfigError); }

// A depth-1 linear MLP without residual, norm or bias, trained online, is the delta rule.
TEST(MlpMemory, LinearDepthOneEqualsMatrixMemory) {
    LayerOptions options;
    options.heads = 2;
    options.key_dim = options.value_dim = 5;
    MlpMemory linear;
    linear.depth = 1;
    linear.residual = false;
    linear.activation = Activation::identity;
    linear.init.zero = true;
    Layer<MlpMemory, L2Bias, NoRetention, MiniBatchGD> mlp(options, linear, {}, {},
                                                          MiniBatchGD{1, GateConfig::input(Axis::head)});
    const auto delta = presets::deltanet(options);
    Sequence<double> seq(2, 23, 2, 5, 5, 17);
    seq.add_gate("eta", 0.1, 0.9);
    auto s1 = mlp.initial_state<double>(2);
    auto s2 = delta.initial_state<double>(2);
    const Tensor<double> o1 = mlp.forward(seq.inputs, s1);
    const Tensor<double> o2 = delta.forward(seq.inputs, s2);
    EXPECT_LE(max_abs_diff(o1, o2), 1e-12);
    EXPECT_LE(max_abs_diff(mlp.save_state(s1).at("W1"), delta.save_state(s2).at("W")), 1e-12);
}

TEST(MlpMemory, SeededInitIsReproducibleAndDiffersPerHead) {
    MlpMemory m;
    LayerDims dims = dims4();
    dims.heads = 2;
    const auto a = m.init_params<double>(dims, 0), b = m.init_params<double>(dims, 0), c = m.init_params<double>(dims, 1);
    EXPECT_EQ(a.weights[0], b.weights[0]);
    EXPECT_NE(a.weights[0], c.weights[0]);
    EXPECT_NE(a.weights[0], a.weights[1].transpose());
}

TEST(MlpMemory, SeededInitHasTheConfiguredSpread) {
    MlpMemory m;
    m.init.std = 0.02;
    LayerDims dims;
    dims.key = dims.value = dims.key_features = 32;
    const auto p = m.init_params<double>(dims, 0);
    const double n = static_cast<double>(p.weights[0].size());
    const double mean = p.weights[0].sum() / n;
    const double std = std::sqrt(p.weights[0].squaredNorm() / n - mean * mean);
    EXPECT_NEAR(std, 0.02, 0.002);
    EXPECT_NEAR(mean, 0.0, 0.002);
}

TEST(MlpMemory, ZeroInitAndShapes) {
    MlpMemory m;
    m.init.zero = true;
    m.biases = true;
    LayerDims dims = dims4();
    const auto p = m.init_params<double>(dims, 0);
    ASSERT_EQ(p.weights.size(), 2u);
    EXPECT_EQ(p.weights[0].rows(), 16);
    EXPECT_EQ(p.weights[0].cols(), 4);
    EXPECT_EQ(p.weights[1].rows(), 4);
    EXPECT_EQ(p.weights[0].squaredNorm() + p.weights[1].squaredNorm(), 0.0);
    EXPECT_EQ(m.state_size(dims), 16 * 4 + 4 * 16 + 16 + 4);
}

TEST(MlpMemory, PerHeadNormParametersComeFromTheConfig) {
    const MlpMemory m = presets::ttt_memory(1, {1, 2, 3, 4, 5, 6, 7, 8}, {0.5});
    LayerDims dims = dims4();
    dims.heads = 2;
    const auto p = m.init_params<double>(dims, 1);
    EXPECT_EQ(p.norm_weight[0], 5.0);
    EXPECT_EQ(p.norm_bias[3], 0.5);
}

TEST(MlpMemory, StateRoundTripsThroughSaveAndLoad) {
    LayerOptions options;
    options.heads = 2;
    options.key_dim = options.value_dim = 4;
    const auto layer = presets::ttt_mlp(options, 4);
    Sequence<double> seq(1, 6, 2, 4, 4, 3);
    seq.add_gate("eta", 0.1, 0.5);
    auto state = layer.initial_state<double>(1);
    layer.forward(seq.inputs, state);
    auto copy = layer.load_state(layer.save_state(state));
    EXPECT_EQ(copy.heads[1].memory.weights[1], state.heads[1].memory.weights[1]);
    EXPECT_EQ(copy.heads[0].algorithm.position, 2);
}

TEST(MlpMemory, ResidualNeedsEqualDimensions) {
    LayerOptions options;
    options.key_dim = 4;
    options.value_dim = 3;
    MlpMemory m;
    EXPECT_THROW((Layer<MlpMemory, L2Bias, NoRetention, MiniBatchGD>(options, m)), ConfigError);
    m.residual = false;
    EXPECT_NO_THROW((Layer<MlpMemory, L2Bias, NoRetention, MiniBatchGD>(options, m)));
}

TEST(MlpMemory, InvalidConfigurationsAreRejected) {
    const LayerDims dims = dims4();
    MlpMemory depth;
    depth.depth = 0;
    EXPECT_THROW(depth.validate(dims), ConfigError);
    MlpMemory norm;
    norm.norm = MlpNorm::affine;
    norm.norm_weight = {1.0, 2.0};
    EXPECT_THROW(norm.validate(dims), ConfigError);
    MlpMemory gated;
    gated.gated = true;
    gated.biases = true;
    EXPECT_THROW(gated.validate(dims), ConfigError);
    MlpMemory read;
    read.read_adds_branch = true;
    EXPECT_THROW(read.validate(dims), ConfigError);
}

TEST(L2Bias, SubtractKeyEqualsShiftedValues) {
    LayerOptions options;
    options.key_dim = options.value_dim = 4;
    const auto plain = presets::deltanet(options);
    const presets::DeltaNet shifted(options, {}, L2Bias{true}, {}, presets::per_token_step());
    Sequence<double> seq(1, 9, 1, 4, 4, 31);
    seq.add_gate("eta", 0.2, 0.6);
    const Tensor<double> o1 = shifted.forward(seq.inputs);
    for (Index i = 0; i < seq.v.size(); ++i) seq.v[i] -= seq.k[i];
    const Tensor<double> o2 = plain.forward(seq.inputs);
    EXPECT_LE(max_abs_diff(o1, o2), 1e-12);
}

TEST(L2Bias, SubtractKeyNeedsEqualDimensions) {
    LayerOptions options;
    options.key_dim = 4;
    options.value_dim = 3;
    const presets::DeltaNet shifted(options, {}, L2Bias{true}, {}, presets::unit_step());
    Sequence<double> seq(1, 2, 1, 4, 3, 1);
    EXPECT_THROW(shifted.forward(seq.inputs), ConfigError);
}

TEST(LpBias, InvalidPIsRejected) {
    LayerOptions options;
    EXPECT_THROW((Layer<MatrixMemory, LpBias, NoRetention, GradientStep>(options, {}, LpBias{0.5})), ConfigError);
}

TEST(LpBias, TanhSignApproachesTheExactSign) {
    const Vec<double> y = random_vec(4, 1), v = random_vec(4, 2);
    Vec<double> exact, smooth;
    LpBias{1.0}.gradient(y, v.data(), exact);
    LpBias{1.0, LpSmoothing::tanh_sign, 1e4}.gradient(y, v.data(), smooth);
    EXPECT_LE((exact - smooth).cwiseAbs().maxCoeff(), 1e-9);
}

// The combination rules of deep memories and mirror retentions, checked at compile time.
static_assert(is_valid_combination_v<MlpMemory, L2Bias, NoRetention, MiniBatchGD>);
static_assert(is_valid_combination_v<MlpMemory, HuberBias, DecayRetention, Momentum>);
static_assert(!is_valid_combination_v<MlpMemory, L2Bias, NoRetention, GradientStep>,
              "the mlp memory's gradient depends on its weights, which gd does not keep");
static_assert(!is_valid_combination_v<MlpMemory, L2Bias, NoRetention, ImplicitStep>);
static_assert(is_valid_combination_v<MatrixMemory, L2Bias, MirrorRetention, GradientStep>);
static_assert(!is_valid_combination_v<MatrixMemory, L2Bias, MirrorRetention, LeastSquares>,
              "least squares never maps the memory back from the mirror space");
static_assert(!is_valid_combination_v<KVCacheMemory, L2Bias, NoRetention, MiniBatchGD>);

// E10: the DeepTransformer rule with a linear memory and the truncated exponential features
// (degree 3, coefficients 1/i!) is causal attention with the Taylor kernel sum_i v_i P_3(q . k_i).
TEST(MlpMemory, TaylorFeaturesGiveTheTaylorKernelAttention) {
    const Index T = 9, K = 3, V = 2;
    LayerOptions options;
    options.key_dim = K;
    options.value_dim = V;
    options.query_scale = 1.0;
    MlpMemory linear;
    linear.depth = 1;
    linear.residual = false;
    linear.activation = Activation::identity;
    linear.features = FeatureMap::polynomial(3);
    linear.init.zero = true;
    const Layer<MlpMemory, DotProductBias, NoRetention, MiniBatchGD> layer(options, linear, {}, {}, MiniBatchGD{1});
    Sequence<double> seq(1, T, 1, K, V, 40, 0.5);
    const Tensor<double> o = layer.forward(seq.inputs);
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        const Vec<double> q = Eigen::Map<const Vec<double>>(seq.q.data() + t * K, K);
        Vec<double> expected = Vec<double>::Zero(V);
        for (Index i = 0; i <= t; ++i) {
            const double s = q.dot(Eigen::Map<const Vec<double>>(seq.k.data() + i * K, K));
            expected += (1.0 + s + s * s / 2.0 + s * s * s / 6.0) * Eigen::Map<const Vec<double>>(seq.v.data() + i * V, V);
        }
        for (Index c = 0; c < V; ++c) worst = std::max(worst, std::abs(expected[c] - o[t * V + c]));
    }
    EXPECT_LE(worst, 1e-12);
}

}  // namespace
