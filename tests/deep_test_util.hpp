// Seeded random sequences and gates for the deep-memory tests.
#pragma once

#include <map>
#include <random>
#include <string>

#include "miras/layer/inputs.hpp"
#include "miras/layer/options.hpp"

namespace miras::testing {

/// Layer options with H heads, key dimension K and value dimension V, the rest at their defaults.
inline LayerOptions dims(Index heads, Index key, Index value) {
    LayerOptions options;
    options.heads = heads;
    options.key_dim = key;
    options.value_dim = value;
    return options;
}

/// q, k, v [B, T, H, D] and per-token gates, owned, with views in `inputs`.
template <class S>
struct Sequence {
    Index B = 1, T = 1, H = 1, K = 1, V = 1;
    Tensor<S> q, k, v;
    std::map<std::string, Tensor<S>> gates;
    Inputs<S> inputs;

    Sequence(Index batch, Index tokens, Index heads, Index key, Index value, unsigned seed, double scale = 1.0)
        : B(batch), T(tokens), H(heads), K(key), V(value), q({B, T, H, K}), k({B, T, H, K}), v({B, T, H, V}) {
        std::mt19937 rng(seed);
        std::normal_distribution<double> normal(0.0, scale);
        for (auto* t : {&q, &k, &v}) {
            for (Index i = 0; i < t->size(); ++i) (*t)[i] = S(normal(rng));
        }
        seed_ = seed;
        bind();
    }

    /// Adds a per-head gate [B, T, H] with values uniform in [lo, hi].
    void add_gate(const std::string& name, double lo, double hi) {
        std::mt19937 rng(seed_ + static_cast<unsigned>(gates.size()) * 7919u + 1u);
        std::uniform_real_distribution<double> uniform(lo, hi);
        Tensor<S> g({B, T, H});
        for (Index i = 0; i < g.size(); ++i) g[i] = S(uniform(rng));
        gates[name] = std::move(g);
        bind();
    }

    /// Returns the tokens [begin, end) as a new sequence with the same gates.
    Sequence slice(Index begin, Index end) const {
        Sequence out(*this);
        out.T = end - begin;
        out.q = cut(q, begin, end);
        out.k = cut(k, begin, end);
        out.v = cut(v, begin, end);
        for (auto& [name, g] : out.gates) g = cut(gates.at(name), begin, end);
        out.bind();
        return out;
    }

    void bind() {
        inputs = Inputs<S>{};
        inputs.q = q.view();
        inputs.k = k.view();
        inputs.v = v.view();
        for (auto& [name, g] : gates) inputs.gates[name] = g.view();
    }

private:
    static Tensor<S> cut(const Tensor<S>& t, Index begin, Index end) {
        Shape shape = t.shape();
        const Index T = shape[1];
        Index inner = 1;
        for (std::size_t a = 2; a < shape.size(); ++a) inner *= shape[a];
        shape[1] = end - begin;
        Tensor<S> out(shape);
        for (Index b = 0; b < shape[0]; ++b) {
            for (Index t2 = begin; t2 < end; ++t2) {
                for (Index i = 0; i < inner; ++i) out[(b * (end - begin) + t2 - begin) * inner + i] = t[(b * T + t2) * inner + i];
            }
        }
        return out;
    }

    unsigned seed_ = 0;
};

/// max |a - b| over two tensors of equal size.
template <class S>
double max_abs_diff(const Tensor<S>& a, const Tensor<S>& b) {
    double m = 0.0;
    for (Index i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i] - b[i])));
    return a.size() == b.size() ? m : INFINITY;
}

}  // namespace miras::testing
