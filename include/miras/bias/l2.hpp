// l2 regression attentional bias: l(y, v) = 1/2 ||y - v||^2, so dl/dy = y - v. One gradient step
// of rate beta is the delta rule (DeltaNet); papers without the 1/2 are matched by doubling beta.
#pragma once

#include "miras/core/scalar.hpp"

namespace miras {

struct L2Bias {
    static constexpr const char* name = "l2";

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

    template <class S>
    void value_gradient(const Vec<S>& y, const S* v, Vec<S>& dv) const {
        dv.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dv[i] = v[i] - y[i];
    }
};

}  // namespace miras
