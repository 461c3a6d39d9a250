// Generalised delta rule of RWKV-7 (the diagonal-plus-low-rank recurrence of flash-linear-attention's
// `dplr_recurrence`): a decay, a rank-one correction read at a removal key a and written along a
// replacement direction b, and the write of the pair:
//   W_t = R(W_{t-1}) + (W_p a) b^T + eta v x^T
// where R is the retention (a per-key-channel decay for RWKV-7) and W_p is W_{t-1} with
// gradient_then_decay (RWKV-7: the correction reads the state before the decay) or R(W_{t-1})
// with decay_then_gradient. With a = -x and b = beta x it is the delta rule.
#pragma once

#include <vector>

#include "miras/algorithm/context.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct GeneralizedDelta {
    static constexpr const char* name = "generalized_delta";
    static constexpr bool parametric = true;

    GateConfig rate = GateConfig::constant(1.0);  // eta on the write v x^T

    std::vector<GateSpec> gates(const LayerDims&) const {
        return {GateSpec{"eta", rate, Range::nonnegative, true},
                GateSpec{"a", GateConfig::input(Axis::key), Range::any, true},
                GateSpec{"b", GateConfig::input(Axis::key), Range::any, true}};
    }

    template <class S> struct State {};
    template <class S> struct Bound { BoundGate<S> eta, a, b; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const {
        auto specs = gates(dims);
        return {binder.bind(specs[0]), binder.bind(specs[1]), binder.bind(specs[2])};
    }

    template <class S> State<S> init_state(const LayerDims&) const { return {}; }
    Index state_size(const LayerDims&) const { return 0; }

    template <class Ctx, class S>
    void write(const Ctx& ctx, Mat<S>& W, State<S>&, const Bound<S>& bound, Scratch<S>& scratch) const {
        const Index D = W.cols();
        const GateValues<S> a = bound.a.at(ctx.b, ctx.step, ctx.h);
        const GateValues<S> b = bound.b.at(ctx.b, ctx.step, ctx.h);
        scratch.u.resize(D);
        scratch.x.resize(D);
        for (Index j = 0; j < D; ++j) {
            scratch.u[j] = a[j];
            scratch.x[j] = b[j];
        }

        if (ctx.decay_first()) ctx.retain(W);
        scratch.y.noalias() = W * scratch.u;
        if (!ctx.decay_first()) ctx.retain(W);

        const GateValues<S> eta = bound.eta.at(ctx.b, ctx.step, ctx.h);
        W.noalias() += scratch.y * scratch.x.transpose();
        for (Index d = 0; d < W.rows(); ++d) {
            const S scale = rate.axis == Axis::value ? eta[d] : eta[0];
            if (rate.axis == Axis::key && !eta.scalar()) {
                for (Index j = 0; j < D; ++j) W(d, j) += eta[j] * ctx.v[d] * ctx.x[j];
            } else {
                W.row(d) += (scale * ctx.v[d]) * ctx.x.transpose();
            }
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
