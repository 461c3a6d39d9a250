// Multi-query associative recall (MQAR), generated as Zoology does (Arora et al. 2023,
// zoology/data/multiquery_ar.py): N pairs k1 v1 ... kN vN with keys from 1..V/2-1 and values from
// V/2..V-1, then each key queried once at an even offset 2*gap of the query region, with gaps drawn
// without replacement with weights p_i ∝ a * i^(a-1) (i = gap + 1). The label of a query is its
// value, placed at the query's own position; every other label is -100.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "miras/core/error.hpp"
#include "miras/core/tensor.hpp"

namespace miras::tasks {

/// Label of every unsupervised position (the ignore index of the cross-entropy).
inline constexpr std::int32_t ignore_label = -100;

struct MqarConfig {
    Index vocab_size = 8192;   ///< V: keys are 1..V/2-1, values V/2..V-1, 0 is the filler.
    Index seq_len = 64;        ///< L, even, L < V.
    Index num_pairs = 4;       ///< N distinct key-value pairs, 2N * passes + 2N <= L.
    double power_a = 0.01;     ///< a of the gap weights a * i^(a-1), a > 0.
    bool random_filler = true; ///< Replace the filler 0 by tokens uniform over 0..V-1.
    Index passes = 1;          ///< Times the pair block is repeated before the queries (JRT).
};

/// Tokens and labels of `examples` sequences, both [examples, L] row-major.
struct MqarData {
    Index examples = 0;
    Index seq_len = 0;
    std::vector<std::int32_t> inputs;
    std::vector<std::int32_t> labels;

    std::int32_t input(Index b, Index t) const { return inputs[static_cast<std::size_t>(b * seq_len + t)]; }
    std::int32_t label(Index b, Index t) const { return labels[static_cast<std::size_t>(b * seq_len + t)]; }
};

/// Raises ConfigError naming the first violated precondition of Zoology's generator.
inline void check_mqar_config(const MqarConfig& c) {
    auto fail = [](const std::string& what) { throw ConfigError("mqar: " + what); };
    if (c.seq_len <= 0 || c.seq_len % 2 != 0) {
        fail("seq_len = " + std::to_string(c.seq_len) + " must be a positive even number");
    }
    if (c.vocab_size <= c.seq_len) {
        fail("vocab_size = " + std::to_string(c.vocab_size) + " must exceed seq_len = " +
             std::to_string(c.seq_len));
    }
    if (c.num_pairs <= 0) fail("num_pairs = " + std::to_string(c.num_pairs) + " must be at least 1");
    if (c.passes <= 0) fail("passes = " + std::to_string(c.passes) + " must be at least 1");
    if (2 * c.num_pairs * c.passes + 2 * c.num_pairs > c.seq_len) {
        fail("2 * num_pairs * passes + 2 * num_pairs = " +
             std::to_string(2 * c.num_pairs * c.passes + 2 * c.num_pairs) + " must be at most seq_len = " +
             std::to_string(c.seq_len));
    }
    if (c.num_pairs > c.vocab_size / 2 - 1) {
        fail("num_pairs = " + std::to_string(c.num_pairs) + " exceeds the " +
             std::to_string(c.vocab_size / 2 - 1) + " distinct keys of vocab_size = " +
             std::to_string(c.vocab_size));
    }
    if (!(c.power_a > 0) || !std::isfinite(c.power_a)) {
        fail("power_a = " + std::to_string(c.power_a) + " must be a finite positive number");
    }
}

/// Number of query slots, (L - 2N * passes) / 2.
inline Index mqar_query_slots(const MqarConfig& c) { return (c.seq_len - 2 * c.num_pairs * c.passes) / 2; }

namespace detail {

/// Uniform draws from mt19937_64 by rejection and by the top 53 bits, so that a seed gives the same
/// data with every standard library (std distributions are implementation-defined).
class MqarRandom {
public:
    explicit MqarRandom(std::uint64_t seed) : engine_(seed) {}

