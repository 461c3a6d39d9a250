// Every backward pass of the outer-model modules against central finite differences in double: one
// table of cases, each a scalar loss sum(R * forward(...)) with random R (or the cross-entropy
// itself) and the list of tensors it is differentiated by. AdamW and the cosine schedule are checked
// against their formulas evaluated by hand.
#include <cmath>
#include <functional>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/nn/activation.hpp"
#include "miras/nn/adamw.hpp"
#include "miras/nn/cosine_schedule.hpp"
#include "miras/nn/cross_entropy.hpp"
#include "miras/nn/embedding.hpp"
#include "miras/nn/gated_norm.hpp"
#include "miras/nn/l2_norm.hpp"
#include "miras/nn/layer_norm.hpp"
#include "miras/nn/linear.hpp"
#include "miras/nn/rms_norm.hpp"
#include "miras/nn/short_conv.hpp"
#include "miras/nn/swiglu.hpp"

namespace {

using namespace miras;
using namespace miras::nn;
using M = Mat<double>;

M random_matrix(std::mt19937_64& rng, Index rows, Index cols, double scale = 1.0) {
    std::uniform_real_distribution<double> u(-scale, scale);
    M m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
    return m;
}

double weighted_sum(const M& r, const M& y) { return r.cwiseProduct(y).sum(); }

/// A scalar loss, the tensors it depends on (perturbed in place), and its analytic gradients.
struct Problem {
    std::vector<std::pair<std::string, M*>> variables;
    std::function<double()> loss;
    std::function<std::vector<M>()> gradients;
    std::shared_ptr<void> owner;
};

struct Case {
    const char* name;
    std::function<Problem(std::mt19937_64&)> make;
};

// Builds a problem around module state `s` of type T: loss = sum(R * forward(s)), and gradients
// from backward(s, R) after clearing the module's gradients.
template <class T>
Problem weighted(std::shared_ptr<T> s, std::vector<std::pair<std::string, M*>> variables,
                 std::function<M(T&)> forward, std::function<std::vector<M>(T&, const M&)> backward, M r) {
    Problem p;
    p.variables = std::move(variables);
    p.loss = [s, forward, r] { return weighted_sum(r, forward(*s)); };
    p.gradients = [s, backward, r] { return backward(*s, r); };
    p.owner = s;
    return p;
}

struct LinearState {
    Linear<double> layer;
    M x;
};

Problem linear_case(std::mt19937_64& rng, bool bias) {
    auto s = std::make_shared<LinearState>();
    s->layer = Linear<double>(random_matrix(rng, 4, 3), bias);
    if (bias) s->layer.bias.value = random_matrix(rng, 1, 4);
    s->x = random_matrix(rng, 5, 3);
    std::vector<std::pair<std::string, M*>> vars{{"x", &s->x}, {"W", &s->layer.weight.value}};
    if (bias) vars.push_back({"b", &s->layer.bias.value});
    return weighted<LinearState>(
        s, vars, [](LinearState& t) { return t.layer.forward(t.x); },
        [bias](LinearState& t, const M& r) {
            t.layer.weight.zero_grad();
            t.layer.bias.zero_grad();
            std::vector<M> g{t.layer.backward(t.x, r), t.layer.weight.grad};
            if (bias) g.push_back(t.layer.bias.grad);
            return g;
        },
        random_matrix(rng, 5, 4));
}

struct EmbeddingState {
    Embedding<double> embedding;
    M h;
    std::vector<std::int32_t> tokens{3, 0, 3, 5, 1};
};

Problem embedding_case(std::mt19937_64& rng) {
    auto s = std::make_shared<EmbeddingState>();
    s->embedding = Embedding<double>(random_matrix(rng, 6, 4));
    return weighted<EmbeddingState>(
        s, {{"E", &s->embedding.table.value}}, [](EmbeddingState& t) { return t.embedding.forward(t.tokens); },
        [](EmbeddingState& t, const M& r) {
            t.embedding.table.zero_grad();
            t.embedding.backward(t.tokens, r);
            return std::vector<M>{t.embedding.table.grad};
        },
        random_matrix(rng, 5, 4));
}

Problem tied_head_case(std::mt19937_64& rng) {
    auto s = std::make_shared<EmbeddingState>();
    s->embedding = Embedding<double>(random_matrix(rng, 6, 4));
    s->h = random_matrix(rng, 3, 4);
    return weighted<EmbeddingState>(
        s, {{"H", &s->h}, {"E", &s->embedding.table.value}},
        [](EmbeddingState& t) { return t.embedding.head(t.h); },
        [](EmbeddingState& t, const M& r) {
            t.embedding.table.zero_grad();
            M dh = t.embedding.head_backward(t.h, r);
            return std::vector<M>{dh, t.embedding.table.grad};
        },
        random_matrix(rng, 3, 6));
}

struct ConvState {
    ShortConv<double> conv;
    M x;
    Index tokens = 0;
};

Problem short_conv_case(std::mt19937_64& rng, Index kernel, Index tokens) {
    auto s = std::make_shared<ConvState>();
    s->conv = ShortConv<double>(random_matrix(rng, 3, kernel), true);
    s->conv.bias.value = random_matrix(rng, 1, 3);
    s->tokens = tokens;
    s->x = random_matrix(rng, 2 * tokens, 3);
    return weighted<ConvState>(
        s, {{"x", &s->x}, {"w", &s->conv.weight.value}, {"b", &s->conv.bias.value}},
        [](ConvState& t) { return t.conv.forward(t.x, t.tokens); },
        [](ConvState& t, const M& r) {
            t.conv.weight.zero_grad();
            t.conv.bias.zero_grad();
            M dx = t.conv.backward(t.x, r, t.tokens);
            return std::vector<M>{dx, t.conv.weight.grad, t.conv.bias.grad};
        },
        random_matrix(rng, 2 * tokens, 3));
}

struct LayerNormState {
    LayerNorm<double> norm{5};
    M x;
};

Problem layer_norm_case(std::mt19937_64& rng) {
    auto s = std::make_shared<LayerNormState>();
    s->norm.gamma.value = random_matrix(rng, 1, 5);
    s->norm.beta.value = random_matrix(rng, 1, 5);
    s->x = random_matrix(rng, 4, 5);
    return weighted<LayerNormState>(
        s, {{"x", &s->x}, {"gamma", &s->norm.gamma.value}, {"beta", &s->norm.beta.value}},
        [](LayerNormState& t) { return t.norm.forward(t.x); },
        [](LayerNormState& t, const M& r) {
            t.norm.gamma.zero_grad();
            t.norm.beta.zero_grad();
            M dx = t.norm.backward(t.x, r);
            return std::vector<M>{dx, t.norm.gamma.grad, t.norm.beta.grad};
        },
        random_matrix(rng, 4, 5));
}

struct RMSNormState {
    RMSNorm<double> norm{5};
    M x;
};

Problem rms_norm_case(std::mt19937_64& rng) {
    auto s = std::make_shared<RMSNormState>();
    s->norm.gamma.value = random_matrix(rng, 1, 5);
    s->x = random_matrix(rng, 4, 5);
    return weighted<RMSNormState>(
        s, {{"x", &s->x}, {"gamma", &s->norm.gamma.value}}, [](RMSNormState& t) { return t.norm.forward(t.x); },
        [](RMSNormState& t, const M& r) {
            t.norm.gamma.zero_grad();
            M dx = t.norm.backward(t.x, r);
            return std::vector<M>{dx, t.norm.gamma.grad};
        },
        random_matrix(rng, 4, 5));
}

struct InputState {
    M x;
    M z;
};

Problem activation_case(std::mt19937_64& rng, Activation a) {
    auto s = std::make_shared<InputState>();
    s->x = random_matrix(rng, 3, 4, 3.0);
    return weighted<InputState>(
        s, {{"x", &s->x}}, [a](InputState& t) { return activation_forward(a, t.x); },
        [a](InputState& t, const M& r) { return std::vector<M>{activation_backward(a, t.x, r)}; },
        random_matrix(rng, 3, 4));
}

Problem l2_norm_case(std::mt19937_64& rng) {
    auto s = std::make_shared<InputState>();
    s->x = random_matrix(rng, 3, 6);
    return weighted<InputState>(
        s, {{"x", &s->x}}, [](InputState& t) { return l2_normalise<double>(t.x, 3); },
        [](InputState& t, const M& r) { return std::vector<M>{l2_normalise_backward<double>(t.x, r, 3)}; },
        random_matrix(rng, 3, 6));
}

struct GatedNormState {
    GatedRMSNorm<double> norm{3};
    M x, z;
};

Problem gated_norm_case(std::mt19937_64& rng) {
    auto s = std::make_shared<GatedNormState>();
    s->norm.norm.gamma.value = random_matrix(rng, 1, 3);
    s->x = random_matrix(rng, 4, 6);
    s->z = random_matrix(rng, 4, 6, 2.0);
    return weighted<GatedNormState>(
        s, {{"x", &s->x}, {"z", &s->z}, {"gamma", &s->norm.norm.gamma.value}},
        [](GatedNormState& t) { return t.norm.forward(t.x, t.z); },
        [](GatedNormState& t, const M& r) {
            t.norm.norm.gamma.zero_grad();
            auto g = t.norm.backward(t.x, t.z, r);
            return std::vector<M>{g.dx, g.dz, t.norm.norm.gamma.grad};
        },
        random_matrix(rng, 4, 6));
}

struct SwiGLUState {
    SwiGLU<double> mlp;
    M x;
};

Problem swiglu_case(std::mt19937_64& rng) {
    auto s = std::make_shared<SwiGLUState>();
    s->mlp = SwiGLU<double>(random_matrix(rng, 6, 4), random_matrix(rng, 6, 4), random_matrix(rng, 4, 6));
    s->x = random_matrix(rng, 3, 4);
    return weighted<SwiGLUState>(
        s, {{"x", &s->x}, {"W1", &s->mlp.gate.weight.value}, {"W3", &s->mlp.up.weight.value}, {"W2", &s->mlp.down.weight.value}},
        [](SwiGLUState& t) { return t.mlp.forward(t.x); },
        [](SwiGLUState& t, const M& r) {
            t.mlp.gate.weight.zero_grad();
            t.mlp.up.weight.zero_grad();
            t.mlp.down.weight.zero_grad();
            M dx = t.mlp.backward(t.x, r);
            return std::vector<M>{dx, t.mlp.gate.weight.grad, t.mlp.up.weight.grad, t.mlp.down.weight.grad};
        },
        random_matrix(rng, 3, 4));
}

// Tokens through the embedding, an RMSNorm and the tied head at the supervised rows only, into the
// cross-entropy with ignored positions.
struct PipelineState {
    Embedding<double> embedding;
    RMSNorm<double> norm{4};
    std::vector<std::int32_t> tokens{2, 5, 1, 2, 6, 3};
    std::vector<std::int32_t> labels{-100, 4, -100, -100, 0, 4};

