// Gradient descent with momentum (Titans Eqs. 13-14; Atlas Eqs. 12-13, 32-33):
//   S_t = theta_t S_{t-1} - eta_t G_t,             W_t = alpha_t W_{t-1} + S_t          (Titans)
//   S_t = theta_t S_{t-1} + G_t,                   W_t = alpha_t W_{t-1} - eta_t NS_k(S_t)  (Atlas)
// with alpha_t from the retention, theta_t = exp(theta) from the log-gate "theta", and the Omega
// rule's window G_t = sum_{i=t-c+1..t} gamma_i grad l(W; k_i, v_i) (c = 1: the online gradient).
// Every gradient of a mini-batch of b tokens is taken at the mini-batch's start weights.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "miras/algorithm/gradient_tools.hpp"
#include "miras/algorithm/newton_schulz.hpp"
#include "miras/algorithm/omega_window.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

struct Momentum {
    static constexpr const char* name = "momentum";
    static constexpr bool parametric = true;

    GateConfig rate = GateConfig::constant(1.0);                    // eta
    GateConfig momentum = GateConfig::constant(std::log(0.9));      // theta = exp(value)
    Index minibatch_size = 1;
    Index window = 1;                                               // c of the Omega rule
    GateConfig window_weight = GateConfig::constant(1.0);           // gamma
    int newton_schulz_steps = 0;                                    // k; 0 = Titans form
    bool use_momentum = true;                                       // false: S_t = -eta_t G_t (theta unused)
    double clip_norm = 0.0;                                         // clips G_t, 0 = off

    void validate() const {
        if (minibatch_size < 1) throw ConfigError("minibatch_size " + std::to_string(minibatch_size) + " is invalid; valid is 1 or more");
        if (window < 1) throw ConfigError("omega window " + std::to_string(window) + " is invalid; valid is 1 or more");
        if (newton_schulz_steps < 0) {
            throw ConfigError("newton_schulz_steps " + std::to_string(newton_schulz_steps) + " is invalid; valid is 0 (off) or more");
        }
        for (const GateConfig* g : {&rate, &momentum, &window_weight}) {
            if (g->axis != Axis::head) throw ConfigError("the momentum algorithm's gates are one value per head; use the head axis");
        }
        check_clip_norm(clip_norm);
    }

    std::vector<GateSpec> gates(const LayerDims&) const {
        return {GateSpec{"eta", rate, Range::nonnegative, true}, GateSpec{"theta", momentum, Range::log_gate, true},
                GateSpec{"gamma", window_weight, Range::nonnegative, true}};
    }

    template <class S> struct State {};
    template <class Memory, class S>
    struct StateFor {
        typename Memory::template Params<S> momentum, start, grad, pair;
        Index position = 0;
        OmegaWindow<S> window;  // the last c - 1 pairs
    };
    template <class S> struct Bound { BoundGate<S> eta, theta, gamma; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const {
        const auto specs = gates(dims);
        return {binder.bind(specs[0]), binder.bind(specs[1]), binder.bind(specs[2])};
    }

    template <class S, class Memory, class Params>
    StateFor<Memory, S> init_state(const LayerDims&, const Memory&, const Params& W) const {
        StateFor<Memory, S> state{W, W, W, W};
        params_set_zero(state.momentum);
        return state;
    }
    /// Counts the saved scalars: momentum, start weights, position and a full window of c - 1 pairs.
    template <class Memory>
    Index state_size(const LayerDims& dims, const Memory& memory) const {
        const Index pair = dims.key + dims.value + dims.key_features + 1;
        return 2 * memory.state_size(dims) + 1 + (window > 1 ? (window - 1) * pair : 0);
    }

    template <class Ctx, class Params, class St, class S>
    void write(const Ctx& ctx, Params& W, St& state, const Bound<S>& bound, Scratch<S>& scratch) const {
        if (ctx.decay_first()) ctx.retain(W);
        if (state.position == 0) state.start = W;

        const S gamma = bound.gamma.at(ctx.b, ctx.step, ctx.h)[0];
        pair_gradient(ctx, state.start, state.grad, 0.0, scratch);
        params_scale(state.grad, gamma);
        const auto& past = state.window;
        for (std::size_t i = 0; i < past.size(); ++i) {
            const Ctx older{ctx.memory, ctx.bias, ctx.retention, ctx.retention_gates, ctx.dims, ctx.b, ctx.h, ctx.t,
                            ctx.step, false, past.keys[i].data(), past.values[i].data(), past.features[i],
                            ctx.bias_gates};
            pair_gradient(older, state.start, state.pair, 0.0, scratch);
            params_axpy(state.grad, past.weights[i], state.pair);
        }
        clip_to_norm(state.grad, clip_norm);

        const S eta = bound.eta.at(ctx.b, ctx.step, ctx.h)[0];
        const S theta = use_momentum ? math::exp(bound.theta.at(ctx.b, ctx.step, ctx.h)[0]) : S(0);
        params_scale(state.momentum, theta);
        if (!ctx.decay_first()) ctx.retain(W);
        if (newton_schulz_steps == 0) {
            params_axpy(state.momentum, -eta, state.grad);
            params_axpy(W, S(1), state.momentum);
        } else {
            params_axpy(state.momentum, S(1), state.grad);
            state.pair = state.momentum;
            params_for_each(state.pair, [&](auto& m) { m = newton_schulz(Mat<S>(m), newton_schulz_steps); });
            params_axpy(W, -eta, state.pair);
        }
        ctx.finish(W);

        if (window > 1) state.window.push(ctx, gamma, window - 1);
        state.position = (state.position + 1) % minibatch_size;
    }

    template <class Memory, class Params, class St, class S>
    void read(const Memory& memory, const Params& W, const St&, const Bound<S>&, Index, Index, Index,
              const Vec<S>& query, Vec<S>& y) const {
        memory_read(memory, W, query, y);
    }

    /// Saves momentum.NAME, start.NAME, position [1, 1] and the window (window.k, .v, .x, .gamma: [n, size]).
    template <class Memory, class St, class S>
    void save(const Memory& memory, const St& state, NamedMatrices<S>& out) const {
        save_prefixed(memory, state.momentum, "momentum.", out);
        save_prefixed(memory, state.start, "start.", out);
        out["position"] = Mat<S>::Constant(1, 1, S(static_cast<double>(state.position)));
        if (window > 1) state.window.save(out);
    }

    /// A state without 'position' starts with zero momentum and an empty window.
    template <class Memory, class St, class S>
    void load(const Memory& memory, St& state, const NamedMatrices<S>& in, const LayerDims& dims) const {
        if (in.find("position") == in.end()) return;
        state.position = load_position(in, minibatch_size);
        load_prefixed(memory, state.momentum, "momentum.", in, dims);
        load_prefixed(memory, state.start, "start.", in, dims);
        if (window > 1) state.window.load(in, dims, window - 1);
    }
};

}  // namespace miras
