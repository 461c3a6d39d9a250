// LayerNorm over one vector, n = w * (r - mean(r)) / sqrt(var(r) + eps) + b, and its vjp
// dr = (D g - sum(g) - xhat sum(g xhat)) / (D std) with g = dn * w (the fused backward of the
// official TTT code). The inner normalisation of TTT, Moneta, Yaad and Memora memories.
#pragma once

#include "miras/core/scalar.hpp"

namespace miras {

template <class S>
struct LayerNormCache {
    Vec<S> xhat;
    S std = S(1);
};

/// n = w * xhat + b; w and b may be empty (no affine parameters).
template <class S>
void layer_norm(const Vec<S>& r, const Vec<S>& w, const Vec<S>& b, S eps, LayerNormCache<S>& cache, Vec<S>& n) {
    const Index D = r.size();
    const S mean = r.sum() / S(D);
    S var = S(0);
    for (Index i = 0; i < D; ++i) var += (r[i] - mean) * (r[i] - mean);
    var /= S(D);
    cache.std = math::sqrt(var + eps);
    cache.xhat = (r.array() - mean) / cache.std;
    n = cache.xhat;
    if (w.size() > 0) n.array() *= w.array();
    if (b.size() > 0) n += b;
}

/// dr for an output gradient dn.
template <class S>
void layer_norm_vjp(const Vec<S>& dn, const Vec<S>& w, const LayerNormCache<S>& cache, Vec<S>& dr) {
    const Index D = dn.size();
    Vec<S> g = dn;
    if (w.size() > 0) g.array() *= w.array();
    const S sum_g = g.sum();
    const S sum_gx = g.dot(cache.xhat);
    dr = (S(D) * g.array() - sum_g - cache.xhat.array() * sum_gx) / (S(D) * cache.std);
}

}  // namespace miras
