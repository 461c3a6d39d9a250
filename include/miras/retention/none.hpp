// No retention: the previous memory enters the update unchanged.
#pragma once

#include <vector>

#include "miras/core/gate.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/retention/placement.hpp"

namespace miras {

struct NoRetention {
    static constexpr const char* name = "none";
    static constexpr Placement placement = Placement::decay_then_gradient;

    std::vector<GateSpec> gates() const { return {}; }

    template <class S>
    struct Bound {};

    template <class S>
    Bound<S> bind(GateBinder<S>&) const { return {}; }

    template <class Memory, class Params, class S>
    void apply(const Memory&, Params&, const Bound<S>&, Index, Index, Index) const {}

    template <class S>
    GateValues<S> log_decay(const Bound<S>&, Index, Index, Index) const {
        static const S zero = S(0);
        return {&zero, 1};
    }
};

}  // namespace miras