    /// Uniform integer in [0, n).
    Index below(Index n) {
        const std::uint64_t range = static_cast<std::uint64_t>(n);
        const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() -
                                    std::numeric_limits<std::uint64_t>::max() % range;
        std::uint64_t x = engine_();
        while (x >= limit) x = engine_();
        return static_cast<Index>(x % range);
    }
    /// Uniform double in [0, 1).
    double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

private:
    std::mt19937_64 engine_;
};

/// `count` distinct values of [lo, hi), uniform without replacement (partial Fisher-Yates).
inline std::vector<Index> distinct(MqarRandom& rng, Index lo, Index hi, Index count) {
    std::vector<Index> pool;
    for (Index x = lo; x < hi; ++x) pool.push_back(x);
    for (Index i = 0; i < count; ++i) {
        const Index j = i + rng.below(static_cast<Index>(pool.size()) - i);
        std::swap(pool[static_cast<std::size_t>(i)], pool[static_cast<std::size_t>(j)]);
    }
    pool.resize(static_cast<std::size_t>(count));
    return pool;
}

/// `count` distinct indices drawn one after another, each with probability proportional to its
/// weight among those not yet drawn. NumPy's choice(replace=False, p=...) has this distribution.
inline std::vector<Index> weighted_distinct(MqarRandom& rng, std::vector<double> weights, Index count) {
    std::vector<Index> drawn;
    for (Index i = 0; i < count; ++i) {
        double total = 0;
        for (double w : weights) total += w;
        const double x = rng.unit() * total;
        double cumulative = 0;
        Index pick = -1;
        for (std::size_t j = 0; j < weights.size(); ++j) {
            if (weights[j] <= 0) continue;
            pick = static_cast<Index>(j);
            cumulative += weights[j];
            if (x < cumulative) break;
        }
        drawn.push_back(pick);
        weights[static_cast<std::size_t>(pick)] = 0;
    }
    return drawn;
}

}  // namespace detail

/// Probability of each gap 0..slots-1 on one draw: (a * i^(a-1)) / sum, i = gap + 1.
inline std::vector<double> mqar_gap_weights(Index slots, double power_a) {
    std::vector<double> p;
    double total = 0;
    for (Index i = 1; i <= slots; ++i) {
        p.push_back(power_a * std::pow(static_cast<double>(i), power_a - 1));
        total += p.back();
    }
    for (double& x : p) x /= total;
    return p;
}

/// `examples` MQAR sequences from `seed`; the same seed and config give the same data.
inline MqarData make_mqar(const MqarConfig& c, Index examples, std::uint64_t seed) {
    check_mqar_config(c);
    if (examples < 0) throw ConfigError("mqar: examples = " + std::to_string(examples) + " must be >= 0");

    const Index L = c.seq_len, N = c.num_pairs, half = c.vocab_size / 2;
    const Index context = 2 * N * c.passes;
    const std::vector<double> gap_weights = mqar_gap_weights(mqar_query_slots(c), c.power_a);

    MqarData data{examples, L, std::vector<std::int32_t>(static_cast<std::size_t>(examples * L), 0),
                  std::vector<std::int32_t>(static_cast<std::size_t>(examples * L), ignore_label)};
    detail::MqarRandom rng(seed);
    for (Index b = 0; b < examples; ++b) {
        std::int32_t* in = data.inputs.data() + b * L;
        std::int32_t* label = data.labels.data() + b * L;
        const std::vector<Index> keys = detail::distinct(rng, 1, half, N);
        const std::vector<Index> values = detail::distinct(rng, half, c.vocab_size, N);

        for (Index pass = 0; pass < c.passes; ++pass) {
            for (Index j = 0; j < N; ++j) {
                in[2 * N * pass + 2 * j] = static_cast<std::int32_t>(keys[static_cast<std::size_t>(j)]);
                in[2 * N * pass + 2 * j + 1] = static_cast<std::int32_t>(values[static_cast<std::size_t>(j)]);
            }
        }

        // Query j sits at context + 2 * gap_j and is labelled with its own value there.
        const std::vector<Index> gaps = detail::weighted_distinct(rng, gap_weights, N);
        for (Index j = 0; j < N; ++j) {
            const Index at = context + 2 * gaps[static_cast<std::size_t>(j)];
            in[at] = static_cast<std::int32_t>(keys[static_cast<std::size_t>(j)]);
            label[at] = static_cast<std::int32_t>(values[static_cast<std::size_t>(j)]);
        }

        if (c.random_filler) {
            for (Index t = 0; t < L; ++t) {
                if (in[t] == 0) in[t] = static_cast<std::int32_t>(rng.below(c.vocab_size));
            }
        }
    }
    return data;
}

enum class MqarSplit { train, test };

/// Seed of segment `segment` of a split: train seeds lie in [0, 2^31) and test seeds in
/// [2^31, 2^32), as in Zoology, so no train sequence shares a seed with a test sequence.
inline std::uint64_t mqar_seed(MqarSplit split, std::uint64_t base_seed, Index segment) {
    std::uint64_t z = base_seed + 0x9e3779b97f4a7c15ull * (static_cast<std::uint64_t>(segment) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const std::uint64_t low = z & 0x7fffffffull;
    return split == MqarSplit::train ? low : (0x80000000ull | low);
}

/// Zoology's accuracy: for each sequence, the share of supervised positions (label != -100) whose
/// argmax over the full vocabulary equals the label (the first maximum wins ties); then the mean
/// over sequences. `logits` is [B, L, V], `labels` [B, L]. A sequence without supervised positions
/// or a label outside -100, 0..V-1 raises InputError.
template <class S>
double mqar_accuracy(TensorView<S> logits, const std::vector<std::int32_t>& labels) {
    if (logits.rank() != 3) {
        throw InputError("mqar_accuracy: logits must be [B, L, V], got " + shape_string(logits.shape()));
    }
    const Index B = logits.dim(0), L = logits.dim(1), V = logits.dim(2);
    if (static_cast<Index>(labels.size()) != B * L) {
        throw InputError("mqar_accuracy: labels hold " + std::to_string(labels.size()) +
                         " values, logits " + shape_string(logits.shape()) + " need B * L = " +
                         std::to_string(B * L));
    }
    if (B == 0) throw InputError("mqar_accuracy: no sequences (B = 0)");

    double sum = 0;
    for (Index b = 0; b < B; ++b) {
        Index supervised = 0, correct = 0;
        for (Index t = 0; t < L; ++t) {
            const std::int32_t y = labels[static_cast<std::size_t>(b * L + t)];
            if (y == ignore_label) continue;
            if (y < 0 || y >= V) {
                throw InputError("mqar_accuracy: label " + std::to_string(y) + " at [" + std::to_string(b) +
                                 ", " + std::to_string(t) + "] is neither -100 nor in 0.." +
                                 std::to_string(V - 1));
            }
            const S* row = logits.data() + (b * L + t) * V;
            Index best = 0;
            for (Index v = 1; v < V; ++v) {
                if (row[v] > row[best]) best = v;
            }
            ++supervised;
            if (best == y) ++correct;
        }
        if (supervised == 0) {
            throw InputError("mqar_accuracy: sequence " + std::to_string(b) + " has no supervised position");
        }
        sum += static_cast<double>(correct) / static_cast<double>(supervised);
    }
    return sum / static_cast<double>(B);
}

}  // namespace miras::tasks