    double run(std::vector<M>* gradients) {
        const M h = embedding.forward(tokens);
        const M n = norm.forward(h);
        const SupervisedRows sup = supervised_rows(labels);
        const M logits = embedding.head(gather_rows(n, sup.rows));
        const CrossEntropy<double> ce = softmax_cross_entropy(logits, sup.targets);
        if (gradients != nullptr) {
            embedding.table.zero_grad();
            norm.gamma.zero_grad();
            M dn = M::Zero(n.rows(), n.cols());
            scatter_add_rows(dn, sup.rows, embedding.head_backward(gather_rows(n, sup.rows), ce.dlogits));
            embedding.backward(tokens, norm.backward(h, dn));
            *gradients = {embedding.table.grad, norm.gamma.grad};
        }
        return ce.loss;
    }
};

Problem pipeline_case(std::mt19937_64& rng) {
    auto s = std::make_shared<PipelineState>();
    s->embedding = Embedding<double>(random_matrix(rng, 7, 4));
    s->norm.gamma.value = random_matrix(rng, 1, 4);
    Problem p;
    p.variables = {{"E", &s->embedding.table.value}, {"gamma", &s->norm.gamma.value}};
    p.loss = [s] { return s->run(nullptr); };
    p.gradients = [s] {
        std::vector<M> g;
        s->run(&g);
        return g;
    };
    p.owner = s;
    return p;
}

struct LogitState {
    M logits;
    std::vector<std::int32_t> targets{2, 0, 4};
};

Problem cross_entropy_case(std::mt19937_64& rng) {
    auto s = std::make_shared<LogitState>();
    s->logits = random_matrix(rng, 3, 5, 4.0);
    Problem p;
    p.variables = {{"logits", &s->logits}};
    p.loss = [s] { return softmax_cross_entropy(s->logits, s->targets).loss; };
    p.gradients = [s] { return std::vector<M>{softmax_cross_entropy(s->logits, s->targets).dlogits}; };
    p.owner = s;
    return p;
}

const std::vector<Case>& cases() {
    static const std::vector<Case> table{
        {"LinearWithBias", [](auto& rng) { return linear_case(rng, true); }},
        {"LinearWithoutBias", [](auto& rng) { return linear_case(rng, false); }},
        {"Embedding", embedding_case},
        {"TiedHead", tied_head_case},
        {"ShortConvKernel4", [](auto& rng) { return short_conv_case(rng, 4, 6); }},
        {"ShortConvKernelLongerThanSequence", [](auto& rng) { return short_conv_case(rng, 4, 2); }},
        {"LayerNorm", layer_norm_case},
        {"RMSNorm", rms_norm_case},
        {"SiLU", [](auto& rng) { return activation_case(rng, Activation::silu); }},
        {"GELU", [](auto& rng) { return activation_case(rng, Activation::gelu); }},
        {"L2Normalise", l2_norm_case},
        {"GatedRMSNorm", gated_norm_case},
        {"SwiGLU", swiglu_case},
        {"CrossEntropy", cross_entropy_case},
        {"HeadAtSupervisedRows", pipeline_case},
    };
    return table;
}

class ModuleGradient : public ::testing::TestWithParam<std::size_t> {};

INSTANTIATE_TEST_SUITE_P(Modules, ModuleGradient, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const auto& info) { return std::string(cases()[info.param].name); });

