// Nonlinear retention gates of Miras (Sec. 5.2), W_t = post(pre(W_{t-1}) - eta grad l(W_{t-1})) with
// alpha = exp(g) from a log-gate g:
//   lq           pre A = alpha W ||W||_q^{(q-2)/(3-q)} (the A with W = A / ||A||_q^{q-2}), post A / ||A||_q^{q-2}  (Moneta, Eq. 24)
//   elastic_net  pre alpha W, post soft threshold S_gamma (Eq. 22)
//   kl           pre alpha log W, post softmax per row or over the whole matrix (Memora, Eq. 27)
//   sigmoid      pre logit W, post sigmoid (Bregman retention with f' = logit)
// The gradient is taken at W_{t-1}; norms and softmax domains are per parameter block (each weight
// matrix and bias of an MLP memory on its own).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/memory/param_ops.hpp"
#include "miras/retention/placement.hpp"

namespace miras {

enum class MirrorKind { lq, elastic_net, kl, sigmoid };
enum class SoftmaxDomain { row, whole };

struct MirrorRetention {
    static constexpr const char* name = "mirror";
    static constexpr Placement placement = Placement::gradient_then_decay;

    MirrorKind kind = MirrorKind::kl;
    GateConfig gate = GateConfig::constant(0.0);  // g, alpha = exp(g)
    double q = 4.0;                               // lq
    double threshold = 1e-3;                      // gamma of elastic_net
    SoftmaxDomain domain = SoftmaxDomain::row;    // kl
    /// Entries at or below 0 (kl) or outside (0, 1) (sigmoid) are clamped to this distance from the
    /// boundary before the log, so a zero-initialised memory starts uniform (kl) or near 0 (sigmoid).
    double floor = 1e-12;

    void validate(const LayerDims& dims) const {
        if (dims.steps_per_token != 1) {
            throw ConfigError("the mirror retention maps the memory once per token, so it needs 1 pair per token, not " +
                              std::to_string(dims.steps_per_token));
        }
        if (gate.axis != Axis::head) throw ConfigError("the mirror retention gate is one value per head; use the head axis");
        if (kind == MirrorKind::lq && (!(q > 1.0) || q == 3.0 || !std::isfinite(q))) {
            throw ConfigError("lq retention q " + std::to_string(q) +
                              " is invalid; valid is q > 1 except 3 (where ||W||_q = 1 for every W and A cannot be recovered)");
        }
        if (!(threshold >= 0.0)) throw ConfigError("elastic_net threshold " + std::to_string(threshold) + " is invalid; valid is >= 0");
        if (!(floor > 0.0 && floor < 0.5)) throw ConfigError("mirror floor " + std::to_string(floor) + " is invalid; valid is in (0, 0.5)");
    }

    std::vector<GateSpec> gates() const { return {GateSpec{"g", gate, Range::log_gate}}; }

    template <class S> struct Bound { BoundGate<S> g; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder) const { return {binder.bind(gates()[0])}; }

    /// pre(W), before the step.
    template <class Memory, class Params, class S>
    void apply(const Memory&, Params& W, const Bound<S>& bound, Index b, Index t, Index h) const {
        const S alpha = math::exp(bound.g.at(b, t, h)[0]);
        params_for_each_block(W, [&](auto& m) {
            switch (kind) {
                case MirrorKind::lq: {
                    const S norm = q_norm(m);
                    const S factor = norm > S(0) ? math::exp(S((q - 2.0) / (3.0 - q)) * math::log(norm)) : S(1);
                    m *= alpha * factor;
                    break;
                }
                case MirrorKind::elastic_net: m *= alpha; break;
                case MirrorKind::kl:
                    for (Index i = 0; i < m.size(); ++i) m.data()[i] = alpha * math::log(clamp(m.data()[i], S(floor), S(1e300)));
                    break;
                case MirrorKind::sigmoid:
                    for (Index i = 0; i < m.size(); ++i) {
                        const S w = clamp(m.data()[i], S(floor), S(1.0 - floor));
                        m.data()[i] = math::log(w / (S(1) - w));
                    }
                    break;
            }
        });
    }

    /// post(A), after the step.
    template <class Memory, class Params, class S>
    void finish(const Memory&, Params& W, const Bound<S>&, Index, Index, Index) const {
        params_for_each_block(W, [&](auto& m) {
            switch (kind) {
                case MirrorKind::lq: {
                    const S norm = q_norm(m);
                    if (norm > S(0)) m *= math::exp(-S(q - 2.0) * math::log(norm));
                    break;
                }
                case MirrorKind::elastic_net:
                    for (Index i = 0; i < m.size(); ++i) {
                        S& x = m.data()[i];
                        x = x > S(threshold) ? x - S(threshold) : (x < S(-threshold) ? x + S(threshold) : S(0));
                    }
                    break;
                case MirrorKind::kl:
                    if (domain == SoftmaxDomain::whole || m.cols() == 1) {
                        softmax(m.data(), m.size(), 1);
                    } else {
                        for (Index r = 0; r < m.rows(); ++r) softmax(m.data() + r * m.cols(), m.cols(), 1);
                    }
                    break;
                case MirrorKind::sigmoid:
                    for (Index i = 0; i < m.size(); ++i) m.data()[i] = math::sigmoid(m.data()[i]);
                    break;
            }
        });
    }

    template <class S>
    GateValues<S> log_decay(const Bound<S>& bound, Index b, Index t, Index h) const { return bound.g.at(b, t, h); }

private:
    template <class S>
    static S clamp(const S& x, const S& lo, const S& hi) { return x < lo ? lo : (x > hi ? hi : x); }

    /// The entry-wise q-norm of one block.
    template <class M>
    auto q_norm(const M& m) const {
        using S = typename M::Scalar;
        S total = S(0);
        for (Index i = 0; i < m.size(); ++i) {
            const S a = math::abs(m.data()[i]);
            if (a > S(0)) total += math::exp(S(q) * math::log(a));
        }
        return total > S(0) ? math::exp(math::log(total) / S(q)) : S(0);
    }

    template <class S>
    static void softmax(S* x, Index n, Index stride) {
        S top = x[0];
        for (Index i = 1; i < n; ++i) top = x[i * stride] > top ? x[i * stride] : top;
        S total = S(0);
        for (Index i = 0; i < n; ++i) total += (x[i * stride] = math::exp(x[i * stride] - top));
        for (Index i = 0; i < n; ++i) x[i * stride] /= total;
    }
};

}  // namespace miras
