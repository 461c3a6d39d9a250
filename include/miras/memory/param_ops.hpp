// Arithmetic on memory parameters, so that an algorithm can keep start weights, accumulated
// gradients or momentum of any memory: Y += a X, Y *= a, zero, squared norm. Eigen matrices are
// handled here; a memory with a structured Params type (MlpParams) overloads the same functions.
#pragma once

#include "miras/core/scalar.hpp"

namespace miras {

template <class Derived, class S>
void params_axpy(Eigen::MatrixBase<Derived>& y, const S& a, const Eigen::MatrixBase<Derived>& x) {
    y.derived() += a * x.derived();
}

template <class Derived, class S>
void params_scale(Eigen::MatrixBase<Derived>& y, const S& a) {
    y.derived() *= a;
}

template <class Derived>
void params_set_zero(Eigen::MatrixBase<Derived>& y) {
    y.derived().setZero();
}

template <class Derived>
auto params_squared_norm(const Eigen::MatrixBase<Derived>& x) {
    return x.derived().squaredNorm();
}

/// Applies f to every trained matrix of the parameters (for an Eigen matrix: itself).
template <class Derived, class F>
void params_for_each(Eigen::MatrixBase<Derived>& x, F&& f) {
    f(x.derived());
}

/// Applies f to every trained block (for an Eigen matrix: itself).
template <class Derived, class F>
void params_for_each_block(Eigen::MatrixBase<Derived>& x, F&& f) {
    f(x.derived());
}

/// The gradient J^T dy of <dy, M(W; x)> scaled by coef, added to target: memories whose gradient
/// depends on W (deep memories) take W, the others ignore it.
template <class Memory, class Params, class S>
void add_memory_gradient(const Memory& memory, const Params& at, Params& target, const S& coef, const Vec<S>& dy,
                         const Vec<S>& x) {
    if constexpr (requires { memory.add_gradient(at, target, coef, dy, x); }) {
        memory.add_gradient(at, target, coef, dy, x);
    } else {
        memory.add_gradient(target, coef, dy, x);
    }
}

}  // namespace miras
