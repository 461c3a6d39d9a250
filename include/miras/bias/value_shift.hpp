// Robust-to-value-shift attentional bias (Miras Sec. 5.1): the worst case of 1/2 ||y - (v + dv)||^2
// over ||dv|| <= Delta, l = 1/2 ||e||^2 + Delta ||e|| + Delta^2 / 2 with e = y - v, so
// dl/dy = e + Delta e / ||e|| (and e where e = 0).
#pragma once

#include <cmath>
#include <string>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

struct ValueShiftBias {
    static constexpr const char* name = "value_shift";

    double radius = 0.1;  // Delta

    void validate() const {
        if (!(radius >= 0.0) || !std::isfinite(radius)) {
            throw ConfigError("value_shift radius " + std::to_string(radius) + " is invalid; valid is a finite value >= 0");
        }
    }

    template <class S>
    S loss(const Vec<S>& y, const S* v) const {
        S total = S(0);
        for (Index i = 0; i < y.size(); ++i) total += (y[i] - v[i]) * (y[i] - v[i]);
        const S norm = math::sqrt(total);
        return S(0.5) * total + S(radius) * norm + S(0.5 * radius * radius);
    }

    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy) const {
        dy.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dy[i] = y[i] - v[i];
        const S norm = math::sqrt(dy.squaredNorm());
        if (norm > S(0)) dy *= S(1) + S(radius) / norm;
    }

    template <class S>
    void value_gradient(const Vec<S>& y, const S* v, Vec<S>& dv) const {
        gradient(y, v, dv);
        dv = -dv;
    }
};

}  // namespace miras
