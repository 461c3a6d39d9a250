// Training throughput of the two-block MQAR network (model width d = 64) around layers built from
// the spec files, and where a step's time goes: inside the layers (the memory updates and reads,
// forward and reverse), in the rest of the mixers (projections, short convolutions, gates, norms)
// and in the rest of the model (embedding, head, loss, AdamW). One step is a forward and backward
// pass over a batch of 64 MQAR sequences of 64 tokens (V = 256, 4 pairs) and an AdamW update.
// Run with --benchmark_counters_tabular=true for a table.
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include "common/spec_file.hpp"
#include "gemm_rate.hpp"
#include "miras/nn/mqar_model.hpp"
#include "miras/spec/spec.hpp"
#include "miras/tasks/mqar.hpp"

namespace {

using namespace miras;

constexpr Index model_dim = 64, blocks = 2, batch = 64, seq_len = 64, vocab = 256;

/// Builds the layer of specs/NAME.json with `heads` heads of size `head_dim`.
std::shared_ptr<const AnyLayer> spec_layer(const std::string& name, Index heads, Index head_dim) {
    const std::string path = std::string(MIRAS_SOURCE_DIR) + "/specs/" + name + ".json";
    nlohmann::json written = written_spec(path);
    written["dims"]["heads"] = heads;
    written["dims"]["key"] = head_dim;
    written["dims"]["value"] = head_dim;
    return build_layer(parse_spec(written, path));
}

void run_train_step(benchmark::State& state, const std::string& name, Index head_dim,
                    const std::map<std::string, double>& gate_scales) {
    const std::shared_ptr<const AnyLayer> layer = spec_layer(name, 2, head_dim);
    using Network = nn::MqarNetwork<nn::SpecMixer<float>, float>;
    Network model(
        vocab, model_dim, blocks,
        [&](std::mt19937_64& rng) { return nn::SpecMixer<float>(layer, model_dim, 4, rng, gate_scales); }, 123);
    nn::AdamW<float> optimiser(model.params(), nn::AdamWConfig{});
    const tasks::MqarData data = tasks::make_mqar(tasks::MqarConfig{vocab, seq_len, 4, 0.01, false, 1}, batch,
                                                  tasks::mqar_seed(tasks::MqarSplit::train, 123, 0));

    double layer_seconds = 0, mixer_seconds = 0, step_seconds = 0;
    for (auto _ : state) {
        const auto started = std::chrono::steady_clock::now();
        for (auto& mixer : model.mixers) mixer.timing = {};
        optimiser.zero_grad();
        benchmark::DoNotOptimize(model.loss_and_gradients(data));
        optimiser.step(1e-3);
        step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        for (const auto& mixer : model.mixers) {
            layer_seconds += mixer.timing.layer;
            mixer_seconds += mixer.timing.mixer;
        }
    }
    state.counters["tokens/s"] =
        benchmark::Counter(static_cast<double>(batch * seq_len), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["layer_share"] = layer_seconds / step_seconds;
    state.counters["projection_share"] = (mixer_seconds - layer_seconds) / step_seconds;
    state.SetLabel(name + " (" + layer->backward_route() + ")");
}

}  // namespace

BENCHMARK(miras::bench::BM_EigenGemm)->Unit(benchmark::kMillisecond);

// The linear families take the hand-written reverse pass; heads of size 32 as Zoology's DeltaNet at d = 64.
BENCHMARK_CAPTURE(run_train_step, linear_attention, "linear_attention", 32, {})->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK_CAPTURE(run_train_step, deltanet, "deltanet", 32, {})->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK_CAPTURE(run_train_step, gated_deltanet, "gated_deltanet", 32, {})->Unit(benchmark::kMillisecond)->Iterations(20);
// The tape reverse pass: softmax attention, and MLP memories with the default rate scale of miras train.
BENCHMARK_CAPTURE(run_train_step, softmax_attention, "softmax_attention", 32, {})->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(run_train_step, titans, "titans", 8, {{"eta", 0.01}})->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK_CAPTURE(run_train_step, moneta, "moneta", 8, {{"eta", 0.01}})->Unit(benchmark::kMillisecond)->Iterations(2);

BENCHMARK_MAIN();
