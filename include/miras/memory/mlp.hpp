// MLP memory: y = [x +] N(r(x)) with the branch r(x) = W_L s(... s(W_1 x + b_1) ...) + b_L (depth L),
// or the gated branch r(x) = W1 (s(W2 x) * W3 x) of Atlas++, and N an optional LayerNorm. The memory
// of TTT-Linear (L = 1, bias, LN), TTT-MLP (L = 2, gelu_tanh), Titans, Moneta, Yaad, Memora and Atlas
// (Miras Sec. 4.3; Atlas Eqs. 42-43; official TTT code). Its gradient J^T dy is backpropagation.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/activation.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/layer_norm.hpp"
#include "miras/memory/mlp_params.hpp"
#include "miras/memory/seeded_normal.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

enum class MlpNorm { none, plain, affine };

/// Initial weights: all zero, or weight entries std * N(0, 1) from SeededNormal. The generator of
/// head h and weight matrix m is seeded with seed + 1000003 h + 7919 m. Biases start at zero.
struct MlpInit {
    bool zero = false;
    double std = 0.02;  // the official TTT initialisation
    std::uint64_t seed = 0;
};

struct MlpMemory {
    static constexpr const char* name = "mlp";
    static constexpr bool parametric = true;
    static constexpr bool deep = true;

    FeatureMap features;
    Index depth = 2;          // weight matrices on the branch (the gated form has three)
    double expansion = 4.0;   // hidden width = round(expansion * D)
    Activation activation = Activation::gelu;
    bool residual = true;     // y = x + N(r)
    bool biases = false;
    bool gated = false;       // Atlas++: r = W1 (s(W2 x) * W3 x)
    MlpNorm norm = MlpNorm::none;
    std::vector<double> norm_weight{1.0}, norm_bias{0.0};  // 1, V or H * V values
    double norm_eps = 1e-6;
    /// The read returns r + N(r) instead of the trained [x +] N(r) (flash-linear-attention TTT).
    bool read_adds_branch = false;
    MlpInit init;

    template <class S> using Params = MlpParams<S>;

    Index feature_dim(Index key_dim) const { return features.output_dim(key_dim); }
    Index hidden_dim(const LayerDims& dims) const {
        return std::max<Index>(1, static_cast<Index>(std::lround(expansion * static_cast<double>(dims.key_features))));
    }

    /// Shapes [rows, cols] of the weight matrices, in the order W1, W2, ...
    std::vector<std::pair<Index, Index>> shapes(const LayerDims& dims) const {
        const Index D = dims.key_features, V = dims.value, hidden = hidden_dim(dims);
        if (gated) return {{V, hidden}, {hidden, D}, {hidden, D}};
        std::vector<std::pair<Index, Index>> out;
        for (Index l = 0; l < depth; ++l) out.push_back({l + 1 == depth ? V : hidden, l == 0 ? D : hidden});
        return out;
    }

    void validate(const LayerDims& dims) const {
        features.validate();
        if (depth < 1) throw ConfigError("mlp memory depth " + std::to_string(depth) + " is invalid; valid is 1 or more");
        if (!(expansion > 0.0) || !std::isfinite(expansion)) {
            throw ConfigError("mlp memory expansion " + std::to_string(expansion) + " is invalid; valid is a finite value > 0");
        }
        if (gated && biases) throw ConfigError("the gated mlp memory has no biases; set biases to false");
        if ((residual || read_adds_branch) && dims.key_features != dims.value) {
            throw ConfigError("mlp memory with a residual needs the key feature dimension (" +
                              std::to_string(dims.key_features) + ") to equal the value dimension (" +
                              std::to_string(dims.value) + ")");
        }
        if (read_adds_branch && norm == MlpNorm::none) throw ConfigError("read_adds_branch needs a LayerNorm on the branch");
        if (!(norm_eps > 0.0)) throw ConfigError("mlp memory norm_eps " + std::to_string(norm_eps) + " is invalid; valid is > 0");
        for (const auto* values : {&norm_weight, &norm_bias}) {
            const auto n = static_cast<Index>(values->size());
            if (n != 1 && n != dims.value && n != dims.heads * dims.value) {
                throw ConfigError("mlp memory LayerNorm parameters have " + std::to_string(n) + " values; valid are 1, V = " +
                                  std::to_string(dims.value) + " or H * V = " + std::to_string(dims.heads * dims.value));
            }
        }
    }

    Index state_size(const LayerDims& dims) const {
        Index total = 0;
        for (auto [rows, cols] : shapes(dims)) total += rows * cols + (biases ? rows : 0);
        return total;
    }

