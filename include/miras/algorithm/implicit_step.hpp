// Implicit (proximal) step: W_t = argmin_W l(W phi(k), v) + 1/(2 beta) ||W - W'||^2, in closed form
// for the l2 bias (Longhorn, Liu et al. 2024; Miras Section 2.8):
//   W_t = W' - eps (W' x - v) x^T,  eps = beta / (1 + beta x^T x),  x = phi(k).
// A rate per value channel gives one eps per row; a rate per key channel (metric diag(1/beta))
// gives W_t = W' - (W' x - v)(beta * x)^T / (1 + x^T diag(beta) x).
// The diagonal variant of the official Longhorn kernel replaces (W x) x^T by W diag(x * x):
//   W_t = W' - eps W' diag(x * x) + eps v x^T.
// With the dot-product bias the loss is linear, the curvature term vanishes and the step is the
// explicit one.
#pragma once

#include <type_traits>
#include <vector>

#include "miras/algorithm/context.hpp"
#include "miras/bias/l2.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct ImplicitStep {
    static constexpr const char* name = "implicit";
    static constexpr bool parametric = true;

    GateConfig rate = GateConfig::constant(1.0);  // beta
    bool diagonal = false;

    std::vector<GateSpec> gates(const LayerDims&) const { return {GateSpec{"eta", rate, Range::nonnegative, true}}; }

    template <class S> struct State {};
    template <class S> struct Bound { BoundGate<S> eta; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const {
        return {binder.bind(gates(dims)[0])};
    }

    template <class S> State<S> init_state(const LayerDims&) const { return {}; }
    Index state_size(const LayerDims&) const { return 0; }

    template <class Ctx, class S>
    void write(const Ctx& ctx, Mat<S>& W, State<S>&, const Bound<S>& bound, Scratch<S>& scratch) const {
        using Bias = std::remove_cvref_t<decltype(ctx.bias)>;
        const S curvature = std::is_same_v<Bias, L2Bias> ? S(1) : S(0);
        const Vec<S>& x = ctx.x;
        const Index V = W.rows();

        if (ctx.decay_first()) ctx.retain(W);
        ctx.memory.predict(W, x, scratch.y);
        ctx.loss_gradient(scratch.y, scratch.dy);  // W' x - v for l2, -v for the dot product
        Mat<S> transition_source;
        if (diagonal && curvature != S(0)) transition_source = W;
        if (!ctx.decay_first()) ctx.retain(W);

        // Row scales s and write key u: the step is W -= diag(s) (r u^T) for the full form.
        const GateValues<S> beta = bound.eta.at(ctx.b, ctx.step, ctx.h);
        Vec<S>& s = scratch.u;
        s.resize(V);
        scratch.x = x;
        if (beta.scalar() || rate.axis == Axis::value) {
            const S xx = x.squaredNorm();
            for (Index d = 0; d < V; ++d) s[d] = beta[d] / (S(1) + curvature * beta[d] * xx);
        } else {
            S weighted = S(0);
            for (Index j = 0; j < x.size(); ++j) {
                scratch.x[j] = beta[j] * x[j];
                weighted += beta[j] * x[j] * x[j];
            }
            s.setConstant(S(1) / (S(1) + curvature * weighted));
        }

        if (!diagonal || curvature == S(0)) {
            W.noalias() -= (s.cwiseProduct(scratch.dy)) * scratch.x.transpose();
            return;
        }
        // Diagonal form: the transition uses the state where the gradient was taken.
        const Vec<S> xu = x.cwiseProduct(scratch.x);
        for (Index d = 0; d < V; ++d) {
            W.row(d) -= s[d] * (transition_source.row(d).cwiseProduct(xu.transpose()) - ctx.v[d] * scratch.x.transpose());
        }
    }

    template <class Memory, class S>
    void read(const Memory& memory, const Mat<S>& W, const State<S>&, const Bound<S>&, Index, Index, Index,
              const Vec<S>& query, Vec<S>& y) const {
        memory.predict(W, query, y);
    }

    template <class S> void save(const State<S>&, NamedMatrices<S>&) const {}
    template <class S> void load(State<S>&, const NamedMatrices<S>&, const LayerDims&) const {}
};

}  // namespace miras
