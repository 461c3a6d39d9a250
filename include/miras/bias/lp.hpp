// l_p attentional bias (Miras Eq. 11): l(y, v) = sum_j |y_j - v_j|^p, p >= 1, so
// dl/dy = p Sign(e) |e|^{p-1} with e = y - v. Smooth surrogates (Miras Remark 5): Sign(e) ~ tanh(a e),
// or |e| ~ sqrt(e^2 + eps), whose loss sum (e^2 + eps)^{p/2} has the exact gradient p e (e^2 + eps)^{p/2-1}.
// The bias of Moneta (p = 3); p = 2 is twice the l2 bias.
#pragma once

#include <cmath>
#include <string>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

enum class LpSmoothing { none, tanh_sign, sqrt_abs };

struct LpBias {
    static constexpr const char* name = "lp";

    double p = 3.0;
    LpSmoothing smoothing = LpSmoothing::none;
    double sharpness = 10.0;  // a of tanh(a e)
    double eps = 1e-6;        // of sqrt(e^2 + eps)

    void validate() const {
        if (!(p >= 1.0) || !std::isfinite(p)) throw ConfigError("lp bias p " + std::to_string(p) + " is invalid; valid is a finite p >= 1");
        if (!(sharpness > 0.0)) throw ConfigError("lp bias sharpness " + std::to_string(sharpness) + " is invalid; valid is > 0");
        if (!(eps > 0.0)) throw ConfigError("lp bias eps " + std::to_string(eps) + " is invalid; valid is > 0");
    }

    /// The loss; with tanh_sign it is the exact l_p loss, of which the surrogate gradient is an approximation.
    template <class S>
    S loss(const Vec<S>& y, const S* v) const {
        S total = S(0);
        for (Index i = 0; i < y.size(); ++i) {
            const S e = y[i] - v[i];
            if (smoothing == LpSmoothing::sqrt_abs) total += pow_of(e * e + S(eps), p / 2.0);
            else total += pow_of(math::abs(e), p);
        }
        return total;
    }

    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy) const {
        dy.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) {
            const S e = y[i] - v[i];
            switch (smoothing) {
                case LpSmoothing::none: dy[i] = S(p) * sign(e) * pow_of(math::abs(e), p - 1.0); break;
                case LpSmoothing::tanh_sign: dy[i] = S(p) * math::tanh(S(sharpness) * e) * pow_of(math::abs(e), p - 1.0); break;
                case LpSmoothing::sqrt_abs: dy[i] = S(p) * e * pow_of(e * e + S(eps), p / 2.0 - 1.0); break;
            }
        }
    }

    template <class S>
    void value_gradient(const Vec<S>& y, const S* v, Vec<S>& dv) const {
        gradient(y, v, dv);
        dv = -dv;
    }

private:
    template <class S>
    static S sign(const S& e) { return e > S(0) ? S(1) : (e < S(0) ? S(-1) : S(0)); }

    /// x^power for x >= 0 (x^0 = 1, so p = 1 gives Sign(e)).
    template <class S>
    static S pow_of(const S& x, double power) {
        if (power == 0.0) return S(1);
        if (x <= S(0)) return S(0);
        return math::exp(S(power) * math::log(x));
    }
};

}  // namespace miras
