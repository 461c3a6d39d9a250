// Dot-product (Hebbian) attentional bias: l(y, v) = -<y, v>, so dl/dy = -v. One gradient step of
// rate eta writes W += eta v phi(k)^T: linear attention, RetNet, Mamba2, GLA (Miras Eq. 8).
#pragma once

#include "miras/core/scalar.hpp"

namespace miras {

struct DotProductBias {
    static constexpr const char* name = "dot_product";

    template <class S>
    S loss(const Vec<S>& y, const S* v) const {
        S total = S(0);
        for (Index i = 0; i < y.size(); ++i) total -= y[i] * v[i];
        return total;
    }

    /// dy = dl/dy.
    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy) const {
        dy.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dy[i] = -v[i];
    }

    /// dv = dl/dv.
    template <class S>
    void value_gradient(const Vec<S>& y, const S*, Vec<S>& dv) const {
        dv = -y;
    }
};

}  // namespace miras
