// Runs of a layer over probe trials: gate tensors from the constant probe gates, snapshots of the
// state after the writes, and the scores of the reads.
#include "probe_engine.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <Eigen/QR>

namespace miras::tasks::detail {

double ProbeRandom::uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

double ProbeRandom::normal() {
    if (has_spare_) {
        has_spare_ = false;
        return spare_;
    }
    const double u1 = 1.0 - uniform();  // in (0, 1], so the log is finite
    const double u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * std::numbers::pi * u2);
    has_spare_ = true;
    return radius * std::cos(2.0 * std::numbers::pi * u2);
}

Index ProbeRandom::below(Index n) { return std::min<Index>(static_cast<Index>(uniform() * static_cast<double>(n)), n - 1); }

std::vector<Index> ProbeRandom::permutation(Index n) {
    std::vector<Index> order(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    for (Index i = n - 1; i > 0; --i) std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(below(i + 1))]);
    return order;
}

std::uint64_t point_seed(std::uint64_t seed, Probe probe, std::size_t point) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (1 + static_cast<std::uint64_t>(probe) * 1000 + point);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

Mat<double> random_keys(ProbeRandom& random, Index n, Index dim, KeyKind kind) {
    if (kind == KeyKind::orthonormal && n > dim) {
        throw InputError("orthonormal keys: " + std::to_string(n) + " keys requested in R^" + std::to_string(dim) +
                         "; valid is at most " + std::to_string(dim));
    }
    Mat<double> gaussian(n, dim);
    for (Index i = 0; i < n; ++i) {
        for (Index j = 0; j < dim; ++j) gaussian(i, j) = random.normal();
    }
    if (kind == KeyKind::sphere) {
        for (Index i = 0; i < n; ++i) gaussian.row(i).normalize();
        return gaussian;
    }
    // The thin Q factor of a Gaussian matrix has orthonormal columns spanning a uniform subspace.
    Eigen::MatrixXd columns = gaussian.transpose();
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(columns);
    Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(dim, n);
    return q.transpose();
}

Values random_values(ProbeRandom& random, Index n, Index dim, ValueKind kind, Index offset) {
    Values values{Mat<double>::Zero(n, dim), std::vector<Index>(static_cast<std::size_t>(n))};
    for (Index i = 0; i < n; ++i) {
        if (kind == ValueKind::one_hot) {
            const Index hot = random.below(dim);
            values.rows(i, hot) = 1.0;
            values.labels[static_cast<std::size_t>(i)] = hot;
        } else {
            for (Index j = 0; j < dim; ++j) values.rows(i, j) = random.normal();
            values.rows.row(i).normalize();
            values.labels[static_cast<std::size_t>(i)] = offset + i;
        }
    }
    return values;
}

