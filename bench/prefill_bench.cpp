// Prefill and decode throughput of the recurrent and chunked forms against the same run's GEMM rate.
//
// Throughput counts 4 K V flops per head per token for every form, so that the recurrent and chunked
// numbers compare directly. Run with --benchmark_counters_tabular=true for a table.
#include <random>

#include <benchmark/benchmark.h>

#include "gemm_rate.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/miras.hpp"

namespace {

using namespace miras;

BENCHMARK(bench::BM_EigenGemm)->Unit(benchmark::kMillisecond);

struct Sequence {
    Tensor<float> q, k, v, g, eta, a, b;
    Inputs<float> inputs;
};

/// Gates beside g and eta: RWKV-7's removal key a and direction b, or MesaNet's strength beta.
enum class ExtraGates { none, rwkv7, mesanet };

void unit_rows(Tensor<float>& x, Index K, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (Index i = 0; i < x.size() / K; ++i) {
        float norm = 0.0f;
        for (Index c = 0; c < K; ++c) norm += (x[i * K + c] = normal(rng)) * x[i * K + c];
        for (Index c = 0; c < K; ++c) x[i * K + c] /= std::sqrt(norm);
    }
}

Sequence make_sequence(Index B, Index T, Index H, Index K, Index V, bool per_key_decay,
                       ExtraGates extra = ExtraGates::none) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const Index removal_width = extra == ExtraGates::rwkv7 ? K : 0;
    Sequence s{Tensor<float>({B, T, H, K}), Tensor<float>({B, T, H, K}), Tensor<float>({B, T, H, V}),
               Tensor<float>(per_key_decay ? Shape{B, T, H, K} : Shape{B, T, H}, -0.02f),
               Tensor<float>({B, T, H}, 0.5f), Tensor<float>({B, T, H, removal_width}),
               Tensor<float>({B, T, H, removal_width}), {}};
    for (auto& x : s.q.values()) x = normal(rng);
    for (auto& x : s.v.values()) x = normal(rng);
    unit_rows(s.k, K, rng);
    s.inputs = Inputs<float>{s.q.view(), s.k.view(), s.v.view(), {{"g", s.g.view()}, {"eta", s.eta.view()}}};
    if (extra == ExtraGates::rwkv7) {
        // RWKV-7: a = -kappa and b = 0.5 kappa for a unit kappa.
        unit_rows(s.a, K, rng);
        for (Index i = 0; i < s.a.size(); ++i) {
            s.b[i] = 0.5f * s.a[i];
            s.a[i] = -s.a[i];
        }
        s.inputs.gates.emplace("a", s.a.view());
        s.inputs.gates.emplace("b", s.b.view());
    }
    if (extra == ExtraGates::mesanet) s.inputs.gates.emplace("beta", s.eta.view());
    return s;
}

template <class L>
void run_prefill(benchmark::State& state, L layer, bool per_key_decay, ExtraGates extra = ExtraGates::none) {
    const Index B = 1, T = 4096, H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Sequence s = make_sequence(B, T, H, K, V, per_key_decay, extra);
    for (auto _ : state) {
        auto st = layer.template initial_state<float>(B);
        auto o = layer.forward(s.inputs, st);
        benchmark::DoNotOptimize(o.data());
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * T), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["GFLOP/s"] = benchmark::Counter(4.0 * K * V * H * B * T, benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
}

LayerOptions prefill_options(Execution execution, int threads = 1) {
    LayerOptions options{.heads = 8, .key_dim = 128, .value_dim = 128};
    options.execution = execution;
    options.threads = threads;
    return options;
}

void BM_GatedDeltaNetPrefillRecurrent(benchmark::State& state) {
    run_prefill(state, presets::gated_deltanet(prefill_options(Execution::recurrent)), false);
}
void BM_GatedDeltaNetPrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::gated_deltanet(prefill_options(Execution::chunked)), false);
}
void BM_Mamba2PrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::mamba2(prefill_options(Execution::chunked)), false);
}
void BM_GlaPrefillRecurrent(benchmark::State& state) {
    run_prefill(state, presets::gla(prefill_options(Execution::recurrent)), true);
}
void BM_GlaPrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::gla(prefill_options(Execution::chunked)), true);
}
void BM_KdaPrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::kda(prefill_options(Execution::chunked)), true);
}
void BM_KdaPrefillRecurrent(benchmark::State& state) {
    run_prefill(state, presets::kda(prefill_options(Execution::recurrent)), true);
}
void BM_Rwkv7PrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::rwkv7(prefill_options(Execution::chunked)), true, ExtraGates::rwkv7);
}
void BM_Rwkv7PrefillTokenLoop(benchmark::State& state) {
    run_prefill(state, presets::rwkv7(prefill_options(Execution::recurrent)), true, ExtraGates::rwkv7);
}
// MesaNet with 30 conjugate-gradient iterations per token. The counted 4 K V flops leave out the
// solve, which dominates.
void BM_MesaNetPrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::mesanet(prefill_options(Execution::chunked), {1.0}, LinearSolver::conjugate_gradient),
                false, ExtraGates::mesanet);
}
void BM_MesaNetPrefillTokenLoop(benchmark::State& state) {
    run_prefill(state, presets::mesanet(prefill_options(Execution::recurrent), {1.0}, LinearSolver::conjugate_gradient),
                false, ExtraGates::mesanet);
}
// MesaNet with the Cholesky solver, the preset's default: each token factorises its K x K system.
void BM_MesaNetCholeskyPrefillChunked(benchmark::State& state) {
    run_prefill(state, presets::mesanet(prefill_options(Execution::chunked), {1.0}), false, ExtraGates::mesanet);
}
void BM_MesaNetCholeskyPrefillTokenLoop(benchmark::State& state) {
    run_prefill(state, presets::mesanet(prefill_options(Execution::recurrent), {1.0}), false, ExtraGates::mesanet);
}
void BM_GatedDeltaNetPrefillChunkedTwoThreads(benchmark::State& state) {
    run_prefill(state, presets::gated_deltanet(prefill_options(Execution::chunked, 2)), false);
}
BENCHMARK(BM_GatedDeltaNetPrefillRecurrent)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GatedDeltaNetPrefillChunkedTwoThreads)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GatedDeltaNetPrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mamba2PrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GlaPrefillRecurrent)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GlaPrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdaPrefillRecurrent)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdaPrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Rwkv7PrefillTokenLoop)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Rwkv7PrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MesaNetPrefillTokenLoop)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MesaNetPrefillChunked)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MesaNetCholeskyPrefillTokenLoop)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MesaNetCholeskyPrefillChunked)->Unit(benchmark::kMillisecond);

