// Pieces shared by the deep-memory algorithms: the read through a memory's retrieve map, the
// parameter gradient of one written pair, and its optional clipping to a norm (inner gradient
// clipping: g <- g min(1, c / ||g||), the norm over every trained parameter).
#pragma once

#include <cmath>
#include <string>

#include "miras/algorithm/context.hpp"
#include "miras/core/error.hpp"
#include "miras/memory/param_ops.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

/// y = the memory's read at x: retrieve when the memory reads differently from its trained map.
template <class Memory, class Params, class S>
void memory_read(const Memory& memory, const Params& W, const Vec<S>& x, Vec<S>& y) {
    if constexpr (requires { memory.retrieve(W, x, y); }) memory.retrieve(W, x, y);
    else memory.predict(W, x, y);
}

inline void check_clip_norm(double clip_norm) {
    if (!(clip_norm >= 0.0) || !std::isfinite(clip_norm)) {
        throw ConfigError("gradient clip norm " + std::to_string(clip_norm) + " is invalid; valid is 0 (off) or a finite value > 0");
    }
}

/// Returns the factor that brings a gradient of norm `norm` to at most clip_norm: clip_norm / norm
/// when clip_norm > 0 and the norm is larger, else 1.
template <class S>
S clip_factor(const S& norm, double clip_norm) {
    return clip_norm > 0.0 && norm > S(clip_norm) ? S(clip_norm) / norm : S(1);
}

/// Scales grad down to norm clip_norm when clip_norm > 0 and its norm is larger.
template <class Params>
void clip_to_norm(Params& grad, double clip_norm) {
    if (clip_norm <= 0.0) return;
    using std::sqrt;
    const auto factor = clip_factor(sqrt(params_squared_norm(grad)), clip_norm);
    if (factor != decltype(factor)(1)) params_scale(grad, factor);
}

/// grad = the gradient of the bias loss of the context's pair at the parameters `at`, clipped to
/// clip_norm when clip_norm > 0. grad must have the shape of `at`; it is overwritten.
template <class Ctx, class Params, class S>
void pair_gradient(const Ctx& ctx, const Params& at, Params& grad, double clip_norm, Scratch<S>& scratch) {
    ctx.memory.predict(at, ctx.x, scratch.y);
    ctx.loss_gradient(scratch.y, scratch.dy);
    params_set_zero(grad);
    add_memory_gradient(ctx.memory, at, grad, S(1), scratch.dy, ctx.x);
    clip_to_norm(grad, clip_norm);
}

/// Reads the position inside a mini-batch of the given size from the state tensor 'position'.
template <class S>
Index load_position(const NamedMatrices<S>& in, Index minibatch_size) {
    const double position = value_of(require_matrix(in, "position", 1, 1)(0, 0));
    if (!(position >= 0.0) || position >= static_cast<double>(minibatch_size) || position != std::floor(position)) {
        throw InputError("state tensor 'position' is " + std::to_string(position) + "; valid is an integer in [0, " +
                         std::to_string(minibatch_size) + ")");
    }
    return static_cast<Index>(position);
}

/// Saves the memory parameters p with every name prefixed (for example "start.W1").
template <class Memory, class Params, class S>
void save_prefixed(const Memory& memory, const Params& p, const std::string& prefix, NamedMatrices<S>& out) {
    NamedMatrices<S> parts;
    memory.save(p, parts);
    for (auto& [name, m] : parts) out[prefix + name] = std::move(m);
}

/// Loads the memory parameters p from the matrices whose names start with prefix.
template <class Memory, class Params, class S>
void load_prefixed(const Memory& memory, Params& p, const std::string& prefix, const NamedMatrices<S>& in,
                   const LayerDims& dims) {
    NamedMatrices<S> parts;
    for (const auto& [name, m] : in) {
        if (name.rfind(prefix, 0) == 0) parts.emplace(name.substr(prefix.size()), m);
    }
    memory.load(p, parts, dims);
}

}  // namespace miras