    /// The parameters of head h: seeded (or zero) weights, zero biases, the head's LayerNorm parameters.
    template <class S>
    Params<S> init_params(const LayerDims& dims, Index h) const {
        Params<S> p;
        Index m = 0;
        for (auto [rows, cols] : shapes(dims)) {
            Mat<S> w = Mat<S>::Zero(rows, cols);
            if (!init.zero) {
                SeededNormal rng(init.seed + 1000003ull * static_cast<std::uint64_t>(h) + 7919ull * static_cast<std::uint64_t>(m));
                for (Index i = 0; i < rows; ++i) {
                    for (Index j = 0; j < cols; ++j) w(i, j) = S(init.std * rng.normal());
                }
            }
            p.weights.push_back(std::move(w));
            if (biases) p.biases.push_back(Vec<S>::Zero(rows));
            ++m;
        }
        if (norm == MlpNorm::affine) {
            p.norm_weight = head_values<S>(norm_weight, dims, h);
            p.norm_bias = head_values<S>(norm_bias, dims, h);
        }
        return p;
    }

    /// All trained parameters zero (LayerNorm parameters of head 0).
    template <class S>
    Params<S> zero_params(const LayerDims& dims) const {
        Params<S> p = init_params<S>(dims, 0);
        params_set_zero(p);
        return p;
    }

    template <class S>
    void map(const S* x, Index key_dim, Vec<S>& out) const {
        features.apply(x, key_dim, out);
    }

    /// Intermediate values of one forward pass.
    template <class S>
    struct Cache {
        std::vector<Vec<S>> h, z;  // layer inputs and pre-activations (gated: z = {W2 x, W3 x})
        Vec<S> r, n;
        LayerNormCache<S> ln;
    };

    template <class S>
    void forward(const Params<S>& W, const Vec<S>& x, Cache<S>& c) const {
        const auto L = static_cast<Index>(W.weights.size());
        if (gated) {
            c.z = {W.weights[1] * x, W.weights[2] * x};
            c.h = {x, Vec<S>(c.z[0].size())};
            for (Index i = 0; i < c.z[0].size(); ++i) c.h[1][i] = activate(activation, c.z[0][i]) * c.z[1][i];
            c.r = W.weights[0] * c.h[1];
        } else {
            c.h.resize(static_cast<std::size_t>(L + 1));
            c.z.resize(static_cast<std::size_t>(L));
            c.h[0] = x;
            for (Index l = 0; l < L; ++l) {
                auto& z = c.z[static_cast<std::size_t>(l)];
                z.noalias() = W.weights[static_cast<std::size_t>(l)] * c.h[static_cast<std::size_t>(l)];
                if (biases) z += W.biases[static_cast<std::size_t>(l)];
                auto& out = c.h[static_cast<std::size_t>(l + 1)];
                out = z;
                if (l + 1 < L) {
                    for (Index i = 0; i < z.size(); ++i) out[i] = activate(activation, z[i]);
                }
            }
            c.r = c.h.back();
        }
        if (norm == MlpNorm::none) c.n = c.r;
        else layer_norm(c.r, W.norm_weight, W.norm_bias, S(norm_eps), c.ln, c.n);
    }

    /// The trained map y = [x +] N(r(x)).
    template <class S>
    void predict(const Params<S>& W, const Vec<S>& x, Vec<S>& y) const {
        Cache<S> c;
        forward(W, x, c);
        y = residual ? Vec<S>(x + c.n) : c.n;
    }

    /// The read: predict, or r + N(r) with read_adds_branch.
    template <class S>
    void retrieve(const Params<S>& W, const Vec<S>& x, Vec<S>& y) const {
        if (!read_adds_branch) return predict(W, x, y);
        Cache<S> c;
        forward(W, x, c);
        y = c.r + c.n;
    }

    /// target += coef * J^T dy, the gradient of <dy, M(W; x)> with respect to W, taken at `at`.
    template <class S>
    void add_gradient(const Params<S>& at, Params<S>& target, const S& coef, const Vec<S>& dy, const Vec<S>& x) const {
        Cache<S> c;
        forward(at, x, c);
        Vec<S> dh = branch_gradient(at, dy, c);
        backprop(at, target, coef, c, dh);
    }

    /// dx = J_x^T dy, the gradient of <dy, M(W; x)> with respect to the features x.
    template <class S>
    void input_vjp(const Params<S>& W, const Vec<S>& x, const Vec<S>& dy, Vec<S>& dx) const {
        Cache<S> c;
        forward(W, x, c);
        Vec<S> dh = branch_gradient(W, dy, c);
        Params<S> sink = W;
        dx = backprop(W, sink, S(0), c, dh);
        if (residual) dx += dy;
    }