TEST_P(ModuleGradient, MatchesCentralDifferences) {
    std::mt19937_64 rng(1000 + GetParam());
    Problem p = cases()[GetParam()].make(rng);
    const std::vector<M> analytic = p.gradients();
    ASSERT_EQ(analytic.size(), p.variables.size());
    const double h = 1e-6;
    for (std::size_t v = 0; v < p.variables.size(); ++v) {
        M& x = *p.variables[v].second;
        ASSERT_EQ(analytic[v].rows(), x.rows()) << p.variables[v].first;
        ASSERT_EQ(analytic[v].cols(), x.cols()) << p.variables[v].first;
        for (Index i = 0; i < x.size(); ++i) {
            const double saved = x.data()[i];
            x.data()[i] = saved + h;
            const double up = p.loss();
            x.data()[i] = saved - h;
            const double down = p.loss();
            x.data()[i] = saved;
            const double numeric = (up - down) / (2 * h);
            EXPECT_NEAR(analytic[v].data()[i], numeric, 1e-7 * std::max(1.0, std::abs(numeric)))
                << p.variables[v].first << " element " << i;
        }
    }
}

TEST(ShortConv, IsCausalAndPerSequence) {
    // A unit impulse at token 1 of the second sequence reaches tokens 1..K of that sequence only.
    ShortConv<double> conv(M::Ones(1, 3), false);
    M x = M::Zero(10, 1);
    x(5 + 1, 0) = 1;
    const M y = conv.forward(x, 5);
    for (Index t = 0; t < 10; ++t) EXPECT_EQ(y(t, 0), (t >= 6 && t <= 8) ? 1.0 : 0.0) << "row " << t;
}