namespace {

/// Channels of a per-token channel gate, as the layer binds it (0 for a head gate).
Index gate_channels(const GateSpec& spec, const LayerDims& dims) {
    if (spec.config.axis == Axis::head) return 0;
    if (spec.channels > 0) return spec.channels;
    return spec.config.axis == Axis::key ? dims.key_features : dims.value;
}

/// Returns the gate value of a token that writes nothing: no decay (g = 0) and no write strength.
/// A positive-only gate (a ridge or a scale) keeps its probe value.
/// NOTE: a read token also writes the zero pair (k = 0, v = 0). That write changes nothing in a
/// matrix memory with the identity feature map. Two cases differ: a kv cache that reads after its
/// own write puts the zero pair into its softmax with score 0 (reading before the write avoids it),
/// and a delta-type rule with a fixed rate and a feature map with phi(0) != 0 moves W by W phi(0).
double neutral_value(const GateSpec& spec, double probe_value) {
    return spec.range == Range::positive ? probe_value : 0.0;
}

/// B sequences of T tokens for H heads, with the trials laid out (b, h).
struct Batch {
    Index B = 0, T = 0, H = 0, K = 0, V = 0, steps = 1;
    Tensor<double> q, k, v;
    std::vector<bool> neutral;  // per token, shared by every sequence
};

Batch make_batch(const LayerDims& dims, Index sequences, Index tokens) {
    Batch batch;
    batch.B = sequences;
    batch.T = tokens;
    batch.H = dims.heads;
    batch.K = dims.key;
    batch.V = dims.value;
    batch.steps = dims.steps_per_token;
    batch.q = Tensor<double>({sequences, tokens, dims.heads, dims.key});
    batch.k = Tensor<double>({sequences, tokens * batch.steps, dims.heads, dims.key});
    batch.v = Tensor<double>({sequences, tokens * batch.steps, dims.heads, dims.value});
    batch.neutral.assign(static_cast<std::size_t>(tokens), false);
    return batch;
}

/// Writes the pair (key, value) for token t of sequence b, head h (repeated for each step of a
/// layer that writes several pairs per token).
void set_pair(Batch& batch, Index b, Index t, Index h, const double* key, const double* value) {
    for (Index i = 0; i < batch.steps; ++i) {
        const Index step = t * batch.steps + i;
        double* k = batch.k.data() + ((b * batch.T * batch.steps + step) * batch.H + h) * batch.K;
        double* v = batch.v.data() + ((b * batch.T * batch.steps + step) * batch.H + h) * batch.V;
        std::copy(key, key + batch.K, k);
        std::copy(value, value + batch.V, v);
    }
}

void set_query(Batch& batch, Index b, Index t, Index h, const double* query) {
    std::copy(query, query + batch.K, batch.q.data() + ((b * batch.T + t) * batch.H + h) * batch.K);
}

/// Runs the batch from `state`; per-token gates are the probe values, or neutral on neutral tokens.
Tensor<double> forward(const ProbedLayer& probed, const Batch& batch, AnyState& state) {
    const AnyLayer& layer = *probed.layer;
    std::map<std::string, Tensor<double>> gate_tensors;
    for (const GateSpec& spec : layer.gates()) {
        if (!spec.config.per_token) continue;
        auto found = probed.gates.find(spec.name);
        if (found == probed.gates.end()) {
            throw ConfigError("layer '" + probed.name + "' reads the per-token gate '" + spec.name +
                              "', which has no probe value; give it a constant in the probe gates");
        }
        const Index steps = spec.per_step ? batch.steps : 1;
        const Index C = gate_channels(spec, layer.dims());
        Shape shape{batch.B, batch.T * steps, batch.H};
        if (C > 0) shape.push_back(C);
        Tensor<double> tensor(shape, found->second);
        const Index per_token = steps * batch.H * std::max<Index>(C, 1);
        const double neutral = neutral_value(spec, found->second);
        for (Index b = 0; b < batch.B; ++b) {
            for (Index t = 0; t < batch.T; ++t) {
                if (!batch.neutral[static_cast<std::size_t>(t)]) continue;
                double* first = tensor.data() + (b * batch.T + t) * per_token;
                std::fill(first, first + per_token, neutral);
            }
        }
        gate_tensors.emplace(spec.name, std::move(tensor));
    }
    Inputs<double> inputs{batch.q.view(), batch.k.view(), batch.v.view(), {}};
    for (const auto& [name, tensor] : gate_tensors) inputs.gates.emplace(name, tensor.view());
    return layer.forward(inputs, state);
}

void check_trials(const ProbedLayer& probed, const std::vector<Trial>& trials) {
    const LayerDims& dims = probed.layer->dims();
    if (trials.empty() || static_cast<Index>(trials.size()) % dims.heads != 0) {
        throw InputError("probe of '" + probed.name + "' has " + std::to_string(trials.size()) +
                         " trials; valid is a positive multiple of the head count " + std::to_string(dims.heads));
    }
    for (const Trial& trial : trials) {
        if (trial.write_keys.rows() != trials[0].write_keys.rows() || trial.queries.rows() != trials[0].queries.rows() ||
            trial.write_keys.cols() != dims.key || trial.write_values.cols() != dims.value ||
            trial.queries.cols() != dims.key || trial.write_values.rows() != trial.write_keys.rows()) {
            throw InputError("probe trials of '" + probed.name + "' differ in length or do not match the layer's K = " +
                             std::to_string(dims.key) + " and V = " + std::to_string(dims.value));
        }
    }
}

}  // namespace

Index sequences_for(Index reads_per_trial, Index heads, Index min_queries) {
    const Index per_sequence = std::max<Index>(1, reads_per_trial * heads);
    return std::max<Index>(1, (min_queries + per_sequence - 1) / per_sequence);
}

std::vector<Mat<double>> write_then_query(const ProbedLayer& probed, const std::vector<Trial>& trials) {
    check_trials(probed, trials);
    const AnyLayer& layer = *probed.layer;
    const LayerDims& dims = layer.dims();
    const Index H = dims.heads, B = static_cast<Index>(trials.size()) / H;
    const Index T = trials[0].write_keys.rows(), Q = trials[0].queries.rows();

    Batch writes = make_batch(dims, B, T);
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            const Trial& trial = trials[static_cast<std::size_t>(b * H + h)];
            for (Index t = 0; t < T; ++t) set_pair(writes, b, t, h, &trial.write_keys(t, 0), &trial.write_values(t, 0));
        }
    }
    std::unique_ptr<AnyState> state = layer.initial_state(B, true);
    if (T > 0) forward(probed, writes, *state);
    const NamedTensors<double> snapshot = layer.save_state(*state);

    // Each read runs as one token from its own copy of its sequence's state. The copies are made
    // in chunks of at most 256 reads and about 2^24 state values (128 MiB), whichever is smaller.
    std::vector<Mat<double>> outputs(trials.size(), Mat<double>::Zero(Q, dims.value));
    const Index total = B * Q;
    Index per_copy = 1;
    for (const auto& [name, tensor] : snapshot) per_copy += tensor.size() / B;
    const Index chunk = std::clamp<Index>((Index{1} << 24) / per_copy, 1, 256);
    const std::vector<double> zero_key(static_cast<std::size_t>(dims.key), 0.0), zero_value(static_cast<std::size_t>(dims.value), 0.0);
    for (Index first = 0; first < total; first += chunk) {
        const Index count = std::min(chunk, total - first);
        NamedTensors<double> copies;
        for (const auto& [name, tensor] : snapshot) {
            const Index per_sequence = tensor.size() / B;
            Tensor<double> tiled({count, tensor.dim(1), tensor.dim(2), tensor.dim(3)});
            for (Index i = 0; i < count; ++i) {
                const Index b = (first + i) / Q;
                std::copy(tensor.data() + b * per_sequence, tensor.data() + (b + 1) * per_sequence,
                          tiled.data() + i * per_sequence);
            }
            copies.emplace(name, std::move(tiled));
        }
        std::unique_ptr<AnyState> reads_state = copies.empty() ? layer.initial_state(count, true) : layer.load_state(copies, true);

        Batch reads = make_batch(dims, count, 1);
        reads.neutral[0] = true;
        for (Index i = 0; i < count; ++i) {
            const Index b = (first + i) / Q, j = (first + i) % Q;
            for (Index h = 0; h < H; ++h) {
                set_query(reads, i, 0, h, &trials[static_cast<std::size_t>(b * H + h)].queries(j, 0));
                set_pair(reads, i, 0, h, zero_key.data(), zero_value.data());
            }
        }
        const Tensor<double> y = forward(probed, reads, *reads_state);
        for (Index i = 0; i < count; ++i) {
            const Index b = (first + i) / Q, j = (first + i) % Q;
            for (Index h = 0; h < H; ++h) {
                Mat<double>& out = outputs[static_cast<std::size_t>(b * H + h)];
                for (Index c = 0; c < dims.value; ++c) out(j, c) = y[(i * H + h) * dims.value + c];
            }
        }
    }
    return outputs;
}

