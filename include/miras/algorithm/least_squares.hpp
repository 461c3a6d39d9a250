// Exact ridge least squares (the Mesa layer; MesaNet, von Oswald et al. 2025, as in the
// flash-linear-attention reference `naive_mesa_net_exact`). Two linear recurrences with the
// retention decay gamma = exp(g) and a strength beta:
//   W_t = gamma W_{t-1} + beta v x^T        (W is the memory, [V, D])
//   H_t = gamma H_{t-1} + beta x x^T        ([D, D])
// and the read solves the ridge problem: y = W_t (H_t + diag(lambda))^{-1} q.
// The solve is a Cholesky factorisation (exact) or conjugate gradient with a fixed number of
// iterations started from the Jacobi guess q / (diag(H) + lambda); with D iterations conjugate
// gradient is exact in exact arithmetic.
#pragma once

#include <string>
#include <vector>

#include <Eigen/Cholesky>

#include "miras/algorithm/context.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

enum class LinearSolver { exact, conjugate_gradient };

struct LeastSquares {
    static constexpr const char* name = "least_squares";
    static constexpr bool parametric = true;

    GateConfig strength = GateConfig::constant(1.0);            // beta, per head
    GateConfig ridge = GateConfig{Axis::key, false, {1.0}};     // lambda, per key channel, fixed
    LinearSolver solver = LinearSolver::exact;
    int cg_iterations = 30;

    std::vector<GateSpec> gates(const LayerDims&) const {
        return {GateSpec{"beta", strength, Range::nonnegative, true}, GateSpec{"lambda", ridge, Range::positive}};
    }

    void validate() const {
        if (strength.axis != Axis::head) throw ConfigError("least_squares needs its strength beta per head");
        if (ridge.axis == Axis::value) throw ConfigError("least_squares needs its ridge lambda per head or per key channel");
        if (ridge.per_token) throw ConfigError("least_squares needs a fixed ridge lambda");
        if (solver == LinearSolver::conjugate_gradient && cg_iterations < 1) {
            throw ConfigError("conjugate gradient iteration count " + std::to_string(cg_iterations) +
                              " is invalid; valid is 1 or more");
        }
    }

    template <class S> struct State { Mat<S> H; };
    template <class S> struct Bound { BoundGate<S> beta, lambda; };

    template <class S>
    Bound<S> bind(GateBinder<S>& binder, const LayerDims& dims) const {
        auto specs = gates(dims);
        return {binder.bind(specs[0]), binder.bind(specs[1])};
    }

    template <class S> State<S> init_state(const LayerDims& dims) const {
        return {Mat<S>::Zero(dims.key_features, dims.key_features)};
    }
    Index state_size(const LayerDims& dims) const { return dims.key_features * dims.key_features; }

    template <class Ctx, class S>
    void write(const Ctx& ctx, Mat<S>& W, State<S>& state, const Bound<S>& bound, Scratch<S>&) const {
        if (ctx.first_step) {
            const GateValues<S> g = ctx.retention.log_decay(ctx.retention_gates, ctx.b, ctx.t, ctx.h);
            const S gamma = math::exp(g[0]);
            W *= gamma;
            state.H *= gamma;
        }
        const S beta = bound.beta.at(ctx.b, ctx.step, ctx.h)[0];
        for (Index d = 0; d < W.rows(); ++d) W.row(d) += (beta * ctx.v[d]) * ctx.x.transpose();
        state.H.noalias() += (beta * ctx.x) * ctx.x.transpose();
    }

    template <class Memory, class S>
    void read(const Memory&, const Mat<S>& W, const State<S>& state, const Bound<S>& bound, Index b, Index t,
              Index h, const Vec<S>& query, Vec<S>& y) const {
        const GateValues<S> lambda = bound.lambda.at(b, t, h);
        Mat<S> A = state.H;
        for (Index j = 0; j < A.rows(); ++j) A(j, j) += lambda[j];
        Vec<S> solution;
        if (solver == LinearSolver::exact) {
            solution = A.llt().solve(query);
        } else {
            solution = conjugate_gradient(A, query);
        }
        y.noalias() = W * solution;
    }

    /// Solves A z = r for a symmetric positive definite A with a fixed number of iterations: the
    /// one-row case of conjugate_gradient_rows.
    template <class S>
    Vec<S> conjugate_gradient(const Mat<S>& A, const Vec<S>& r) const {
        const Mat<S> Q = r.transpose(), diagonal = A.diagonal().transpose();
        Mat<S> Z(1, r.size());
        // The row z^T A^T is (A z)^T. A state loaded from outside need not be symmetric, and the
        // chunked form applies H the same way.
        conjugate_gradient_rows(Q, diagonal, 1, [&A](const auto& X, Mat<S>& out) { out.noalias() = X * A.transpose(); },
                                Z);
        return Z.row(0).transpose();
    }

    /// Solves n systems at once: row r of Z is the transposed solution z of A_r z = q_r, for row r
    /// of Q and its own symmetric positive definite A_r, whose diagonal is row r of `diagonal`.
    /// `apply(X, out)` sets row r of `out` to (A_r x)^T for row r of X, for the first n rows. Each
    /// row starts from the Jacobi guess q_r / diag(A_r) and stops after cg_iterations steps, at a
    /// zero residual, or at a curvature that is not positive.
    template <class S, class Apply>
    void conjugate_gradient_rows(const Mat<S>& Q, const Mat<S>& diagonal, Index n, const Apply& apply,
                                 Mat<S>& Z) const {
        const Index D = Q.cols();
        Mat<S> residual(n, D), direction(n, D), product(n, D);
        std::vector<S> rho(static_cast<std::size_t>(n));
        std::vector<char> active(static_cast<std::size_t>(n), 1);
        Z.topRows(n) = Q.topRows(n).cwiseQuotient(diagonal.topRows(n));
        apply(Z.topRows(n), product);
        residual = Q.topRows(n) - product;
        direction = residual;
        for (Index r = 0; r < n; ++r) rho[static_cast<std::size_t>(r)] = residual.row(r).squaredNorm();
        for (int iteration = 0; iteration < cg_iterations; ++iteration) {
            bool any = false;
            for (Index r = 0; r < n; ++r) {
                if (value_of(rho[static_cast<std::size_t>(r)]) == 0.0) active[static_cast<std::size_t>(r)] = 0;
                any = any || active[static_cast<std::size_t>(r)];
            }
            if (!any) break;
            apply(direction, product);
            for (Index r = 0; r < n; ++r) {
                const auto i = static_cast<std::size_t>(r);
                if (!active[i]) continue;
                const S curvature = direction.row(r).dot(product.row(r));
                // A converged float solve leaves a residual whose curvature underflows to 0, so the
                // row stops there rather than divide by it.
                if (!(value_of(curvature) > 0.0)) {
                    active[i] = 0;
                    continue;
                }
                const S alpha = rho[i] / curvature;
                Z.row(r) += alpha * direction.row(r);
                residual.row(r) -= alpha * product.row(r);
                const S next = residual.row(r).squaredNorm();
                direction.row(r) = residual.row(r) + (next / rho[i]) * direction.row(r);
                rho[i] = next;
            }
        }
    }

    template <class S> void save(const State<S>& state, NamedMatrices<S>& out) const { out["H"] = state.H; }
    template <class S> void load(State<S>& state, const NamedMatrices<S>& in, const LayerDims& dims) const {
        state.H = require_matrix(in, "H", dims.key_features, dims.key_features);
    }
};

}  // namespace miras