TEST(CrossEntropy, EqualsLogSumExpMinusTarget) {
    M logits(1, 3);
    logits << 1.0, 2.0, 3.0;
    const double expected = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 2.0;
    EXPECT_NEAR(softmax_cross_entropy(logits, {1}).loss, expected, 1e-14);
}

TEST(CrossEntropy, StaysFiniteForLargeLogits) {
    M logits(1, 2);
    logits << 1e4, -1e4;
    EXPECT_NEAR(softmax_cross_entropy(logits, {1}).loss, 2e4, 1e-9);
}

TEST(ModuleErrors, BadInputsRaiseInputError) {
    Embedding<double> e(M::Zero(4, 2));
    EXPECT_THROW(e.forward({4}), InputError);
    EXPECT_THROW(e.forward({-1}), InputError);
    EXPECT_THROW(softmax_cross_entropy(M(M::Zero(1, 3)), {3}), InputError);
    EXPECT_THROW(softmax_cross_entropy(M(M::Zero(2, 3)), {0}), InputError);
    ShortConv<double> conv(M::Ones(2, 3), false);
    EXPECT_THROW(conv.forward(M::Zero(5, 2), 2), InputError);
    EXPECT_THROW(conv.forward(M::Zero(4, 3), 2), InputError);
    Linear<double> linear(M::Zero(2, 3), true);
    EXPECT_THROW(linear.forward(M::Zero(1, 2)), InputError);
    EXPECT_THROW(l2_normalise<double>(M::Zero(1, 5), 2), InputError);
}

