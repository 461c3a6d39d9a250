// The decoder runs one token per step over fixed buffers. It returns the outputs and the state of
// the reference token loop and checks every token's values as forward() does. For the layers of
// the fused loop it allocates nothing per step.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace {

// Counts the allocations of the whole program (operator new, and Eigen's own heap allocations);
// a test reads the count around the steps only.
std::atomic<long> allocations{0};

// Eigen allocates through malloc, not operator new. With EIGEN_RUNTIME_NO_MALLOC it checks each
// heap allocation with eigen_assert while allocation is switched off; this eigen_assert counts
// those and aborts on every other failed assertion.
void eigen_assertion_failed(const char* condition) {
    if (std::strstr(condition, "heap allocation") != nullptr) {
        allocations.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    std::fprintf(stderr, "Eigen assertion failed: %s\n", condition);
    std::abort();
}

}  // namespace

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) ((x) ? static_cast<void>(0) : eigen_assertion_failed(#x))

#include <gtest/gtest.h>

#include "miras/miras.hpp"
#include "support.hpp"
#include "with_execution.hpp"

void* operator new(std::size_t size) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using namespace miras;
using test::TensorMap;
using test::with_execution;

/// Scales every key row (and Comba's read keys) to unit norm, the regime in which a delta rule
/// with rates below 2 stays bounded.
template <class S>
void normalise_keys(TensorMap<S>& in, Index K) {
    for (const char* name : {"k", "p"}) {
        const auto found = in.find(name);
        if (found == in.end()) continue;
        Tensor<S>& keys = found->second;
        for (Index row = 0; row < keys.size() / K; ++row) {
            double norm = 0.0;
            for (Index c = 0; c < K; ++c) norm += static_cast<double>(keys[row * K + c] * keys[row * K + c]);
            for (Index c = 0; c < K; ++c) keys[row * K + c] = S(static_cast<double>(keys[row * K + c]) / std::sqrt(norm));
        }
    }
}

/// One-token buffers for every input of `in`, and the views a decoder binds to them.
template <class S>
struct TokenBuffers {
    explicit TokenBuffers(const TensorMap<S>& in, Index T) : tensors(test::token_slice(in, T, 0, 1)) {
        inputs = test::as_inputs(tensors);
    }
    /// Copies token t of `in` into the buffers, leaving their addresses where they are.
    void load(const TensorMap<S>& in, Index T, Index t) {
        for (auto& [name, tensor] : test::token_slice(in, T, t, t + 1)) {
            std::copy(tensor.values().begin(), tensor.values().end(), tensors.at(name).values().begin());
        }
    }
    TensorMap<S> tensors;
    Inputs<S> inputs;
};

/// Decodes T tokens one step at a time from a random state and compares every output and the
/// final state with one forward() call of the reference token loop over the same tokens.
template <class S, class L>
void expect_decoder_matches_reference(const L& base, Index T, double tolerance, bool keys_from_gate = false) {
    const L reference = with_execution(base, Execution::reference);
    const Index B = 2, H = base.dims().heads, V = base.dims().value;
    TensorMap<S> in = test::cast_all<S>(test::random_inputs(base.dims(), base.gates(), B, T, 17));
    if (keys_from_gate) in["k"] = presets::hgrn2_keys(in.at("g").view());
    else normalise_keys(in, base.dims().key);

    auto reference_state = reference.template initial_state<S>(B);
    TensorMap<S> start;
    for (auto& [name, tensor] : reference.save_state(reference_state)) {
        test::Random random(29);
        Tensor<S> values(tensor.shape());
        for (Index i = 0; i < values.size(); ++i) values[i] = S(random.uniform(-0.3, 0.3));
        start.emplace(name, std::move(values));
    }
    if (start.empty()) GTEST_SKIP() << "the layer keeps no fixed-size state";
    reference_state = reference.load_state(start);
    const Tensor<S> expected = reference.forward(test::as_inputs(in), reference_state);

    auto state = base.load_state(start);
    TokenBuffers<S> buffers(in, T);
    auto decoder = base.decoder(buffers.inputs, state);
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        buffers.load(in, T, t);
        const Tensor<S>& o = decoder.step();
        ASSERT_EQ(o.shape(), (Shape{B, 1, H, V}));
        for (Index b = 0; b < B; ++b) {
            for (Index i = 0; i < H * V; ++i) {
                const double want = static_cast<double>(expected[(b * T + t) * H * V + i]);
                worst = std::max(worst, std::abs(static_cast<double>(o[b * H * V + i]) - want) / (1.0 + std::abs(want)));
            }
        }
    }
    EXPECT_LE(worst, tolerance) << "outputs";
    const auto want_state = reference.save_state(reference_state);
    for (const auto& [name, tensor] : base.save_state(state)) {
        EXPECT_LE(test::max_rel_diff(tensor, want_state.at(name)), tolerance) << "state tensor " << name;
    }
}

/// Sizes that leave a remainder of rows after the blocks of eight and of key channels after the
/// SIMD packets, and the decode shape of the benchmarks.
const LayerOptions odd{.heads = 2, .key_dim = 13, .value_dim = 21};
const LayerOptions wide{.heads = 2, .key_dim = 128, .value_dim = 128};

template <class S>
void expect_fused_presets_match(const LayerOptions& options, Index T, double tolerance) {
    expect_decoder_matches_reference<S>(presets::linear_attention(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::retnet(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::mamba2(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::gla(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::deltanet(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::gated_deltanet(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::kda(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::comba(options), T, tolerance);
    expect_decoder_matches_reference<S>(presets::deltaproduct(options, 3), T, tolerance);
    expect_decoder_matches_reference<S>(
        presets::GatedDeltaNet(options, {}, {}, presets::per_token_decay(Axis::key, Placement::gradient_then_decay),
                               presets::per_token_step()),
        T, tolerance);
}

TEST(Decoder, FusedMatchesReferenceInDouble) { expect_fused_presets_match<double>(odd, 40, 1e-12); }
TEST(Decoder, FusedMatchesReferenceInFloat) { expect_fused_presets_match<float>(odd, 40, 2e-5); }
TEST(Decoder, FusedMatchesReferenceAtDecodeShape) {
    expect_fused_presets_match<float>(wide, 12, 2e-5);
    expect_fused_presets_match<double>(wide, 12, 1e-12);
}

TEST(Decoder, FusedMatchesReferenceForEveryRowWidth) {
    // Rows of a power-of-two number of SIMD packets stay in registers, up to 16 packets with
    // AVX-512 and 8 with 16 registers. Wider rows take the general loop. Key sizes from 2 cover one
    // packet of SSE in double, and an odd number of rows leaves one after the pairs of rows.
    for (const Index K : {2, 4, 8, 16, 32, 64, 128, 256}) {
        const LayerOptions options{.heads = 1, .key_dim = K, .value_dim = 7};
        SCOPED_TRACE("key_dim " + std::to_string(K));
        expect_fused_presets_match<float>(options, 6, 2e-5);
        expect_fused_presets_match<double>(options, 6, 1e-12);
    }
}

TEST(Decoder, OtherLayersMatchReference) {
    expect_decoder_matches_reference<double>(presets::hgrn2(odd), 30, 1e-12, true);
    expect_decoder_matches_reference<double>(presets::rwkv7(odd), 30, 1e-12);
    expect_decoder_matches_reference<double>(presets::longhorn(odd, false), 30, 1e-12);
    expect_decoder_matches_reference<double>(presets::mesanet(odd, {0.7}), 30, 1e-10);
    expect_decoder_matches_reference<float>(presets::rwkv7(odd), 30, 2e-5);
}

TEST(Decoder, ChunkedStepsMatchReference) {
    // Execution 'chunked' runs the chunked form on every one-token step.
    LayerOptions chunked = odd;
    chunked.execution = Execution::chunked;
    expect_decoder_matches_reference<double>(presets::gated_deltanet(chunked), 20, 1e-12);
    expect_decoder_matches_reference<double>(presets::rwkv7(chunked), 20, 1e-12);
    expect_decoder_matches_reference<double>(presets::mesanet(chunked, {0.7}), 20, 1e-10);
    expect_decoder_matches_reference<double>(
        presets::mesanet(chunked, {0.7}, LinearSolver::conjugate_gradient, 5), 20, 1e-10);
}

/// Steps a decoder `steps` times after one warm-up step and returns the allocations of those steps.
template <class L>
long allocations_per_steps(const L& layer, Index steps) {
    const Index B = 1;
    TensorMap<float> in = test::cast_all<float>(test::random_inputs(layer.dims(), layer.gates(), B, 1, 5));
    normalise_keys(in, layer.dims().key);
    auto state = layer.template initial_state<float>(B);
    TokenBuffers<float> buffers(in, 1);
    auto decoder = layer.decoder(buffers.inputs, state);
    decoder.step();
    const long before = allocations.load();
    Eigen::internal::set_is_malloc_allowed(false);
    for (Index i = 0; i < steps; ++i) decoder.step();
    Eigen::internal::set_is_malloc_allowed(true);
    return allocations.load() - before;
}

TEST(Decoder, FusedStepAllocatesNothing) {
    EXPECT_EQ(allocations_per_steps(presets::gated_deltanet(wide), 50), 0) << "gated_deltanet";
    EXPECT_EQ(allocations_per_steps(presets::kda(wide), 50), 0) << "kda";
    EXPECT_EQ(allocations_per_steps(presets::gla(wide), 50), 0) << "gla";
    EXPECT_EQ(allocations_per_steps(presets::comba(wide), 50), 0) << "comba";
    EXPECT_EQ(allocations_per_steps(presets::deltaproduct(wide, 2), 50), 0) << "deltaproduct";
    EXPECT_EQ(allocations_per_steps(presets::linear_attention(wide), 50), 0) << "linear_attention";
    // Heads wider than the stack workspace of the fused loop take one heap buffer per call.
    EXPECT_GT(allocations_per_steps(presets::gated_deltanet({.heads = 1, .key_dim = 300, .value_dim = 8}), 50), 0)
        << "the counter sees allocations inside the steps";
}

TEST(AllocationCounter, CountsEigenAllocations) {
    const long before = allocations.load();
    Eigen::internal::set_is_malloc_allowed(false);
    Eigen::VectorXd grown(64);
    Eigen::internal::set_is_malloc_allowed(true);
    EXPECT_EQ(allocations.load() - before, 1);
    EXPECT_EQ(grown.size(), 64);
}

/// A GatedDeltaNet decoder of B = 1, H = 2, K = V = 4 over buffers the test refills.
struct SmallDecode {
    const presets::GatedDeltaNet layer = presets::gated_deltanet({.heads = 2, .key_dim = 4, .value_dim = 4});
    Tensor<double> q{{1, 1, 2, 4}, 0.1}, k{{1, 1, 2, 4}, 0.2}, v{{1, 1, 2, 4}, 0.3}, g{{1, 1, 2}, -0.1},
        eta{{1, 1, 2}, 0.5};
    Inputs<double> inputs{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
    presets::GatedDeltaNet::State<double> state = layer.initial_state<double>(1);
};

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const InputError& e) {
        return e.what();
    }
    return "no InputError";
}

TEST(Decoder, RejectsBadValueAtItsStep) {
    SmallDecode d;
    auto decoder = d.layer.decoder(d.inputs, d.state);
    decoder.step();
    const auto before = d.layer.save_state(d.state).at("W");

    d.q[6] = std::nan("");
    const std::string nan_error = error_of([&] { decoder.step(); });
    EXPECT_NE(nan_error.find("input 'q' at [b=0, t=0, h=1, c=2] is nan"), std::string::npos) << nan_error;
    d.q[6] = 0.1;
    d.g[1] = 0.5;
    const std::string gate_error = error_of([&] { decoder.step(); });
    EXPECT_NE(gate_error.find("input 'g' at [b=0, t=0, h=1] is 0.5"), std::string::npos) << gate_error;
    // A rejected step leaves the state as it was.
    EXPECT_EQ(test::max_rel_diff(d.layer.save_state(d.state).at("W"), before), 0.0);

    d.g[1] = -0.1;
    EXPECT_NO_THROW(decoder.step());
    EXPECT_GT(test::max_rel_diff(d.layer.save_state(d.state).at("W"), before), 0.0);
}

TEST(Decoder, RejectsTwoTokensAndOtherBatch) {
    SmallDecode d;
    Tensor<double> q2({1, 2, 2, 4}), k2({1, 2, 2, 4}), v2({1, 2, 2, 4}), g2({1, 2, 2}, -0.1), eta2({1, 2, 2}, 0.5);
    const Inputs<double> two{q2.view(), k2.view(), v2.view(), {{"g", g2.view()}, {"eta", eta2.view()}}};
    const std::string tokens_error = error_of([&] { d.layer.decoder(two, d.state); });
    EXPECT_NE(tokens_error.find("T = 2, valid is T = 1"), std::string::npos) << tokens_error;

    auto other = d.layer.initial_state<double>(3);
    const std::string batch_error = error_of([&] { d.layer.decoder(d.inputs, other); });
    EXPECT_NE(batch_error.find("state contains 3 sequences but the inputs have B = 1"), std::string::npos)
        << batch_error;
}

}  // namespace