std::vector<Mat<double>> read_in_stream(const ProbedLayer& probed, const std::vector<Trial>& trials,
                                        const std::vector<bool>& reads) {
    check_trials(probed, trials);
    const AnyLayer& layer = *probed.layer;
    const LayerDims& dims = layer.dims();
    const Index H = dims.heads, B = static_cast<Index>(trials.size()) / H, T = trials[0].write_keys.rows();
    if (static_cast<Index>(reads.size()) != T || trials[0].queries.rows() != T) {
        throw InputError("stream probe of '" + probed.name + "' flags " + std::to_string(reads.size()) +
                         " tokens for " + std::to_string(T) + " written; valid is one flag and one query per token");
    }
    Batch batch = make_batch(dims, B, T);
    batch.neutral = reads;
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            const Trial& trial = trials[static_cast<std::size_t>(b * H + h)];
            for (Index t = 0; t < T; ++t) {
                set_pair(batch, b, t, h, &trial.write_keys(t, 0), &trial.write_values(t, 0));
                set_query(batch, b, t, h, &trial.queries(t, 0));
            }
        }
    }
    std::unique_ptr<AnyState> state = layer.initial_state(B, true);
    const Tensor<double> y = forward(probed, batch, *state);

    const Index read_count = static_cast<Index>(std::count(reads.begin(), reads.end(), true));
    std::vector<Mat<double>> outputs(trials.size(), Mat<double>::Zero(read_count, dims.value));
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            Index row = 0;
            for (Index t = 0; t < T; ++t) {
                if (!reads[static_cast<std::size_t>(t)]) continue;
                for (Index c = 0; c < dims.value; ++c) {
                    outputs[static_cast<std::size_t>(b * H + h)](row, c) = y[((b * T + t) * H + h) * dims.value + c];
                }
                ++row;
            }
        }
    }
    return outputs;
}

void Tally::add(const Eigen::Ref<const Vec<double>>& y, const Eigen::Ref<const Vec<double>>& target,
                const Mat<double>& candidates, Index label) {
    const double norm = y.norm();
    Index best = -1;
    double best_cosine = -2.0;
    if (norm > 0.0) {
        for (Index i = 0; i < candidates.rows(); ++i) {
            const double c = candidates.row(i).dot(y) / (candidates.row(i).norm() * norm);
            if (c > best_cosine) {
                best_cosine = c;
                best = i;
            }
        }
    }
    // A zero read matches no candidate.
    correct_ += (best == label) ? 1.0 : 0.0;
    cosine_ += norm > 0.0 ? y.dot(target) / (norm * target.norm()) : 0.0;
    squared_ += (y - target).squaredNorm() / static_cast<double>(y.size());
    read_read_ += y.squaredNorm();
    read_target_ += y.dot(target);
    target_target_ += target.squaredNorm();
    channels_ = y.size();
    ++count_;
}

ProbePoint Tally::point(double x) const {
    const double n = static_cast<double>(std::max<Index>(count_, 1));
    // min_c sum |c y - v|^2 = sum <v, v> - (sum <y, v>)^2 / sum <y, y>, at c = sum <y, v> / sum <y, y>.
    const double gain = read_read_ > 0.0 ? read_target_ / read_read_ : 0.0;
    const double residual = std::max(0.0, target_target_ - gain * read_target_);
    const double per_channel = n * static_cast<double>(std::max<Index>(channels_, 1));
    return {x, count_, correct_ / n, cosine_ / n, squared_ / n, residual / per_channel, gain};
}

}  // namespace miras::tasks::detail
