// Non-parametric memory: the cache of all (or the last `window`) key-value pairs. Read by the
// Nadaraya-Watson estimator of the l2 regression, which is softmax attention (TTT Theorem 2;
// Atlas Eqs. 17-18): y = sum_i s_i v_i / sum_j s_j with s_i = exp(q . phi(k_i) + G_i), where G_i
// sums the log-decays of the tokens written after pair i (zero without retention).
#pragma once

#include <algorithm>
#include <limits>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct KVCacheMemory {
    static constexpr const char* name = "kv_cache";
    static constexpr bool parametric = false;

    FeatureMap features;
    /// Keep only the last `window` pairs (sliding-window attention); 0 keeps every pair.
    Index window = 0;

    /// The cached pairs in order of writing, oldest first. With a window the rows form a ring
    /// buffer whose oldest entry sits at `start`.
    template <class S>
    struct Params {
        Mat<S> keys;     // [capacity, D]
        Mat<S> values;   // [capacity, V]
        Vec<S> log_weight;  // [capacity], G_i
        Index count = 0;
        Index start = 0;
    };

    Index feature_dim(Index key_dim) const { return features.output_dim(key_dim); }
    /// Values per head per cached pair; the cache holds T pairs (or `window`).
    Index state_size(const LayerDims& dims) const { return dims.key_features + dims.value + 1; }

    void validate(const LayerDims&) const {
        features.validate();
        if (window < 0) throw ConfigError("kv_cache window " + std::to_string(window) + " is invalid; valid is 0 (no window) or a positive count");
    }

    template <class S>
    Params<S> zero_params(const LayerDims& dims) const {
        Params<S> p;
        const Index capacity = window > 0 ? window : 16;
        p.keys = Mat<S>::Zero(capacity, dims.key_features);
        p.values = Mat<S>::Zero(capacity, dims.value);
        p.log_weight = Vec<S>::Zero(capacity);
        return p;
    }

    template <class S>
    void map(const S* x, Index key_dim, Vec<S>& out) const {
        features.apply(x, key_dim, out);
    }

    /// Adds log-decay g to every cached pair, so older pairs weigh less at later reads.
    template <class S>
    void decay(Params<S>& p, const GateValues<S>& g, Axis) const {
        for (Index i = 0; i < p.count; ++i) p.log_weight[slot(p, i)] += g[0];
    }

    template <class S>
    void append(Params<S>& p, const Vec<S>& key, const S* value) const {
        const Index V = p.values.cols();
        if (window > 0 && p.count == window) {
            const Index oldest = p.start;
            p.keys.row(oldest) = key.transpose();
            for (Index c = 0; c < V; ++c) p.values(oldest, c) = value[c];
            p.log_weight[oldest] = S(0);
            p.start = (p.start + 1) % window;
            return;
        }
        if (window == 0 && p.count == p.keys.rows()) grow(p, std::max<Index>(16, 2 * p.count));
        const Index row = slot(p, p.count);
        p.keys.row(row) = key.transpose();
        for (Index c = 0; c < V; ++c) p.values(row, c) = value[c];
        p.log_weight[row] = S(0);
        ++p.count;
    }

    /// y = softmax-weighted mean of the cached values for the scaled query features x.
    template <class S>
    void read(const Params<S>& p, const Vec<S>& x, Vec<S>& y) const {
        y.setZero(p.values.cols());
        if (p.count == 0) return;
        Vec<S> scores(p.count);
        S top = S(-std::numeric_limits<double>::infinity());
        for (Index i = 0; i < p.count; ++i) {
            const Index row = slot(p, i);
            scores[i] = p.keys.row(row).dot(x.transpose()) + p.log_weight[row];
            if (scores[i] > top) top = scores[i];
        }
        S total = S(0);
        for (Index i = 0; i < p.count; ++i) {
            const S weight = math::exp(scores[i] - top);
            total += weight;
            y.noalias() += weight * p.values.row(slot(p, i)).transpose();
        }
        y /= total;
    }

    template <class S>
    void save(const Params<S>& p, NamedMatrices<S>& out) const {
        Mat<S> keys(p.count, p.keys.cols()), values(p.count, p.values.cols()), weights(p.count, 1);
        for (Index i = 0; i < p.count; ++i) {
            keys.row(i) = p.keys.row(slot(p, i));
            values.row(i) = p.values.row(slot(p, i));
            weights(i, 0) = p.log_weight[slot(p, i)];
        }
        out["keys"] = keys;
        out["values"] = values;
        out["log_weights"] = weights;
    }

    template <class S>
    void load(Params<S>& p, const NamedMatrices<S>& in, const LayerDims& dims) const {
        const Mat<S>& keys = require_matrix(in, "keys", -1, dims.key_features);
        const Index n = keys.rows();
        const Mat<S>& values = require_matrix(in, "values", n, dims.value);
        const Mat<S>& weights = require_matrix(in, "log_weights", n, 1);
        if (window > 0 && n > window) {
            throw InputError("state contains " + std::to_string(n) + " cached pairs, more than the window of " +
                             std::to_string(window) + "; valid is at most the window");
        }
        p = zero_params<S>(dims);
        if (window == 0) grow(p, std::max<Index>(16, n));
        p.keys.topRows(n) = keys;
        p.values.topRows(n) = values;
        p.log_weight.head(n) = weights.col(0);
        p.count = n;
        p.start = 0;
    }

private:
    template <class S>
    Index slot(const Params<S>& p, Index i) const {
        return window > 0 ? (p.start + i) % window : i;
    }

    template <class S>
    static void grow(Params<S>& p, Index capacity) {
        p.keys.conservativeResize(capacity, Eigen::NoChange);
        p.values.conservativeResize(capacity, Eigen::NoChange);
        p.log_weight.conservativeResize(capacity);
    }
};

}  // namespace miras