TEST(AdamW, FirstTwoStepsMatchTheFormula) {
    Param<double> p(M::Constant(1, 2, 1.0));
    AdamWConfig c;
    c.weight_decay = 0.1;
    AdamW<double> opt({&p}, c);
    const double lr = 0.01, g1 = 0.5, g2 = -2.0;

    p.grad << g1, 0.0;
    opt.step(lr);
    // Step 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps) after decay.
    EXPECT_NEAR(p.value(0, 0), 1.0 * (1 - lr * 0.1) - lr * g1 / (std::abs(g1) + c.eps), 1e-15);
    EXPECT_NEAR(p.value(0, 1), 1.0 * (1 - lr * 0.1), 1e-15);

    const double before = p.value(0, 0);
    p.grad << g2, 0.0;
    opt.step(lr);
    const double m = 0.9 * 0.1 * g1 + 0.1 * g2, v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
    const double m_hat = m / (1 - 0.81), v_hat = v / (1 - 0.999 * 0.999);
    EXPECT_NEAR(p.value(0, 0), before * (1 - lr * 0.1) - lr * m_hat / (std::sqrt(v_hat) + c.eps), 1e-15);
    EXPECT_EQ(opt.steps(), 2);
}

TEST(AdamW, RejectsInvalidBetas) {
    Param<double> p(M::Zero(1, 1));
    AdamWConfig c;
    c.beta1 = 1.0;
    EXPECT_THROW(AdamW<double>({&p}, c), ConfigError);
}

TEST(CosineSchedule, WarmsUpThenAnnealsToFloor) {
    const CosineSchedule s{1e-2, 1e-4, 10, 110};
    EXPECT_NEAR(s.at(0), 1e-3, 1e-15);
    EXPECT_NEAR(s.at(9), 1e-2, 1e-15);
    EXPECT_NEAR(s.at(10), 1e-2, 1e-15);
    EXPECT_NEAR(s.at(60), (1e-2 + 1e-4) / 2, 1e-15);
    EXPECT_NEAR(s.at(35), 1e-4 + (1e-2 - 1e-4) * (1 + std::cos(std::numbers::pi / 4)) / 2, 1e-15);
    EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
    EXPECT_NEAR(s.at(500), 1e-4, 1e-15);
}

TEST(CosineSchedule, RejectsFloorAbovePeak) {
    const CosineSchedule s{1e-3, 1e-2, 0, 10};
    EXPECT_THROW(s.at(0), ConfigError);
}

}  // namespace
