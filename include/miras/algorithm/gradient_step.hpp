// One gradient step per written pair: W_t = W - eta J^T dl/dy, with dl/dy from the attentional
// bias at the prediction y = M(W; phi(k)) and the rate eta per head or per key or value channel.
// Retention acts before the prediction (decay_then_gradient) or after it (gradient_then_decay).
// With the l2 bias this is the delta rule (DeltaNet) and, with decay, Gated DeltaNet; with the
// dot-product bias it is linear attention and its decayed relatives (Miras Eqs. 8-9).
//
// Option separate_read_key takes the prediction at a second key p instead of k:
// W_t = W' - eta (W' p - v) k^T (Comba).
#pragma once

#include <vector>

#include "miras/algorithm/context.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct GradientStep {
    static constexpr const char* name = "gd";
    static constexpr bool parametric = true;

    GateConfig rate = GateConfig::constant(1.0);  // eta
    bool separate_read_key = false;

    std::vector<GateSpec> gates(const LayerDims& dims) const {
        std::vector<GateSpec> specs{GateSpec{"eta", rate, Range::nonnegative, true}};
        if (separate_read_key) specs.push_back(GateSpec{"p", GateConfig::input(Axis::key), Range::any, true, dims.key});
        return specs;
    }

    template <class S> struct State {};
    template <class S> struct Bound { BoundGate<S> eta, p; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const {
        auto specs = gates(dims);
        Bound<S> bound{binder.bind(specs[0]), {}};
        if (separate_read_key) bound.p = binder.bind(specs[1]);
        return bound;
    }

    template <class S> State<S> init_state(const LayerDims&) const { return {}; }
    Index state_size(const LayerDims&) const { return 0; }

    template <class Ctx, class Params, class S>
    void write(const Ctx& ctx, Params& W, State<S>&, const Bound<S>& bound, Scratch<S>& scratch) const {
        if (ctx.decay_first()) ctx.retain(W);

        if (separate_read_key) {
            ctx.memory.map(bound.p.at(ctx.b, ctx.step, ctx.h).data, ctx.dims.key, scratch.u);
            ctx.memory.predict(W, scratch.u, scratch.y);
        } else {
            ctx.memory.predict(W, ctx.x, scratch.y);
        }
        ctx.loss_gradient(scratch.y, scratch.dy);

        if (!ctx.decay_first()) ctx.retain(W);

        const GateValues<S> eta = bound.eta.at(ctx.b, ctx.step, ctx.h);
        if (eta.scalar()) {
            ctx.memory.add_gradient(W, S(-eta[0]), scratch.dy, ctx.x);
        } else if (rate.axis == Axis::value) {
            for (Index i = 0; i < scratch.dy.size(); ++i) scratch.dy[i] *= eta[i];
            ctx.memory.add_gradient(W, S(-1), scratch.dy, ctx.x);
        } else {
            scratch.x = ctx.x;
            for (Index i = 0; i < scratch.x.size(); ++i) scratch.x[i] *= eta[i];
            ctx.memory.add_gradient(W, S(-1), scratch.dy, scratch.x);
        }
        ctx.finish(W);
    }

    template <class Memory, class Params, class S>
    void read(const Memory& memory, const Params& W, const State<S>&, const Bound<S>&, Index, Index, Index,
              const Vec<S>& query, Vec<S>& y) const {
        memory.predict(W, query, y);
    }

    template <class S> void save(const State<S>&, NamedMatrices<S>&) const {}
    template <class S> void load(State<S>&, const NamedMatrices<S>&, const LayerDims&) const {}
};

}  // namespace miras
