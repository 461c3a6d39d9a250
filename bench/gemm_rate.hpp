// The machine's limit that the benchmark programs report their speed against.
#pragma once

#include <Eigen/Core>
#include <benchmark/benchmark.h>

namespace miras::bench {

/// Measures the single-core Eigen float GEMM rate (512 x 512 x 512), reported as GFLOP/s.
inline void BM_EigenGemm(benchmark::State& state) {
    const int n = 512;
    Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
    for (auto _ : state) {
        c.noalias() = a * b;
        benchmark::DoNotOptimize(c.data());
    }
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
}

}  // namespace miras::bench
