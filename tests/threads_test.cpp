// Threads over (sequence, head) pairs give bitwise the results of one thread, in every execution.
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "miras/core/parallel.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/miras.hpp"
#include "with_execution.hpp"

namespace {

using namespace miras;

/// Returns `layer` rebuilt with `threads` threads and `execution`.
template <class L>
L with_threads(const L& layer, int threads, Execution execution) {
    return test::with_options(layer, [&](LayerOptions& options) {
        options.threads = threads;
        options.execution = execution;
    });
}

/// Runs the layer with 1, 2 and 3 threads on random inputs that carry every gate it reads, and
/// expects identical bytes.
template <class L>
void expect_thread_count_invariant(const L& base, Execution execution, Index T) {
    const Index B = 3, H = base.dims().heads, K = base.dims().key, V = base.dims().value;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    Tensor<float> q({B, T, H, K}), k({B, T, H, K}), v({B, T, H, V});
    for (auto* t : {&q, &v}) for (auto& x : t->values()) x = normal(rng);
    for (auto& x : k.values()) x = normal(rng) / std::sqrt(static_cast<float>(K));
    std::vector<Tensor<float>> gates;
    Inputs<float> inputs{q.view(), k.view(), v.view(), {}};
    for (const GateSpec& spec : base.gates()) {
        if (!spec.config.per_token) continue;
        const Index C = spec.config.axis == Axis::head ? 1 : (spec.config.axis == Axis::key ? base.dims().key_features : V);
        Tensor<float>& g = gates.emplace_back(Shape{B, T * (spec.per_step ? base.dims().steps_per_token : 1), H, C});
        for (auto& x : g.values()) {
            x = spec.range == Range::log_gate ? -0.2f * uniform(rng) : (spec.range == Range::any ? normal(rng) : 0.5f * uniform(rng));
        }
        inputs.gates[spec.name] = g.view();
    }

    const L one = with_threads(base, 1, execution);
    const Tensor<float> reference = one.forward(inputs);
    for (int threads : {2, 3}) {
        const Tensor<float> o = with_threads(base, threads, execution).forward(inputs);
        ASSERT_EQ(o.size(), reference.size());
        EXPECT_EQ(std::memcmp(o.data(), reference.data(), sizeof(float) * static_cast<std::size_t>(o.size())), 0)
            << threads << " threads";
    }
}

const LayerOptions options{.heads = 2, .key_dim = 6, .value_dim = 4};

TEST(Threads, GatedDeltaNetFusedIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::gated_deltanet(options), Execution::recurrent, 40);
}

TEST(Threads, GatedDeltaNetChunkedIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::gated_deltanet(options), Execution::chunked, 100);
}

TEST(Threads, KdaReferenceLoopIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::kda(options), Execution::reference, 40);
}

TEST(Threads, MesaNetIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::mesanet(options), Execution::automatic, 30);
}

TEST(Threads, MesaNetChunkedConjugateGradientIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::mesanet(options, {1.0}, LinearSolver::conjugate_gradient, 5),
                                  Execution::chunked, 40);
}

TEST(Threads, Rwkv7ChunkedIsBitwiseInvariant) {
    expect_thread_count_invariant(presets::rwkv7(options), Execution::chunked, 50);
}

TEST(Threads, TitansIsBitwiseInvariant) {
    LayerOptions square = options;
    square.value_dim = square.key_dim;
    expect_thread_count_invariant(presets::titans(square, 2, 4), Execution::automatic, 20);
}

TEST(ParallelFor, RethrowsTheFirstFailure) {
    EXPECT_THROW(parallel_for(8, 3, [](Index i) {
                     if (i == 5) throw InputError("task 5 failed");
                 }),
                 InputError);
}

TEST(ParallelFor, RunsEveryTaskOnce) {
    std::vector<std::atomic<int>> runs(100);
    parallel_for(100, 4, [&](Index i) { runs[static_cast<std::size_t>(i)]++; });
    for (std::size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].load(), 1) << "task " << i;
}

// The finiteness check of large inputs and outputs reads its range in one part per thread. A
// non-finite value in any part, or at either end, must still be found.
TEST(Threads, FiniteCheckFindsEveryPart) {
    const Index size = 3 * (Index(1) << 18) + 5;
    std::vector<float> values(static_cast<std::size_t>(size), 1.0f);
    for (int threads : {1, 2, 3, 8}) {
        EXPECT_TRUE(detail::all_finite(values.data(), size, threads)) << threads << " threads";
        for (Index at : {Index(0), size / 3, size / 2, size - 1}) {
            for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
                values[static_cast<std::size_t>(at)] = bad;
                EXPECT_FALSE(detail::all_finite(values.data(), size, threads))
                    << bad << " at " << at << " with " << threads << " threads";
                values[static_cast<std::size_t>(at)] = 1.0f;
            }
        }
    }
}

// The token loop checks q, k and v in one pass before the run, split over the threads (the chunked
// form checks them chunk by chunk instead).
TEST(Threads, NonFiniteInputNamedWithTwoThreads) {
    LayerOptions two = options;
    two.threads = 2;
    two.execution = Execution::recurrent;
    const auto layer = presets::deltanet(two);
    const Index T = (Index(1) << 19) / (options.heads * options.key_dim) + 1;
    Tensor<float> q({1, T, options.heads, options.key_dim}, 0.1f), k({1, T, options.heads, options.key_dim}, 0.1f);
    Tensor<float> v({1, T, options.heads, options.value_dim}, 0.1f);
    q[q.size() - 1] = std::numeric_limits<float>::quiet_NaN();
    try {
        (void)layer.forward(Inputs<float>{q.view(), k.view(), v.view(), {}});
        FAIL() << "expected an InputError for the last value of q";
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find("input 'q'"), std::string::npos) << error.what();
        EXPECT_NE(std::string(error.what()).find("nan"), std::string::npos) << error.what();
    }
}

TEST(Threads, RejectsZeroThreads) {
    LayerOptions zero = options;
    zero.threads = 0;
    EXPECT_THROW(presets::deltanet(zero), ConfigError);
}

}  // namespace