/// MLP-memory prefill (H = 4, d = 64, hidden 256, mini-batches of 16, T = 4096): the matrix form of
/// the mini-batches against the token loop, for TTT-MLP and Titans. Throughput counts 8 P flops
/// per head per token for the P = 2 d 4d weights of the memory: 2 P for the forward pass of the
/// key, 4 P for its inner gradient (backpropagation and the weight gradient) and 2 P for the read
/// of the query.
template <class L>
void run_mlp_prefill(benchmark::State& state, const L& layer) {
    const Index B = 1, T = 4096, H = layer.dims().heads, d = layer.dims().key;
    Sequence s = make_sequence(B, T, H, d, d, false);
    // A small inner rate keeps the memories finite on these random sequences. A forget gate of
    // exp(-0.02) per token shrank Titans' weights to about 1e-31 by the end of the sequence, and its
    // products then ran on subnormal floats (5.7 times slower on an Intel Xeon), so the gate here
    // is exp(-0.001).
    const Tensor<float> eta({B, T, H}, 0.01f), theta({B, T, H}, -0.1f), gamma({B, T, H}, 1.0f);
    const Tensor<float> forget({B, T, H}, -0.001f);
    s.inputs.gates["g"] = forget.view();
    s.inputs.gates["eta"] = eta.view();
    s.inputs.gates["theta"] = theta.view();
    s.inputs.gates["gamma"] = gamma.view();
    // The MLP weights start from seeded normal draws, which are not part of a prefill, so each
    // iteration copies one initial state.
    const auto initial = layer.template initial_state<float>(B);
    for (auto _ : state) {
        auto st = initial;
        auto o = layer.forward(s.inputs, st);
        benchmark::DoNotOptimize(o.data());
    }
    const double weights = 2.0 * d * 4 * d;
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * T), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["GFLOP/s"] = benchmark::Counter(8.0 * weights * H * B * T, benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
}

LayerOptions mlp_options(Execution execution) {
    LayerOptions options{.heads = 4, .key_dim = 64, .value_dim = 64};
    options.execution = execution;
    return options;
}

void BM_TttMlpPrefillMatrixForm(benchmark::State& state) {
    run_mlp_prefill(state, presets::ttt_mlp(mlp_options(Execution::automatic), 16));
}
void BM_TttMlpPrefillTokenLoop(benchmark::State& state) {
    run_mlp_prefill(state, presets::ttt_mlp(mlp_options(Execution::reference), 16));
}
void BM_TitansPrefillMatrixForm(benchmark::State& state) {
    run_mlp_prefill(state, presets::titans(mlp_options(Execution::automatic), 2, 16));
}
void BM_TitansPrefillTokenLoop(benchmark::State& state) {
    run_mlp_prefill(state, presets::titans(mlp_options(Execution::reference), 2, 16));
}
BENCHMARK(BM_TttMlpPrefillMatrixForm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TttMlpPrefillTokenLoop)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TitansPrefillMatrixForm)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TitansPrefillTokenLoop)->Unit(benchmark::kMillisecond);

// The decode step: one token at a time with the state carried (H = 16, K = V = 128), through a
// Decoder over fixed buffers (no allocation per token) and through forward() with T = 1.

/// Sets the throughput counters of one decoded token.
void set_decode_counters(benchmark::State& state) {
    state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["GFLOP/s"] = benchmark::Counter(4.0 * 128 * 128 * 16, benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
}

LayerOptions decode_options() {
    LayerOptions options{.heads = 16, .key_dim = 128, .value_dim = 128};
    options.execution = Execution::recurrent;
    return options;
}

template <class L>
void run_decoder(benchmark::State& state, const L& layer, bool per_key_decay) {
    const Sequence s = make_sequence(1, 1, 16, 128, 128, per_key_decay);
    auto st = layer.template initial_state<float>(1);
    auto decoder = layer.decoder(s.inputs, st);
    for (auto _ : state) benchmark::DoNotOptimize(decoder.step().data());
    set_decode_counters(state);
}

void BM_GatedDeltaNetDecode(benchmark::State& state) {
    run_decoder(state, presets::gated_deltanet(decode_options()), false);
}
void BM_GatedDeltaNetDecodeForward(benchmark::State& state) {
    const auto layer = presets::gated_deltanet(decode_options());
    const Sequence s = make_sequence(1, 1, 16, 128, 128, false);
    auto st = layer.initial_state<float>(1);
    for (auto _ : state) {
        auto o = layer.forward(s.inputs, st);
        benchmark::DoNotOptimize(o.data());
    }
    set_decode_counters(state);
}
void BM_GlaDecode(benchmark::State& state) { run_decoder(state, presets::gla(decode_options()), true); }
BENCHMARK(BM_GatedDeltaNetDecode)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GatedDeltaNetDecodeForward)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GlaDecode)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
