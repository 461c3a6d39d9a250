// What an algorithm sees when it writes one key-value pair into the memory of one head.
#pragma once

#include "miras/core/scalar.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/retention/placement.hpp"

namespace miras {

/// The gates of a bias that declares none.
struct NoBiasGates {};

template <class Memory, class Bias, class Retention, class S>
struct WriteContext {
    const Memory& memory;
    const Bias& bias;
    const Retention& retention;
    const typename Retention::template Bound<S>& retention_gates;
    const LayerDims& dims;
    Index b = 0, h = 0;
    Index t = 0;     // token
    Index step = 0;  // time index of the pair: t * n + i for the i-th of n pairs of token t
    bool first_step = true;  // retention acts once per token, before or after its first pair
    const S* k = nullptr;    // raw key [K]
    const S* v = nullptr;    // value [V]
    const Vec<S>& x;         // key features phi(k) [D]
    const void* bias_gates = nullptr;  // the bias's bound gates (Bias::Bound<S>), when it declares gates

    /// dy = dl/dy at the prediction y: from the bias, which may read the key, the step or its gates.
    void loss_gradient(const Vec<S>& y, Vec<S>& dy) const {
        if constexpr (requires { bias.context_gradient(y, dy, *this); }) {
            bias.context_gradient(y, dy, *this);
        } else {
            bias.gradient(y, v, dy);
        }
    }

    /// The bias's bound gates.
    template <class Bound>
    const Bound& bias_bound() const { return *static_cast<const Bound*>(bias_gates); }

    template <class Params>
    void retain(Params& W) const {
        if (first_step) retention.apply(memory, W, retention_gates, b, t, h);
    }
    /// Maps the memory back after the step (nonlinear retentions: softmax, sigmoid, ...).
    template <class Params>
    void finish(Params& W) const {
        if constexpr (requires { retention.finish(memory, W, retention_gates, b, t, h); }) {
            if (first_step) retention.finish(memory, W, retention_gates, b, t, h);
        }
    }
    bool decay_first() const { return retention.placement == Placement::decay_then_gradient; }
};

/// Per-head scratch vectors, allocated once per head and reused for every token.
template <class S>
struct Scratch {
    Vec<S> y, dy, u, x;
};

}  // namespace miras
