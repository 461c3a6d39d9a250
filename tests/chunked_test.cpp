// The chunked form returns the numbers of the token loop: outputs and final state, for every
// chunkable preset, chunk size and awkward length, from a random initial state.
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/miras.hpp"
#include "with_execution.hpp"

namespace {

using namespace miras;

enum class Model {
    linear_attention,
    retnet,
    mamba2,
    gla,
    deltanet,
    gated_deltanet,
    gated_deltanet_form_b,
    kda,
    kda_form_b,
    comba,
    deltaproduct_2,
    deltaproduct_3,
    rwkv7,
    rwkv7_decay_first,
    generalized_delta_head_decay,
    generalized_delta_no_retention,
    mesanet,
    mesanet_conjugate_gradient
};

const char* model_name(Model m) {
    switch (m) {
        case Model::linear_attention: return "LinearAttention";
        case Model::retnet: return "RetNet";
        case Model::mamba2: return "Mamba2";
        case Model::deltanet: return "DeltaNet";
        case Model::gated_deltanet: return "GatedDeltaNet";
        case Model::gated_deltanet_form_b: return "GatedDeltaNetGradientThenDecay";
        case Model::gla: return "GLA";
        case Model::kda: return "KDA";
        case Model::kda_form_b: return "KDAGradientThenDecay";
        case Model::comba: return "Comba";
        case Model::deltaproduct_2: return "DeltaProduct2";
        case Model::deltaproduct_3: return "DeltaProduct3";
        case Model::rwkv7: return "RWKV7";
        case Model::rwkv7_decay_first: return "RWKV7DecayThenGradient";
        case Model::generalized_delta_head_decay: return "GeneralizedDeltaHeadDecay";
        case Model::generalized_delta_no_retention: return "GeneralizedDeltaNoRetention";
        case Model::mesanet: return "MesaNet";
        case Model::mesanet_conjugate_gradient: return "MesaNetConjugateGradient";
    }
    return "?";
}

struct Case {
    Model model;
    Index tokens;
    Index chunk;
};

/// Returns `layer` rebuilt with `execution` and chunks of `chunk` tokens.
template <class L>
L with_execution(const L& layer, Execution execution, Index chunk) {
    return test::with_options(layer, [&](LayerOptions& options) {
        options.execution = execution;
        options.chunk_size = chunk;
    });
}

template <class S>
double max_difference(const Tensor<S>& a, const Tensor<S>& b) {
    double worst = 0.0;
    for (Index i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i] - b[i])));
    return worst;
}

