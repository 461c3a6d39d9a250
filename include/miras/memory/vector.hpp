// Vector memory: w in R^V, read elementwise as y = w * phi(x) (HGRN-style; needs D = V). Its
// gradient for an output gradient dy is dy * phi(k).
#pragma once

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct VectorMemory {
    static constexpr const char* name = "vector";
    static constexpr bool parametric = true;

    FeatureMap features;

    /// One row of V entries, so that every memory keeps its parameters in matrices.
    template <class S> using Params = Mat<S>;

    Index feature_dim(Index key_dim) const { return features.output_dim(key_dim); }
    Index state_size(const LayerDims& dims) const { return dims.value; }

    void validate(const LayerDims& dims) const {
        features.validate();
        if (dims.key_features != dims.value) {
            throw ConfigError("vector memory needs the key feature dimension (" + std::to_string(dims.key_features) +
                              ") to equal the value dimension (" + std::to_string(dims.value) + ")");
        }
    }

    template <class S>
    Params<S> zero_params(const LayerDims& dims) const {
        return Mat<S>::Zero(1, dims.value);
    }

    template <class S>
    void map(const S* x, Index key_dim, Vec<S>& out) const {
        features.apply(x, key_dim, out);
    }

    template <class S>
    void predict(const Params<S>& w, const Vec<S>& x, Vec<S>& y) const {
        y = w.row(0).transpose().cwiseProduct(x);
    }

    template <class S>
    void add_gradient(Params<S>& target, const S& coef, const Vec<S>& dy, const Vec<S>& x) const {
        target.row(0) += (coef * dy.cwiseProduct(x)).transpose();
    }

    template <class S>
    void input_vjp(const Params<S>& w, const Vec<S>& dy, Vec<S>& dx) const {
        dx = w.row(0).transpose().cwiseProduct(dy);
    }

    /// Multiplies w by exp(g); key and value channels are the same channels here.
    template <class S>
    void decay(Params<S>& w, const GateValues<S>& g, Axis) const {
        if (g.scalar()) {
            w *= math::exp(g[0]);
        } else {
            for (Index i = 0; i < w.cols(); ++i) w(0, i) *= math::exp(g[i]);
        }
    }

    /// Computes the vector-Jacobian product of decay. With d = decay(w, g) and dd = dl/dd, it sets
    /// dw = exp(g) * dd and dg = dl/dg, one entry for a scalar gate, else dg_i = exp(g_i) w_i dd_i.
    template <class S>
    void decay_vjp(const Params<S>& w, const GateValues<S>& g, Axis axis, const Params<S>& dd, Params<S>& dw,
                   Vec<S>& dg) const {
        dw = dd;
        decay(dw, g, axis);
        if (g.scalar()) {
            dg.resize(1);
            dg[0] = math::exp(g[0]) * w.cwiseProduct(dd).sum();
        } else {
            dg.resize(w.cols());
            for (Index i = 0; i < w.cols(); ++i) dg[i] = math::exp(g[i]) * w(0, i) * dd(0, i);
        }
    }

    template <class S>
    void save(const Params<S>& w, NamedMatrices<S>& out) const {
        out["w"] = w;
    }

    template <class S>
    void load(Params<S>& w, const NamedMatrices<S>& in, const LayerDims& dims) const {
        w = require_matrix(in, "w", 1, dims.value);
    }
};

}  // namespace miras
