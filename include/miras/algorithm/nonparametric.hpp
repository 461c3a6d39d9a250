// Non-parametric solution of the l2 regression: keep every pair (or a window of them) and answer a
// query with the Nadaraya-Watson estimator, which is softmax attention. Retention adds the
// log-decay of each new token to the pairs already cached (a forgetting gate on the scores).
#pragma once

#include <vector>

#include "miras/algorithm/context.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct NonParametric {
    static constexpr const char* name = "nonparametric";
    static constexpr bool parametric = false;

    std::vector<GateSpec> gates(const LayerDims&) const { return {}; }

    template <class S> struct State {};
    template <class S> struct Bound {};

    template <class S>
    Bound<S> bind(GateBinder<S>&, const LayerDims&) const { return {}; }

    template <class S> State<S> init_state(const LayerDims&) const { return {}; }
    Index state_size(const LayerDims&) const { return 0; }

    template <class Ctx, class Params, class S>
    void write(const Ctx& ctx, Params& cache, State<S>&, const Bound<S>&, Scratch<S>&) const {
        ctx.retain(cache);
        ctx.memory.append(cache, ctx.x, ctx.v);
    }

    template <class Memory, class Params, class S>
    void read(const Memory& memory, const Params& cache, const State<S>&, const Bound<S>&, Index, Index, Index,
              const Vec<S>& query, Vec<S>& y) const {
        memory.read(cache, query, y);
    }

    template <class S> void save(const State<S>&, NamedMatrices<S>&) const {}
    template <class S> void load(State<S>&, const NamedMatrices<S>&, const LayerDims&) const {}
};

}  // namespace miras
