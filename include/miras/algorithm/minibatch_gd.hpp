// Mini-batch gradient descent: every gradient G_j of a mini-batch of b tokens is taken at the
// mini-batch's start weights W0 (TTT Sec. 2.4; Titans Eq. 16; Miras Eq. 28). Rate forms:
//   per_token     W_i = alpha_i W_{i-1} - eta_i G_i (stepping; b = 1 is the online rule)
//   query_token   W_i = W0 - eta_i sum_{j<=i} G_j, eta of the query token (flash-linear-attention TTT)
//   factored      W_i = W0 - f[i] sum_{j<=i} eta_j G_j, f a fixed per-position factor (official TTT)
// The weights of a head are always W_i, so the read at token i uses them. A partial mini-batch stays
// in the state (W0, the accumulated sum, the position) and a later call resumes it.
#pragma once

#include <string>
#include <vector>

#include "miras/algorithm/gradient_tools.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

enum class MiniBatchRate { per_token, query_token, factored };

struct MiniBatchGD {
    static constexpr const char* name = "minibatch_gd";
    static constexpr bool parametric = true;

    Index minibatch_size = 1;
    GateConfig rate = GateConfig::constant(1.0);  // eta, one per head
    MiniBatchRate form = MiniBatchRate::per_token;
    std::vector<double> token_factor;  // factored: f[0..b-1]
    double clip_norm = 0.0;            // inner gradient clipping, 0 = off

    void validate() const {
        if (minibatch_size < 1) {
            throw ConfigError("minibatch_size " + std::to_string(minibatch_size) + " is invalid; valid is 1 or more");
        }
        if (rate.axis != Axis::head) throw ConfigError("the mini-batch rate eta is one value per head; use the head axis");
        if (form == MiniBatchRate::factored && static_cast<Index>(token_factor.size()) != minibatch_size) {
            throw ConfigError("token_factor has " + std::to_string(token_factor.size()) + " values; the factored rate needs " +
                              std::to_string(minibatch_size) + " (one per position of the mini-batch)");
        }
        for (double f : token_factor) {
            if (!in_range(f, Range::nonnegative)) throw ConfigError("token_factor value " + std::to_string(f) + " is invalid; valid is a finite value >= 0");
        }
        check_clip_norm(clip_norm);
    }

    template <class Retention>
    void check_retention(const Retention& retention) const {
        if constexpr (requires { retention.gate; }) {
            if (form != MiniBatchRate::per_token) {
                throw ConfigError("the query_token and factored mini-batch rates take no retention; use the per_token rate");
            }
        }
    }

    std::vector<GateSpec> gates(const LayerDims&) const { return {GateSpec{"eta", rate, Range::nonnegative, true}}; }

    template <class S> struct State {};
    template <class Memory, class S>
    struct StateFor {
        typename Memory::template Params<S> start, sum, grad;
        Index position = 0;
    };
    template <class S> struct Bound { BoundGate<S> eta; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const { return {binder.bind(gates(dims)[0])}; }

    template <class S, class Memory, class Params>
    StateFor<Memory, S> init_state(const LayerDims&, const Memory&, const Params& W) const {
        StateFor<Memory, S> state{W, W, W, 0};
        params_set_zero(state.sum);
        return state;
    }
    /// Counts the saved scalars: start weights, accumulated sum and the position.
    template <class Memory>
    Index state_size(const LayerDims& dims, const Memory& memory) const { return 2 * memory.state_size(dims) + 1; }

    template <class Ctx, class Params, class St, class S>
    void write(const Ctx& ctx, Params& W, St& state, const Bound<S>& bound, Scratch<S>& scratch) const {
        if (state.position == 0) {
            if (ctx.decay_first()) ctx.retain(W);
            state.start = W;
            params_set_zero(state.sum);
        } else if (ctx.decay_first()) {
            ctx.retain(W);
        }
        pair_gradient(ctx, state.start, state.grad, clip_norm, scratch);
        const S eta = bound.eta.at(ctx.b, ctx.step, ctx.h)[0];
        switch (form) {
            case MiniBatchRate::per_token:
                if (!ctx.decay_first()) ctx.retain(W);
                params_axpy(W, -eta, state.grad);
                ctx.finish(W);
                break;
            case MiniBatchRate::query_token:
                params_axpy(state.sum, S(1), state.grad);
                W = state.start;
                params_axpy(W, -eta, state.sum);
                break;
            case MiniBatchRate::factored:
                params_axpy(state.sum, eta, state.grad);
                W = state.start;
                params_axpy(W, -S(token_factor[static_cast<std::size_t>(state.position)]), state.sum);
                break;
        }
        state.position = (state.position + 1) % minibatch_size;
    }

    template <class Memory, class Params, class St, class S>
    void read(const Memory& memory, const Params& W, const St&, const Bound<S>&, Index, Index, Index,
              const Vec<S>& query, Vec<S>& y) const {
        memory_read(memory, W, query, y);
    }

    /// Saves the partial mini-batch: start.NAME and sum.NAME for each memory matrix, and position [1, 1].
    template <class Memory, class St, class S>
    void save(const Memory& memory, const St& state, NamedMatrices<S>& out) const {
        save_prefixed(memory, state.start, "start.", out);
        save_prefixed(memory, state.sum, "sum.", out);
        out["position"] = Mat<S>::Constant(1, 1, S(static_cast<double>(state.position)));
    }

    /// A state without 'position' starts a new mini-batch.
    template <class Memory, class St, class S>
    void load(const Memory& memory, St& state, const NamedMatrices<S>& in, const LayerDims& dims) const {
        if (in.find("position") == in.end()) {
            state.position = 0;
            return;
        }
        state.position = load_position(in, minibatch_size);
        load_prefixed(memory, state.start, "start.", in, dims);
        load_prefixed(memory, state.sum, "sum.", in, dims);
    }
};

}  // namespace miras
