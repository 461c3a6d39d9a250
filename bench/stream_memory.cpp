// Streams a long sequence through a Gated DeltaNet layer block by block and reports the peak
// resident size against the state size, to show that memory does not grow with the tokens fed.
//
// Usage: miras_bench_stream [TOKENS] [BLOCK]   (defaults 1000000 and 4096)
// Shape: B = 1, H = 8, K = V = 128, float, automatic execution (chunked blocks). Four blocks of
// inputs are drawn once and fed in turn, so the inputs take a fixed amount of memory whatever the
// token count.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "miras/miras.hpp"
#include "miras/stream/stream.hpp"

namespace {

using namespace miras;

/// Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).
double peak_resident_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

Index parse_count(const char* text, const char* what) {
    char* end = nullptr;
    const long long value = std::strtoll(text, &end, 10);
    if (end == text || *end != '\0' || value < 1) {
        std::fprintf(stderr, "invalid %s '%s': expected a whole number >= 1\n", what, text);
        std::exit(2);
    }
    return static_cast<Index>(value);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 3) {
        std::fprintf(stderr, "usage: %s [TOKENS] [BLOCK]\n", argv[0]);
        return 2;
    }
    const Index tokens = argc > 1 ? parse_count(argv[1], "token count") : 1000000;
    const Index block = argc > 2 ? parse_count(argv[2], "block size") : 4096;
    const Index H = 8, K = 128, V = 128;

    const auto layer = presets::gated_deltanet(LayerOptions{.heads = H, .key_dim = K, .value_dim = V});
    Stream<presets::GatedDeltaNet, float> stream(layer, 1);
    const double state_mib = static_cast<double>(H * layer.state_size_per_head()) * sizeof(float) / (1024.0 * 1024.0);

    struct Block {
        Tensor<float> q, k, v, g, eta;
    };
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    std::vector<Block> blocks;
    for (int i = 0; i < 4; ++i) {
        Block b{Tensor<float>({1, block, H, K}), Tensor<float>({1, block, H, K}), Tensor<float>({1, block, H, V}),
                Tensor<float>({1, block, H}), Tensor<float>({1, block, H})};
        for (auto& x : b.q.values()) x = normal(rng);
        for (auto& x : b.v.values()) x = normal(rng);
        for (Index row = 0; row < block * H; ++row) {
            float norm = 0.0f;
            for (Index c = 0; c < K; ++c) norm += (b.k[row * K + c] = normal(rng)) * b.k[row * K + c];
            for (Index c = 0; c < K; ++c) b.k[row * K + c] /= std::sqrt(norm);
            b.g[row] = -0.05f * uniform(rng);
            b.eta[row] = uniform(rng);
        }
        blocks.push_back(std::move(b));
    }

    double resident_after_first = 0.0, output_sum = 0.0;
    const auto start = std::chrono::steady_clock::now();
    for (Index fed = 0, i = 0; fed < tokens; fed += block, ++i) {
        const Index T = std::min(block, tokens - fed);
        const Block& b = blocks[static_cast<std::size_t>(i % 4)];
        const Inputs<float> full{b.q.view(), b.k.view(), b.v.view(), {{"g", b.g.view()}, {"eta", b.eta.view()}}};
        std::vector<Tensor<float>> storage;  // the copies of a shorter last block
        const Inputs<float> inputs = T == block ? full : slice_tokens(full, 0, T, storage);
        const Tensor<float> output = stream.feed(inputs);
        output_sum += static_cast<double>(output[output.size() - 1]);
        if (fed == 0) resident_after_first = peak_resident_mib();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    double state_norm = 0.0;
    for (const auto& head : stream.state().heads) state_norm += static_cast<double>(head.memory.squaredNorm());
    state_norm = std::sqrt(state_norm);

    std::printf("tokens fed                 %lld in blocks of %lld\n", static_cast<long long>(stream.position()),
                static_cast<long long>(block));
    std::printf("state size                 %.2f MiB (H = %lld, K = V = %lld, float)\n", state_mib,
                static_cast<long long>(H), static_cast<long long>(K));
    std::printf("peak resident, first block %.1f MiB\n", resident_after_first);
    std::printf("peak resident, end         %.1f MiB\n", peak_resident_mib());
    std::printf("state norm at the end      %.3f (finite: %s)\n", state_norm, std::isfinite(state_norm) ? "yes" : "no");
    std::printf("time                       %.1f s, %.0f tokens/s, %.1f GFLOP/s (4 K V flops per head per token)\n",
                seconds, static_cast<double>(tokens) / seconds,
                4.0 * K * V * H * static_cast<double>(tokens) / seconds * 1e-9);
    std::printf("checksum                   %.6g\n", output_sum);
    return std::isfinite(state_norm) ? 0 : 1;
}