/// Runs the reference token loop, the fused loop and the chunked form from the same random state
/// and inputs, and compares outputs and final states.
template <class S, class L>
void expect_modes_agree(const L& base, Index T, Index C, double tolerance) {
    const L reference = with_execution(base, Execution::reference, C);
    const L recurrent = with_execution(base, Execution::recurrent, C);
    const L chunked = with_execution(base, Execution::chunked, C);
    ASSERT_FALSE(recurrent.runs_chunked(T));
    ASSERT_TRUE(chunked.runs_chunked(T));

    const Index B = 2, H = base.dims().heads, K = base.dims().key, V = base.dims().value;
    std::mt19937 rng(static_cast<unsigned>(T * 131 + C));
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    // k, v, eta and p carry n pairs per token (DeltaProduct); q and g one entry per token.
    const Index n = base.dims().steps_per_token;
    Tensor<S> q({B, T, H, K}), k({B, T * n, H, K}), v({B, T * n, H, V}), eta({B, T * n, H});
    bool channel_decay = false;
    if constexpr (requires { base.retention().gate; }) channel_decay = base.retention().gate.axis == Axis::key;
    bool read_key = false;
    if constexpr (requires { base.algorithm().separate_read_key; }) read_key = base.algorithm().separate_read_key;
    // The generalised delta rule reads a removal key a and writes along b per token.
    constexpr bool dplr = std::is_same_v<typename L::algorithm_type, GeneralizedDelta>;
    Tensor<S> g(channel_decay ? Shape{B, T, H, K} : Shape{B, T, H}), p({B, T * n, H, read_key ? K : 0});
    auto unit_rows = [&](Tensor<S>& keys) {
        for (Index i = 0; i < keys.size() / K; ++i) {
            double norm = 0.0;
            std::vector<double> key(static_cast<std::size_t>(K));
            for (auto& x : key) { x = normal(rng); norm += x * x; }
            for (Index c = 0; c < K; ++c) keys[i * K + c] = S(key[static_cast<std::size_t>(c)] / std::sqrt(norm));
        }
    };
    for (auto& x : q.values()) x = S(normal(rng));
    for (auto& x : v.values()) x = S(normal(rng));
    unit_rows(k);
    if (read_key) unit_rows(p);
    for (auto& x : g.values()) x = S(-0.5 * uniform(rng));
    for (auto& x : eta.values()) x = S(uniform(rng));
    Inputs<S> inputs{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
    if (read_key) inputs.gates.emplace("p", p.view());
    // RWKV-7's removal key a = -kappa and replacement direction b = kappa * rate, with kappa of unit
    // norm and the rate in [0, 1] per channel.
    Tensor<S> a({B, T, H, dplr ? K : 0}), replacement({B, T, H, dplr ? K : 0});
    if constexpr (dplr) {
        unit_rows(a);
        for (Index i = 0; i < a.size(); ++i) {
            replacement[i] = a[i] * S(uniform(rng));
            a[i] = -a[i];
        }
        inputs.gates.emplace("a", a.view());
        inputs.gates.emplace("b", replacement.view());
    }

    // Least squares: a per-head strength beta, and a start H = M M^T / K of the shape its
    // recurrence builds.
    constexpr bool least_squares = std::is_same_v<typename L::algorithm_type, LeastSquares>;
    Tensor<S> strength({B, T, H});
    for (auto& x : strength.values()) x = S(uniform(rng));
    if constexpr (least_squares) inputs.gates.emplace("beta", strength.view());

    Tensor<S> initial({B, H, V, K});
    for (auto& x : initial.values()) x = S(0.3 * normal(rng));
    std::map<std::string, Tensor<S>> start{{"W", initial}};
    if constexpr (least_squares) {
        Tensor<S> gram({B, H, K, K});
        for (Index head = 0; head < B * H; ++head) {
            Mat<double> M(K, K);
            for (Index i = 0; i < K * K; ++i) M.data()[i] = normal(rng);
            const Mat<double> product = M * M.transpose() / static_cast<double>(K);
            for (Index i = 0; i < K * K; ++i) gram[head * K * K + i] = S(product.data()[i]);
        }
        start.emplace("H", gram);
    }
    auto state_reference = reference.load_state(start);
    auto state_recurrent = recurrent.load_state(start);
    auto state_chunked = chunked.load_state(start);

    const Tensor<S> o_reference = reference.forward(inputs, state_reference);
    const Tensor<S> o_recurrent = recurrent.forward(inputs, state_recurrent);
    const Tensor<S> o_chunked = chunked.forward(inputs, state_chunked);
    ASSERT_EQ(o_reference.shape(), o_chunked.shape());

    // The tolerance grows with sqrt(T) because rounding errors of the two orders accumulate.
    const double bound = tolerance * std::sqrt(static_cast<double>(std::max<Index>(T, 1)));
    EXPECT_LE(max_difference(o_reference, o_recurrent), bound) << "fused outputs";
    EXPECT_LE(max_difference(o_reference, o_chunked), bound) << "chunked outputs";

    const Tensor<S> w_reference = reference.save_state(state_reference).at("W");
    EXPECT_LE(max_difference(w_reference, recurrent.save_state(state_recurrent).at("W")), bound) << "fused state";
    EXPECT_LE(max_difference(w_reference, chunked.save_state(state_chunked).at("W")), bound) << "chunked state";
    if constexpr (least_squares) {
        const Tensor<S> h_reference = reference.save_state(state_reference).at("H");
        EXPECT_LE(max_difference(h_reference, chunked.save_state(state_chunked).at("H")), bound) << "chunked H";
    }
}

template <class S>
void run_case(const Case& c, double tolerance) {
    const LayerOptions options{.heads = 2, .key_dim = 8, .value_dim = 5};
    switch (c.model) {
        case Model::linear_attention: return expect_modes_agree<S>(presets::linear_attention(options), c.tokens, c.chunk, tolerance);
        case Model::retnet: return expect_modes_agree<S>(presets::retnet(options), c.tokens, c.chunk, tolerance);
        case Model::mamba2: return expect_modes_agree<S>(presets::mamba2(options), c.tokens, c.chunk, tolerance);
        case Model::deltanet: return expect_modes_agree<S>(presets::deltanet(options), c.tokens, c.chunk, tolerance);
        case Model::gated_deltanet:
            return expect_modes_agree<S>(presets::gated_deltanet(options), c.tokens, c.chunk, tolerance);
        case Model::gated_deltanet_form_b: {
            presets::GatedDeltaNet layer(options, {}, {},
                                         presets::per_token_decay(Axis::head, Placement::gradient_then_decay),
                                         presets::per_token_step());
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
        case Model::gla: return expect_modes_agree<S>(presets::gla(options), c.tokens, c.chunk, tolerance);
        case Model::kda: return expect_modes_agree<S>(presets::kda(options), c.tokens, c.chunk, tolerance);
        case Model::kda_form_b: {
            presets::GatedDeltaNet layer(options, {}, {},
                                         presets::per_token_decay(Axis::key, Placement::gradient_then_decay),
                                         presets::per_token_step());
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
        case Model::comba: return expect_modes_agree<S>(presets::comba(options), c.tokens, c.chunk, tolerance);
        case Model::deltaproduct_2:
            return expect_modes_agree<S>(presets::deltaproduct(options, 2), c.tokens, c.chunk, tolerance);
        case Model::deltaproduct_3:
            return expect_modes_agree<S>(presets::deltaproduct(options, 3), c.tokens, c.chunk, tolerance);
        case Model::rwkv7: return expect_modes_agree<S>(presets::rwkv7(options), c.tokens, c.chunk, tolerance);
        case Model::rwkv7_decay_first: {
            // A per-token rate eta and the correction read after the decay.
            presets::Rwkv7 layer(options, {}, {}, presets::per_token_decay(Axis::key, Placement::decay_then_gradient),
                                 GeneralizedDelta{GateConfig::input(Axis::head)});
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
        case Model::generalized_delta_head_decay: {
            presets::Rwkv7 layer(options, {}, {}, presets::per_token_decay(Axis::head, Placement::gradient_then_decay),
                                 GeneralizedDelta{GateConfig::input(Axis::head)});
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
        case Model::generalized_delta_no_retention: {
            // No decay, and a fixed rate with one value per head.
            Layer<MatrixMemory, L2Bias, NoRetention, GeneralizedDelta> layer(options, {}, {}, {},
                                                                             GeneralizedDelta{GateConfig::per_head({0.5, 0.8})});
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
        case Model::mesanet:
            return expect_modes_agree<S>(presets::mesanet(options, {0.7}), c.tokens, c.chunk, tolerance);
        case Model::mesanet_conjugate_gradient: {
            // Four iterations on eight channels: the solve stops short of convergence, so the
            // iterates themselves are compared.
            const auto layer = presets::mesanet(options, {0.5, 0.7, 0.9, 1.1, 0.6, 0.8, 1.0, 1.2, 0.5, 0.7, 0.9, 1.1, 0.6, 0.8, 1.0, 1.2},
                                                LinearSolver::conjugate_gradient, 4);
            return expect_modes_agree<S>(layer, c.tokens, c.chunk, tolerance);
        }
    }
}

std::vector<Case> cases() {
    std::vector<Case> all;
    for (Model m : {Model::linear_attention, Model::retnet, Model::mamba2, Model::gla, Model::deltanet,
                    Model::gated_deltanet, Model::gated_deltanet_form_b, Model::kda, Model::kda_form_b, Model::comba,
                    Model::deltaproduct_2, Model::deltaproduct_3, Model::rwkv7, Model::rwkv7_decay_first,
                    Model::generalized_delta_head_decay, Model::generalized_delta_no_retention, Model::mesanet,
                    Model::mesanet_conjugate_gradient}) {
        for (Index C : {16, 32, 64}) {
            for (Index T : {Index(1), Index(2), C - 1, C, C + 1, Index(1000)}) all.push_back({m, T, C});
        }
    }
    return all;
}

class ChunkedForm : public ::testing::TestWithParam<Case> {};

TEST_P(ChunkedForm, EqualsRecurrentInDouble) { run_case<double>(GetParam(), 1e-12); }
TEST_P(ChunkedForm, EqualsRecurrentInFloat) { run_case<float>(GetParam(), 2e-5); }

INSTANTIATE_TEST_SUITE_P(Presets, ChunkedForm, ::testing::ValuesIn(cases()), [](const auto& info) {
    return std::string(model_name(info.param.model)) + "_T" + std::to_string(info.param.tokens) + "_C" +
           std::to_string(info.param.chunk);
});

// Keys of 72 channels (four 16-float packets and a remainder of eight) and values of 36 run the
// packet products of the chunked forms through their full blocks as well as their edges.
template <class S>
void expect_wide_heads_agree(double tolerance) {
    const LayerOptions wide{.heads = 1, .key_dim = 72, .value_dim = 36};
    for (Index C : {16, 32}) {
        const Index T = 2 * C + 5;
        expect_modes_agree<S>(presets::gated_deltanet(wide), T, C, tolerance);
        expect_modes_agree<S>(presets::gla(wide), T, C, tolerance);
        expect_modes_agree<S>(presets::kda(wide), T, C, tolerance);
        expect_modes_agree<S>(presets::rwkv7(wide), T, C, tolerance);
        expect_modes_agree<S>(presets::mesanet(wide, {1.0}, LinearSolver::conjugate_gradient, 4), T, C, tolerance);
    }
}

TEST(ChunkedForm, WideHeadsAgreeInDouble) { expect_wide_heads_agree<double>(1e-12); }
TEST(ChunkedForm, WideHeadsAgreeInFloat) { expect_wide_heads_agree<float>(2e-5); }

TEST(ChunkedForm, RejectsLayersWithoutAnExactChunkedForm) {
    LayerOptions options{.heads = 1, .key_dim = 4, .value_dim = 4};
    options.execution = Execution::chunked;
    EXPECT_THROW(presets::longhorn(options), ConfigError);
    options.read = ReadTiming::before_write;
    EXPECT_THROW(presets::gated_deltanet(options), ConfigError);
    EXPECT_THROW(presets::rwkv7(options), ConfigError);
    EXPECT_THROW(presets::mesanet(options), ConfigError);
}

TEST(ChunkedForm, RejectsRwkv7WithValueChannelDecay) {
    LayerOptions options{.heads = 1, .key_dim = 4, .value_dim = 6};
    const DecayRetention per_value{GateConfig::input(Axis::value), Placement::gradient_then_decay};
    EXPECT_FALSE(presets::Rwkv7(options, {}, {}, per_value, GeneralizedDelta{}).runs_chunked(64));
    options.execution = Execution::chunked;
    EXPECT_THROW(presets::Rwkv7(options, {}, {}, per_value, GeneralizedDelta{}), ConfigError);
}

TEST(ChunkedForm, RejectionNamesTheLayerSettings) {
    LayerOptions options{.heads = 1, .key_dim = 4, .value_dim = 4};
    options.execution = Execution::chunked;
    options.read = ReadTiming::before_write;
    try {
        presets::rwkv7(options);
        FAIL() << "no ConfigError";
    } catch (const ConfigError& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("read before the write"), std::string::npos) << message;
        EXPECT_NE(message.find("decay per key"), std::string::npos) << message;
        EXPECT_NE(message.find("generalized_delta"), std::string::npos) << message;
    }
}

TEST(ChunkedForm, AutomaticPicksChunkedOnlyWhereExact) {
    const LayerOptions options{.heads = 1, .key_dim = 4, .value_dim = 4, .chunk_size = 16};
    EXPECT_TRUE(presets::gated_deltanet(options).runs_chunked(16));
    EXPECT_FALSE(presets::gated_deltanet(options).runs_chunked(15));
    EXPECT_TRUE(presets::comba(options).runs_chunked(64));
    EXPECT_TRUE(presets::kda(options).runs_chunked(64));
    EXPECT_TRUE(presets::gla(options).runs_chunked(64));
    EXPECT_TRUE(presets::deltaproduct(options, 2).runs_chunked(64));
    EXPECT_TRUE(presets::rwkv7(options).runs_chunked(64));
    EXPECT_FALSE(presets::rwkv7(options).runs_chunked(15));
    EXPECT_TRUE(presets::mesanet(options).runs_chunked(64));
    EXPECT_FALSE(presets::longhorn(options).runs_chunked(64));
}

}  // namespace

// The chunked form checks q, k and v chunk by chunk as it reads them, when the inputs outnumber
// the state. A non-finite value in a late chunk, found after the earlier chunks have moved the
// state, gives the error that the check before the run gives, and leaves the state as it was.
template <class L>
void expect_late_non_finite_raises(const L& base, int threads) {
    const L layer = test::with_options(base, [&](LayerOptions& options) {
        options.execution = Execution::chunked;
        options.chunk_size = 8;
        options.threads = threads;
    });
    const Index B = 2, T = 40, H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Index n = layer.dims().steps_per_token;
    std::mt19937 rng(11);
    std::normal_distribution<double> normal(0.0, 1.0);
    const auto random = [&](Shape shape, double scale, double shift) {
        Tensor<double> x(std::move(shape));
        for (auto& value : x.values()) value = shift + scale * normal(rng);
        return x;
    };
    const Tensor<double> q = random({B, T, H, K}, 0.3, 0.0), k = random({B, T * n, H, K}, 0.3, 0.0);
    const Tensor<double> v = random({B, T * n, H, V}, 1.0, 0.0), eta({B, T * n, H}, 0.5);
    // RWKV-7 decays per key channel and removes along a = -kappa, writing b = kappa / 2.
    constexpr bool dplr = std::is_same_v<typename L::algorithm_type, GeneralizedDelta>;
    const Tensor<double> g(dplr ? Shape{B, T, H, K} : Shape{B, T, H}, -0.1);
    Tensor<double> removal({B, T, H, dplr ? K : 0}), replacement({B, T, H, dplr ? K : 0});
    for (Index i = 0; i < removal.size(); ++i) {
        removal[i] = -0.3 * std::abs(normal(rng));
        replacement[i] = -0.5 * removal[i];
    }
    auto state = layer.load_state(std::map<std::string, Tensor<double>>{{"W", random({B, H, V, K}, 0.3, 0.0)}});
    const Tensor<double> before = layer.save_state(state).at("W");

    struct Fault {
        const char* tensor;
        Index t;
        double value;
        std::string position;
    };
    // Three rows (pairs) before the end of sequence 1, head H - 1: the last chunk of eight rows,
    // read after the earlier chunks have moved the state.
    const Index last_pair = T * n - 3;
    for (const Fault& fault : {Fault{"q", T - 3, std::nan(""), "input 'q' at [b=1, t=" + std::to_string(T - 3)},
                               Fault{"k", last_pair, INFINITY, "input 'k' at [b=1, t=" + std::to_string(last_pair)},
                               Fault{"v", last_pair, -INFINITY, "input 'v' at [b=1, t=" + std::to_string(last_pair)}}) {
        Tensor<double> q_bad = q, k_bad = k, v_bad = v;
        Tensor<double>* bad_tensor = &v_bad;
        if (fault.tensor[0] == 'q') bad_tensor = &q_bad;
        if (fault.tensor[0] == 'k') bad_tensor = &k_bad;
        Tensor<double>& bad = *bad_tensor;
        const Index width = bad.dim(3), rows = bad.dim(1);
        bad[((1 * rows + fault.t) * H + H - 1) * width + 1] = fault.value;
        Inputs<double> inputs{q_bad.view(), k_bad.view(), v_bad.view(), {{"g", g.view()}, {"eta", eta.view()}}};
        if (dplr) {
            inputs.gates.emplace("a", removal.view());
            inputs.gates.emplace("b", replacement.view());
        }
        std::string message;
        try {
            layer.forward(inputs, state);
        } catch (const InputError& e) {
            message = e.what();
        }
        EXPECT_NE(message.find(fault.position + ", h=" + std::to_string(H - 1) + ", c=1]"), std::string::npos)
            << fault.tensor << ": " << message;
        const Tensor<double> after = layer.save_state(state).at("W");
        for (Index i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], before[i]) << fault.tensor << ", entry " << i;
    }
}

TEST(ChunkedForm, LateNonFiniteInputKeepsState) {
    const LayerOptions options{.heads = 3, .key_dim = 8, .value_dim = 5};
    for (int threads : {1, 2}) {
        expect_late_non_finite_raises(presets::gated_deltanet(options), threads);
        expect_late_non_finite_raises(presets::deltaproduct(options, 2), threads);
        expect_late_non_finite_raises(presets::rwkv7(options), threads);
    }
}

// The chunked forms check the gates with a value per channel as they read them, in place of a pass
// before the run. A value out of range in a late chunk gives the error of that pass, the one the
// token loop raises, and leaves the state as it was. `gates` contains valid values. The test sets
// each gate named in `faults` to its value at sequence 1, the third row from the end (a token, or a
// pair for a gate per pair), the last head and channel 1. With one fault the error names it.
template <class L>
void expect_late_gate_out_of_range_raises(const L& base, std::map<std::string, Tensor<double>> gates,
                                          const std::vector<std::pair<std::string, double>>& faults, int threads) {
    const auto with_execution_of = [&](Execution execution) {
        return test::with_options(base, [&](LayerOptions& options) {
            options.execution = execution;
            options.chunk_size = 8;
            options.threads = threads;
        });
    };
    const L chunked = with_execution_of(Execution::chunked), recurrent = with_execution_of(Execution::recurrent);
    // 40 tokens of q, k and v outnumber the 8 x 5 state, so the chunked form checks as it reads.
    const Index B = 2, T = 40, H = base.dims().heads, K = base.dims().key, V = base.dims().value;
    const Index n = base.dims().steps_per_token;
    std::mt19937 rng(13);
    std::normal_distribution<double> normal(0.0, 0.3);
    const auto random = [&](Shape shape) {
        Tensor<double> x(std::move(shape));
        for (auto& entry : x.values()) entry = normal(rng);
        return x;
    };
    const Tensor<double> q = random({B, T, H, K}), k = random({B, T * n, H, K}), v = random({B, T * n, H, V});
    std::string position;
    for (const auto& [name, value] : faults) {
        Tensor<double>& bad = gates.at(name);
        const Index rows = bad.dim(1), channels = bad.rank() == 4 ? bad.dim(3) : 1;
        bad[((1 * rows + rows - 3) * H + H - 1) * channels + (channels > 1 ? 1 : 0)] = value;
        position = "input '" + name + "' at [b=1, t=" + std::to_string(rows - 3) + ", h=" + std::to_string(H - 1);
    }
    Inputs<double> inputs{q.view(), k.view(), v.view(), {}};
    for (const auto& [gate, tensor] : gates) inputs.gates.emplace(gate, tensor.view());

    const auto message_of = [&](const L& layer, auto& state) {
        try {
            layer.forward(inputs, state);
        } catch (const InputError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    auto state = chunked.load_state(std::map<std::string, Tensor<double>>{{"W", random({B, H, V, K})}});
    const Tensor<double> before = chunked.save_state(state).at("W");
    auto recurrent_state = state;
    const std::string expected = message_of(recurrent, recurrent_state);
    EXPECT_NE(expected.find(faults.size() == 1 ? position : "input '"), std::string::npos) << expected;
    EXPECT_EQ(message_of(chunked, state), expected) << faults.front().first;
    const Tensor<double> after = chunked.save_state(state).at("W");
    for (Index i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], before[i]) << faults.front().first << ", entry " << i;
}

TEST(ChunkedForm, LateGateOutOfRangeKeepsState) {
    const LayerOptions options{.heads = 3, .key_dim = 8, .value_dim = 5};
    const Index B = 2, T = 40, H = 3, K = 8;
    const Tensor<double> channel_decay({B, T, H, K}, -0.1), head_decay({B, T, H}, -0.1), rate({B, T, H}, 0.5);
    const Tensor<double> read_key({B, T, H, K}, 0.2), removal({B, T, H, K}, -0.3), replacement({B, T, H, K}, 0.15);
    // Comba with two pairs per token: its read key and rate have a row per pair.
    LayerOptions pairs = options;
    pairs.steps_per_token = 2;
    const Tensor<double> pair_rate({B, 2 * T, H}, 0.25), pair_read_key({B, 2 * T, H, K}, 0.2);
    const std::map<std::string, Tensor<double>> rwkv{
        {"g", channel_decay}, {"eta", rate}, {"a", removal}, {"b", replacement}};
    for (int threads : {1, 2}) {
        expect_late_gate_out_of_range_raises(presets::gla(options), {{"g", channel_decay}}, {{"g", 0.5}}, threads);
        expect_late_gate_out_of_range_raises(presets::kda(options), {{"g", channel_decay}, {"eta", rate}},
                                             {{"g", std::nan("")}}, threads);
        expect_late_gate_out_of_range_raises(presets::comba(options),
                                             {{"g", head_decay}, {"eta", rate}, {"p", read_key}}, {{"p", INFINITY}},
                                             threads);
        expect_late_gate_out_of_range_raises(presets::comba(pairs),
                                             {{"g", head_decay}, {"eta", pair_rate}, {"p", pair_read_key}},
                                             {{"p", -INFINITY}}, threads);
        expect_late_gate_out_of_range_raises(presets::rwkv7(options), rwkv, {{"g", 0.5}}, threads);
        expect_late_gate_out_of_range_raises(presets::rwkv7(options), rwkv, {{"b", std::nan("")}}, threads);
        // A bad gate per head as well: the error is still the one the checks in their usual order
        // find first.
        expect_late_gate_out_of_range_raises(presets::kda(options), {{"g", channel_decay}, {"eta", rate}},
                                             {{"g", 0.5}, {"eta", -1.0}}, threads);
    }
}

// The chunked form checks the outputs as it writes them, in place of a pass over the output. A
// state that diverges (keys of norm 10, so that beta * ||k||^2 = 50) still raises a NumericalError.
TEST(ChunkedForm, DivergedOutputRaises) {
    const presets::GatedDeltaNet layer = with_execution(
        presets::gated_deltanet(LayerOptions{.heads = 2, .key_dim = 8, .value_dim = 5}), Execution::chunked, 16);
    const Index B = 1, T = 64, H = 2, K = 8, V = 5;
    Tensor<float> q({B, T, H, K}, 1.0f), k({B, T, H, K}), v({B, T, H, V}, 1.0f), g({B, T, H}, 0.0f), eta({B, T, H}, 0.5f);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (Index row = 0; row < B * T * H; ++row) {
        float norm = 0.0f;
        for (Index c = 0; c < K; ++c) norm += (k[row * K + c] = normal(rng)) * k[row * K + c];
        for (Index c = 0; c < K; ++c) k[row * K + c] *= 10.0f / std::sqrt(norm);
    }
    const Inputs<float> inputs{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
    EXPECT_THROW(layer.forward(inputs), NumericalError);
}

/// The inputs and initial state of a chunked run in double, for run_with_shifted_key.
struct DoubleRun {
    std::map<std::string, Tensor<double>> inputs, state;
};

/// Runs `layer` from `run` in scalar S with `shift` added to entry `index` of k.
template <class S, class L>
Tensor<S> run_with_shifted_key(const L& layer, const DoubleRun& run, Index index, const S& shift) {
    const auto cast = [](const Tensor<double>& x) {
        Tensor<S> y(x.shape());
        for (Index i = 0; i < x.size(); ++i) y[i] = S(x[i]);
        return y;
    };
    std::map<std::string, Tensor<S>> tensors, start;
    for (const auto& [name, tensor] : run.inputs) tensors.emplace(name, cast(tensor));
    for (const auto& [name, tensor] : run.state) start.emplace(name, cast(tensor));
    tensors.at("k")[index] += shift;
    Inputs<S> inputs{tensors.at("q").view(), tensors.at("k").view(), tensors.at("v").view(), {}};
    for (const auto& [name, tensor] : tensors) {
        if (name != "q" && name != "k" && name != "v") inputs.gates.emplace(name, tensor.view());
    }
    auto state = layer.load_state(start);
    return layer.forward(inputs, state);
}

// The chunked forms on Dual<double>, the scalar of forward-mode derivatives, take Eigen's
// products in place of the packet loops. Their values equal the double run, and the derivative
// of every output along one key entry equals a central finite difference.
template <class L>
void expect_dual_matches_double(const L& base) {
    const L layer = with_execution(base, Execution::chunked, 8);
    const Index B = 1, T = 20, H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    std::mt19937 rng(29);
    std::normal_distribution<double> normal(0.0, 1.0);
    const auto random = [&](Shape shape, double scale) {
        Tensor<double> x(std::move(shape));
        for (auto& value : x.values()) value = scale * normal(rng);
        return x;
    };
    bool channel_decay = false;
    if constexpr (requires { layer.retention().gate; }) channel_decay = layer.retention().gate.axis == Axis::key;
    constexpr bool dplr = std::is_same_v<typename L::algorithm_type, GeneralizedDelta>;
    DoubleRun run;
    run.inputs.emplace("q", random({B, T, H, K}, 0.5));
    run.inputs.emplace("k", random({B, T, H, K}, 0.3));
    run.inputs.emplace("v", random({B, T, H, V}, 1.0));
    run.inputs.emplace("g", Tensor<double>(channel_decay ? Shape{B, T, H, K} : Shape{B, T, H}, -0.1));
    run.inputs.emplace("eta", Tensor<double>({B, T, H}, 0.5));
    if (dplr) {
        Tensor<double> removal = random({B, T, H, K}, 0.3), replacement({B, T, H, K});
        for (Index i = 0; i < removal.size(); ++i) {
            removal[i] = -std::abs(removal[i]);
            replacement[i] = -0.5 * removal[i];
        }
        run.inputs.emplace("a", removal);
        run.inputs.emplace("b", replacement);
    }
    run.state.emplace("W", random({B, H, V, K}, 0.3));

    // Token 3 of the last head, in the first chunk, so that its effect runs through later chunks.
    const Index index = (3 * H + H - 1) * K + 1;
    constexpr double step = 1e-6;
    const Tensor<Dual<double>> dual = run_with_shifted_key(layer, run, index, Dual<double>(0.0, 1.0));
    const Tensor<double> plain = run_with_shifted_key(layer, run, index, 0.0);
    const Tensor<double> plus = run_with_shifted_key(layer, run, index, step);
    const Tensor<double> minus = run_with_shifted_key(layer, run, index, -step);
    double value_error = 0.0, derivative_error = 0.0, largest = 0.0;
    for (Index i = 0; i < plain.size(); ++i) {
        const double difference = (plus[i] - minus[i]) / (2.0 * step);
        value_error = std::max(value_error, std::abs(dual[i].v - plain[i]));
        derivative_error = std::max(derivative_error, std::abs(dual[i].d - difference));
        largest = std::max(largest, std::abs(difference));
    }
    EXPECT_LE(value_error, 1e-12);
    EXPECT_LE(derivative_error, 1e-6 * std::max(1.0, largest));
    // The key entry must move the outputs, or the comparison above proves nothing.
    EXPECT_GT(largest, 1e-3);
}

TEST(ChunkedForm, DualMatchesDouble) {
    // Keys of 20 channels and values of 18: packets of 8 doubles with remainders in the double runs.
    const LayerOptions options{.heads = 2, .key_dim = 20, .value_dim = 18};
    expect_dual_matches_double(presets::gated_deltanet(options));
    expect_dual_matches_double(presets::gla(options));
    expect_dual_matches_double(presets::kda(options));
    expect_dual_matches_double(presets::rwkv7(options));
}
