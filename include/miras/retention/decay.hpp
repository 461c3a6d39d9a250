// Decay retention: the previous memory is multiplied by exp(g) with a log-gate g <= 0 per head or
// per key or value channel, fixed or per token. The placement names where the gradient is taken:
//   decay_then_gradient  W' = exp(g) W_{t-1}; W_t = W' - eta grad l(W')        (Gated DeltaNet)
//   gradient_then_decay  W_t = exp(g) W_{t-1} - eta grad l(W_{t-1})             (Titans, Moneta, Yaad)
// The two agree when g = 0 and differ otherwise.
#pragma once

#include <vector>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/retention/none.hpp"

namespace miras {

struct DecayRetention {
    static constexpr const char* name = "decay";

    GateConfig gate = GateConfig::input(Axis::head);
    Placement placement = Placement::decay_then_gradient;

    std::vector<GateSpec> gates() const { return {GateSpec{"g", gate, Range::log_gate}}; }

    template <class S>
    struct Bound {
        BoundGate<S> g;
    };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder) const {
        return {binder.bind(gates()[0])};
    }

    template <class Memory, class Params, class S>
    void apply(const Memory& memory, Params& W, const Bound<S>& bound, Index b, Index t, Index h) const {
        memory.decay(W, bound.g.at(b, t, h), gate.axis);
    }

    template <class S>
    GateValues<S> log_decay(const Bound<S>& bound, Index b, Index t, Index h) const {
        return bound.g.at(b, t, h);
    }
};

}  // namespace miras
