// Matrix memory: W in R^{V x D}, read as y = W phi(x), with phi a feature map on keys and queries
// (D = K for the identity map). The memory of linear attention, the delta rule and their gated
// relatives; its gradient for an output gradient dy is dy phi(k)^T.
#pragma once

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct MatrixMemory {
    static constexpr const char* name = "matrix";
    static constexpr bool parametric = true;

    FeatureMap features;

    template <class S> using Params = Mat<S>;

    Index feature_dim(Index key_dim) const { return features.output_dim(key_dim); }
    void validate(const LayerDims&) const { features.validate(); }
    Index state_size(const LayerDims& dims) const { return dims.value * dims.key_features; }

    template <class S>
    Params<S> zero_params(const LayerDims& dims) const {
        return Mat<S>::Zero(dims.value, dims.key_features);
    }

    template <class S>
    void map(const S* x, Index key_dim, Vec<S>& out) const {
        features.apply(x, key_dim, out);
    }

    /// y = W x for features x.
    template <class S>
    void predict(const Params<S>& W, const Vec<S>& x, Vec<S>& y) const {
        y.noalias() = W * x;
    }

    /// target += coef * dy x^T, the gradient of <dy, W x> with respect to W, scaled.
    template <class S>
    void add_gradient(Params<S>& target, const S& coef, const Vec<S>& dy, const Vec<S>& x) const {
        target.noalias() += (coef * dy) * x.transpose();
    }

    /// dx = W^T dy, the gradient of <dy, W x> with respect to the features x.
    template <class S>
    void input_vjp(const Params<S>& W, const Vec<S>& dy, Vec<S>& dx) const {
        dx.noalias() = W.transpose() * dy;
    }

    /// Multiplies W by exp(g): the whole matrix (head), its columns (key) or its rows (value).
    template <class S>
    void decay(Params<S>& W, const GateValues<S>& g, Axis axis) const {
        if (g.scalar()) {
            W *= math::exp(g[0]);
        } else if (axis == Axis::key) {
            Vec<S> factor(W.cols());
            for (Index j = 0; j < W.cols(); ++j) factor[j] = math::exp(g[j]);
            W.array().rowwise() *= factor.transpose().array();
        } else {
            for (Index i = 0; i < W.rows(); ++i) W.row(i) *= math::exp(g[i]);
        }
    }

    /// Computes the vector-Jacobian product of decay. With D = decay(W, g) and dD = dl/dD, it sets
    /// dW = exp(g) * dD and dg_j = exp(g_j) times the sum of W * dD over the entries that g_j scales
    /// (one entry of dg for a scalar gate, else one per key or value channel).
    template <class S>
    void decay_vjp(const Params<S>& W, const GateValues<S>& g, Axis axis, const Params<S>& dD, Params<S>& dW,
                   Vec<S>& dg) const {
        dW = dD;
        decay(dW, g, axis);
        const Params<S> product = W.cwiseProduct(dD);
        if (g.scalar()) {
            dg.resize(1);
            dg[0] = math::exp(g[0]) * product.sum();
        } else if (axis == Axis::key) {
            dg.resize(W.cols());
            for (Index j = 0; j < W.cols(); ++j) dg[j] = math::exp(g[j]) * product.col(j).sum();
        } else {
            dg.resize(W.rows());
            for (Index i = 0; i < W.rows(); ++i) dg[i] = math::exp(g[i]) * product.row(i).sum();
        }
    }

    template <class S>
    void save(const Params<S>& W, NamedMatrices<S>& out) const {
        out["W"] = W;
    }

    template <class S>
    void load(Params<S>& W, const NamedMatrices<S>& in, const LayerDims& dims) const {
        W = require_matrix(in, "W", dims.value, dims.key_features);
    }
};

}  // namespace miras
