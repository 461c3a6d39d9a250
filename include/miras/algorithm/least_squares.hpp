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

    /// Solves A z = r for a symmetric positive definite A with a fixed number of iterations.
    template <class S>
    Vec<S> conjugate_gradient(const Mat<S>& A, const Vec<S>& r) const {
        Vec<S> z = r.cwiseQuotient(A.diagonal());
        Vec<S> residual = r - A * z;
        Vec<S> direction = residual;
        S rho = residual.squaredNorm();
        for (int iteration = 0; iteration < cg_iterations; ++iteration) {
            if (value_of(rho) == 0.0) break;
            const Vec<S> Ad = A * direction;
            const S curvature = direction.dot(Ad);
            // A converged float solve leaves a residual whose curvature underflows to 0; stop there
            // rather than divide by it.
            if (!(value_of(curvature) > 0.0)) break;
            const S alpha = rho / curvature;
            z += alpha * direction;
            residual -= alpha * Ad;
            const S next = residual.squaredNorm();
            direction = residual + (next / rho) * direction;
            rho = next;
        }
        return z;
    }

    template <class S> void save(const State<S>& state, NamedMatrices<S>& out) const { out["H"] = state.H; }
    template <class S> void load(State<S>& state, const NamedMatrices<S>& in, const LayerDims& dims) const {
        state.H = require_matrix(in, "H", dims.key_features, dims.key_features);
    }
};

}  // namespace miras