    /// Multiplies the trained parameters by exp(g): all of them (head), the columns of the first
    /// layers (key) or the rows of the output layer and its bias (value).
    template <class S>
    void decay(Params<S>& W, const GateValues<S>& g, Axis axis) const {
        if (g.scalar()) return params_scale(W, math::exp(g[0]));
        if (axis == Axis::key) {
            for (std::size_t m = gated ? 1 : 0; m < (gated ? 3u : 1u); ++m) {
                for (Index j = 0; j < W.weights[m].cols(); ++j) W.weights[m].col(j) *= math::exp(g[j]);
            }
            return;
        }
        const std::size_t last = gated ? 0 : W.weights.size() - 1;
        for (Index i = 0; i < W.weights[last].rows(); ++i) {
            W.weights[last].row(i) *= math::exp(g[i]);
            if (biases) W.biases[last][i] *= math::exp(g[i]);
        }
    }

    /// Saves W1, W2, ... ([rows, cols]) and b1, b2, ... ([rows, 1]).
    template <class S>
    void save(const Params<S>& W, NamedMatrices<S>& out) const {
        for (std::size_t m = 0; m < W.weights.size(); ++m) out["W" + std::to_string(m + 1)] = W.weights[m];
        for (std::size_t m = 0; m < W.biases.size(); ++m) out["b" + std::to_string(m + 1)] = W.biases[m];
    }

    template <class S>
    void load(Params<S>& W, const NamedMatrices<S>& in, const LayerDims& dims) const {
        const auto sizes = shapes(dims);
        for (std::size_t m = 0; m < sizes.size(); ++m) {
            W.weights[m] = require_matrix(in, "W" + std::to_string(m + 1), sizes[m].first, sizes[m].second);
            if (biases) W.biases[m] = require_matrix(in, "b" + std::to_string(m + 1), sizes[m].first, 1).col(0);
        }
    }

private:
    template <class S>
    static Vec<S> head_values(const std::vector<double>& values, const LayerDims& dims, Index h) {
        Vec<S> out(dims.value);
        const auto n = static_cast<Index>(values.size());
        for (Index i = 0; i < dims.value; ++i) {
            out[i] = S(n == 1 ? values[0] : n == dims.value ? values[static_cast<std::size_t>(i)]
                                                             : values[static_cast<std::size_t>(h * dims.value + i)]);
        }
        return out;
    }

    /// The gradient at the branch output r for an output gradient dy of the trained map.
    template <class S>
    Vec<S> branch_gradient(const Params<S>& W, const Vec<S>& dy, const Cache<S>& c) const {
        if (norm == MlpNorm::none) return dy;
        Vec<S> dr;
        layer_norm_vjp(dy, W.norm_weight, c.ln, dr);
        return dr;
    }

    /// Adds coef times the parameter gradient for the branch gradient dr; returns the input gradient.
    template <class S>
    Vec<S> backprop(const Params<S>& W, Params<S>& target, const S& coef, const Cache<S>& c, Vec<S> dh) const {
        if (gated) {
            target.weights[0].noalias() += (coef * dh) * c.h[1].transpose();
            Vec<S> da = W.weights[0].transpose() * dh;
            Vec<S> dgate(da.size()), dup(da.size());
            for (Index i = 0; i < da.size(); ++i) {
                dgate[i] = da[i] * c.z[1][i] * activate_derivative(activation, c.z[0][i]);
                dup[i] = da[i] * activate(activation, c.z[0][i]);
            }
            target.weights[1].noalias() += (coef * dgate) * c.h[0].transpose();
            target.weights[2].noalias() += (coef * dup) * c.h[0].transpose();
            return W.weights[1].transpose() * dgate + W.weights[2].transpose() * dup;
        }
        for (auto l = static_cast<Index>(W.weights.size()); l-- > 0;) {
            const auto ul = static_cast<std::size_t>(l);
            if (l + 1 < static_cast<Index>(W.weights.size())) {
                for (Index i = 0; i < dh.size(); ++i) dh[i] *= activate_derivative(activation, c.z[ul][i]);
            }
            target.weights[ul].noalias() += (coef * dh) * c.h[ul].transpose();
            if (biases) target.biases[ul] += coef * dh;
            dh = W.weights[ul].transpose() * dh;
        }
        return dh;
    }
};

}  // namespace miras
