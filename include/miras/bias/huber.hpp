// Huber attentional biases (Miras Eqs. 13-16), with H(a) = a^2/2 for |a| <= delta and
// delta (|a| - delta/2) beyond, and e = y - v:
//   coordinate  l = sum_j H(e_j)           dl/dy_j = e_j, or delta Sign(e_j) where |e_j| > delta
//   norm        l = H(||e||)               dl/dy = e, or delta e / ||e|| where ||e|| > delta
//   mixture     dl/dy = e if ||e|| <= delta, else delta Sign(e) (the l2 / l1 switch of Yaad)
// delta is a gate "delta" (> 0), fixed or per token.
#pragma once

#include <cmath>
#include <vector>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"

namespace miras {

enum class HuberKind { coordinate, norm, mixture };

struct HuberBias {
    static constexpr const char* name = "huber";

    HuberKind kind = HuberKind::coordinate;
    GateConfig delta = GateConfig::constant(1.0);

    std::vector<GateSpec> gates() const { return {GateSpec{"delta", delta, Range::positive}}; }

    template <class S> struct Bound { BoundGate<S> delta; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder) const { return {binder.bind(gates()[0])}; }

    /// The loss at threshold d (the mixture's: 1/2 ||e||^2 or d ||e||_1).
    template <class S>
    S loss(const Vec<S>& y, const S* v, const S& d) const {
        Vec<S> e(y.size());
        for (Index i = 0; i < y.size(); ++i) e[i] = y[i] - v[i];
        const S norm = math::sqrt(e.squaredNorm());
        switch (kind) {
            case HuberKind::coordinate: {
                S total = S(0);
                for (Index i = 0; i < e.size(); ++i) total += huber(e[i], d);
                return total;
            }
            case HuberKind::norm: return huber(norm, d);
            case HuberKind::mixture: {
                if (norm <= d) return S(0.5) * norm * norm;
                S total = S(0);
                for (Index i = 0; i < e.size(); ++i) total += d * math::abs(e[i]);
                return total;
            }
        }
        return S(0);
    }

    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy, const S& d) const {
        dy.resize(y.size());
        for (Index i = 0; i < y.size(); ++i) dy[i] = y[i] - v[i];
        const S norm = math::sqrt(dy.squaredNorm());
        switch (kind) {
            case HuberKind::coordinate:
                for (Index i = 0; i < dy.size(); ++i) {
                    if (math::abs(dy[i]) > d) dy[i] = d * sign(dy[i]);
                }
                break;
            case HuberKind::norm:
                if (norm > d) dy *= d / norm;
                break;
            case HuberKind::mixture:
                if (norm > d) {
                    for (Index i = 0; i < dy.size(); ++i) dy[i] = d * sign(dy[i]);
                }
                break;
        }
    }

    /// The gradient with the fixed delta (the first configured value).
    template <class S>
    void gradient(const Vec<S>& y, const S* v, Vec<S>& dy) const {
        gradient(y, v, dy, S(delta.fixed.empty() ? 1.0 : delta.fixed[0]));
    }

    /// The gradient with delta of the context's head and token.
    template <class S, class Ctx>
    void context_gradient(const Vec<S>& y, Vec<S>& dy, const Ctx& ctx) const {
        const S d = ctx.template bias_bound<Bound<S>>().delta.at(ctx.b, ctx.t, ctx.h)[0];
        gradient(y, ctx.v, dy, d);
    }

private:
    template <class S>
    static S sign(const S& e) { return e > S(0) ? S(1) : (e < S(0) ? S(-1) : S(0)); }

    template <class S>
    static S huber(const S& a, const S& d) {
        const S m = math::abs(a);
        return m <= d ? S(0.5) * a * a : d * (m - S(0.5) * d);
    }
};

}  // namespace miras
