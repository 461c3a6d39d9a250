// The sliding window of the Omega rule (Atlas Eq. 9): the last c - 1 written pairs (raw key, value,
// key features) with the weight gamma_i each was written with, so that the gradient of token t can
// sum over tokens t - c + 1..t, across calls too. Saved as window.k, .v, .x and .gamma ([n, size]).
#pragma once

#include <string>
#include <vector>

#include "miras/core/error.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

template <class S>
struct OmegaWindow {
    std::vector<Vec<S>> keys, values, features;
    std::vector<S> weights;

    std::size_t size() const { return keys.size(); }

    /// Appends the context's pair and drops the oldest one beyond `capacity` pairs.
    template <class Ctx>
    void push(const Ctx& ctx, const S& gamma, Index capacity) {
        keys.push_back(Eigen::Map<const Vec<S>>(ctx.k, ctx.dims.key));
        values.push_back(Eigen::Map<const Vec<S>>(ctx.v, ctx.dims.value));
        features.push_back(ctx.x);
        weights.push_back(gamma);
        if (static_cast<Index>(keys.size()) > capacity) {
            keys.erase(keys.begin());
            values.erase(values.begin());
            features.erase(features.begin());
            weights.erase(weights.begin());
        }
    }

    void save(NamedMatrices<S>& out) const {
        out["window.k"] = stack(keys);
        out["window.v"] = stack(values);
        out["window.x"] = stack(features);
        Mat<S> gamma(static_cast<Index>(weights.size()), 1);
        for (std::size_t i = 0; i < weights.size(); ++i) gamma(static_cast<Index>(i), 0) = weights[i];
        out["window.gamma"] = gamma;
    }

    /// Loads at most `capacity` pairs; an empty window may be saved with any column count.
    void load(const NamedMatrices<S>& in, const LayerDims& dims, Index capacity) {
        const Mat<S>& gamma = require_matrix(in, "window.gamma", -1, 1);
        const Index n = gamma.rows();
        *this = {};
        if (n == 0) return;
        if (n > capacity) {
            throw InputError("state window has " + std::to_string(n) + " pairs; valid is at most " + std::to_string(capacity));
        }
        keys = unstack(require_matrix(in, "window.k", n, dims.key));
        values = unstack(require_matrix(in, "window.v", n, dims.value));
        features = unstack(require_matrix(in, "window.x", n, dims.key_features));
        weights.assign(gamma.data(), gamma.data() + n);
    }

private:
    static Mat<S> stack(const std::vector<Vec<S>>& rows) {
        Mat<S> out(static_cast<Index>(rows.size()), rows.empty() ? 0 : rows[0].size());
        for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Index>(i)) = rows[i].transpose();
        return out;
    }

    static std::vector<Vec<S>> unstack(const Mat<S>& m) {
        std::vector<Vec<S>> rows;
        for (Index i = 0; i < m.rows(); ++i) rows.push_back(m.row(i).transpose());
        return rows;
    }
};

}  // namespace miras
