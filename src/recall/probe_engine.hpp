// The machinery the probes share: a portable seeded generator, random keys and values, runs of a
// layer over many independent trials (each trial is one (sequence, head) of a batch), and the
// scores of reads against candidate values.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "miras/core/scalar.hpp"
#include "miras/tasks/probes.hpp"

namespace miras::tasks::detail {

/// Seeded generator whose draws are the same on every platform: mt19937_64 words turned into
/// uniforms with 53 bits and normals by the Box-Muller transform.
class ProbeRandom {
public:
    explicit ProbeRandom(std::uint64_t seed) : engine_(seed) {}

    /// Uniform in [0, 1).
    double uniform();
    /// Uniform in [low, high).
    double uniform(double low, double high) { return low + (high - low) * uniform(); }
    double normal();
    /// Uniform integer in [0, n).
    Index below(Index n);
    /// A uniformly random permutation of 0..n-1.
    std::vector<Index> permutation(Index n);

private:
    std::mt19937_64 engine_;
    bool has_spare_ = false;
    double spare_ = 0;
};

/// A seed for one point of one probe, mixed from the run seed by splitmix64.
std::uint64_t point_seed(std::uint64_t seed, Probe probe, std::size_t point);

/// n keys in R^dim: rows uniform on the unit sphere, or orthonormal rows (n <= dim).
Mat<double> random_keys(ProbeRandom& random, Index n, Index dim, KeyKind kind);

/// n values in R^dim with their labels among the candidates: unit vectors (each its own
/// candidate, labels offset + i) or one-hot rows (label = the hot channel).
struct Values {
    Mat<double> rows;
    std::vector<Index> labels;
};
Values random_values(ProbeRandom& random, Index n, Index dim, ValueKind kind, Index offset);

/// One independent trial: the pairs written, in order, and the reads.
struct Trial {
    Mat<double> write_keys;    // [T, K]
    Mat<double> write_values;  // [T, V]
    Mat<double> queries;       // [Q, K]
};

/// Runs every trial's writes from the zero state, then reads each query from a copy of the state
/// after the writes, so that no read depends on another. Trials are laid out (b, h), so their count
/// must be a multiple of the head count and they must share T and Q. Returns [Q, V] per trial.
std::vector<Mat<double>> write_then_query(const ProbedLayer& probed, const std::vector<Trial>& trials);

/// Runs one stream per trial in which the tokens flagged in `reads` write nothing and read
/// queries.row(t); the other tokens write their pair. Returns the reads [number of reads, V].
std::vector<Mat<double>> read_in_stream(const ProbedLayer& probed, const std::vector<Trial>& trials,
                                        const std::vector<bool>& reads);

/// Sequences per point so that sequences * heads * reads_per_trial >= min_queries.
Index sequences_for(Index reads_per_trial, Index heads, Index min_queries);

/// Running scores of reads: argmax (by cosine) over candidate rows, cosine with the target and
/// the mean squared error per channel, raw and after the least-squares gain.
class Tally {
public:
    void add(const Eigen::Ref<const Vec<double>>& y, const Eigen::Ref<const Vec<double>>& target,
             const Mat<double>& candidates, Index label);
    ProbePoint point(double x) const;
    Index count() const { return count_; }

private:
    Index count_ = 0, channels_ = 0;
    double correct_ = 0, cosine_ = 0, squared_ = 0;
    double read_read_ = 0, read_target_ = 0, target_target_ = 0;  // sums of <y, y>, <y, v>, <v, v>
};

}  // namespace miras::tasks::detail
