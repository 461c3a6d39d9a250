// l2 regression attentional bias: l(y, v) = 1/2 ||y - v||^2, so dl/dy = y - v. One gradient step
// of rate beta is the delta rule (DeltaNet); papers without the 1/2 are matched by doubling beta.
// Option subtract_key regresses onto v - k (the reconstruction target of the official TTT code).
#pragma once

#include <string>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

struct L2Bias {
    static constexpr const char* name = "l2";

    bool subtract_key = false;  // target v - k instead of v (needs K = V)

    template <class S>
    S loss(const Vec<S>& y, const S* v) const {
        S total = S(0);
        for (Index i = 0; i < y.size(); ++i) total += (y[i] - v[i]) * (y[i] - v[i]);
        return S(0.5) * total;
    }

    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy) const {
        dy.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dy[i] = y[i] - v[i];
    }

    /// dy = y - v, or y - (v - k) with subtract_key.
    template <class S, class Ctx>
    void context_gradient(const Vec<S>& y, Vec<S>& dy, const Ctx& ctx) const {
        gradient(y, ctx.v, dy);
        if (!subtract_key) return;
        if (ctx.dims.key != y.size()) {
            throw ConfigError("the l2 bias with subtract_key needs the key dimension (" + std::to_string(ctx.dims.key) +
                              ") to equal the value dimension (" + std::to_string(y.size()) + ")");
        }
        for (Index i = 0; i < y.size(); ++i) dy[i] += ctx.k[i];
    }

    template <class S>
    void value_gradient(const Vec<S>& y, const S* v, Vec<S>& dv) const {
        dv.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dv[i] = v[i] - y[i];
    }
};

}  // namespace miras
