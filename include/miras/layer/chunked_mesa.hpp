// Chunked execution of ridge least squares: MesaNet, the recurrences of least_squares.hpp. The
// conjugate-gradient form is also how flash-linear-attention's `chunk_mesa_net` runs. With per-head
// cumulative log-decays G_r = g_1 + ... + g_r within a chunk, strengths beta and start states
// W_0 ([V, D]) and H_0 ([D, D]):
//   H_r = exp(G_r) H_0 + sum_{i<=r} exp(G_r - G_i) beta_i k_i k_i^T
//   W_r = exp(G_r) W_0 + sum_{i<=r} exp(G_r - G_i) beta_i v_i k_i^T
// Each token reads o_r = W_r s_r with s_r = (H_r + diag(lambda))^{-1} q_r. Given the solutions S
// (rows s_r), the outputs are decayed linear attention with S as queries:
//   O = diag(exp(G)) S W_0^T + (tril(exp(G_r - G_i)) * S K^T) diag(beta) V
// and the chunk's end states are
//   W_C = exp(G_C) W_0 + V^T diag(beta exp(G_C - G)) K,  H_C = exp(G_C) H_0 + K^T diag(beta exp(G_C - G)) K.
// The solutions:
// - exact (Cholesky): H_r is formed token by token from H_0, as the recurrence does, because each
//   factorisation needs the matrix.
// - conjugate gradient: every token of the chunk iterates at once, and the products H_r x_r of a
//   block X of iterates are matrix products, H X = diag(exp(G)) X H_0^T + (tril(exp(G_r - G_i)) *
//   X K^T) diag(beta) K, so H_r is never formed. Each token keeps its own step sizes and stops
//   under the conditions of the token loop's solver.
// Every exponent is G_r - G_i with i <= r, or a single G_r, so it is <= 0.
#pragma once

#include <type_traits>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "miras/algorithm/least_squares.hpp"
#include "miras/layer/chunked.hpp"
#include "miras/layer/options.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/retention/decay.hpp"

namespace miras {

namespace detail {

template <class Memory, class Retention, class Algorithm>
inline constexpr bool mesa_types_v = std::is_same_v<Memory, MatrixMemory> &&
                                     std::is_same_v<Algorithm, LeastSquares> &&
                                     std::is_same_v<Retention, DecayRetention>;

/// Whether a least-squares layer can run chunked with its run-time options.
template <class L>
bool mesa_chunkable(const L& layer) {
    if constexpr (!mesa_types_v<typename L::memory_type, typename L::retention_type, typename L::algorithm_type>) {
        return false;
    } else {
        return reads_after_one_write(layer) && layer.retention().gate.axis == Axis::head;
    }
}

/// Runs one (b, h) sequence of least squares chunk by chunk, updating W and H of `head` in place.
template <class S, class L, class RetentionBound, class AlgorithmBound, class Head>
void forward_head_chunked_mesa(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                               const AlgorithmBound& algorithm_gates, Index b, Index h, Index T, Head& head,
                               S* output) {
    const LeastSquares& solver = layer.algorithm();
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Index C = layer.options().chunk_size;
    const S scale = S(layer.query_scale());
    Mat<S>& Hs = head.algorithm.H;
    // W runs transposed (K x V), as in the chunked form of the decayed linear attention.
    Mat<S> Wt = head.memory.transpose(), Kt(K, C);

    Mat<S> Q(C, K), Kc(C, K), Vc(C, V), Z(C, K), mask(C, C), P(C, C), weighted(C, K), stacked(C, K),
        O(C, V), U(C, V), diagonal(C, K);
    Vec<S> G(C), g(C), beta(C), lambda(K);
    PacketProductScratch<S> product_scratch;
    {
        const GateValues<S> ridge = algorithm_gates.lambda.at(b, 0, h);
        for (Index c = 0; c < K; ++c) lambda[c] = ridge[c];
    }
    Mat<S> running = solver.solver == LinearSolver::exact ? Mat<S>(K, K) : Mat<S>();
    Mat<S> system = solver.solver == LinearSolver::exact ? Mat<S>(K, K) : Mat<S>();
    Vec<S> solution;

    for (Index start = 0; start < T; start += C) {
        const Index n = std::min(C, T - start);
        load_chunk(inputs, b, h, H, T, start, n, scale, Q, Kc, Vc);
        for (Index r = 0; r < n; ++r) {
            const Index t = start + r;
            beta[r] = algorithm_gates.beta.at(b, t, h)[0];
            g[r] = layer.retention().log_decay(retention_gates, b, t, h)[0];
            G[r] = (r == 0 ? S(0) : G[r - 1]) + g[r];
        }
        auto Kn = Kc.topRows(n);
        // mask[r, i] = exp(G_r - G_i) for i <= r, and `weighted` = diag(beta) K.
        decay_mask(G, G, n, /*include_diagonal=*/true, mask);
        auto weighted_n = weighted.topRows(n);
        weighted_n.noalias() = beta.head(n).asDiagonal() * Kn;

        if (solver.solver == LinearSolver::exact) {
            // H_r token by token from H_0, in the token loop's order: decay, then the rank-one write.
            running = Hs;
            for (Index r = 0; r < n; ++r) {
                running *= math::exp(g[r]);
                running.noalias() += weighted.row(r).transpose() * Kc.row(r);
                system = running;
                system.diagonal() += lambda;
                solution = system.llt().solve(Q.row(r).transpose());
                Z.row(r) = solution.transpose();
            }
        } else {
            // diag(H_r) = exp(G_r) diag(H_0) + sum_{i<=r} exp(G_r - G_i) beta_i k_i^2, plus lambda.
            auto diagonal_n = diagonal.topRows(n);
            diagonal_n.noalias() = mask.topLeftCorner(n, n) * (weighted_n.array() * Kn.array()).matrix();
            for (Index r = 0; r < n; ++r) {
                diagonal_n.row(r) += math::exp(G[r]) * Hs.diagonal().transpose() + lambda.transpose();
            }
            const auto apply = [&](const auto& X, Mat<S>& out) {
                auto out_n = out.topRows(n);
                auto Pn = P.topLeftCorner(n, n);
                // Row r: (H_0 x_r)^T exp(G_r).
                multiply_by_transpose_into(X.topRows(n), Hs, out_n, product_scratch);
                for (Index r = 0; r < n; ++r) out_n.row(r) *= math::exp(G[r]);
                Pn.noalias() = X.topRows(n) * Kn.transpose();
                Pn.array() *= mask.topLeftCorner(n, n).array();
                out_n.noalias() += Pn * weighted_n;
                out_n += (X.topRows(n).array().rowwise() * lambda.transpose().array()).matrix();
            };
            solver.conjugate_gradient_rows(Q, diagonal, n, apply, Z);
        }

        // H's end state, with `stacked` as diag(beta exp(G_C - G)) K.
        auto stacked_n = stacked.topRows(n);
        if (solver.solver == LinearSolver::exact) {
            Hs = running;
        } else {
            const S last = G[n - 1];
            for (Index r = 0; r < n; ++r) stacked_n.row(r) = (beta[r] * math::exp(last - G[r])) * Kn.row(r);
            scale_and_add_transpose_product(Kn, stacked_n, S(math::exp(last)), Hs);
        }

        // O = diag(exp(G)) Z W_0^T + (mask * Z K^T) U with U = diag(beta) V, the per-head decayed
        // linear attention of the dot-product layers with the solutions as queries, and W's end state.
        auto Zn = Z.topRows(n);
        for (Index r = 0; r < n; ++r) stacked_n.row(r) = math::exp(G[r]) * Zn.row(r);
        auto On = O.topRows(n);
        multiply_into(stacked_n, Wt, On, /*accumulate=*/false);
        auto Un = U.topRows(n);
        Un.noalias() = beta.head(n).asDiagonal() * Vc.topRows(n);
        transpose_into(Kc.data(), n, K, K, Kt.data(), C);
        finish_chunk_per_head(Zn, Kn, Kt.leftCols(n), Un, G, n, mask, P, stacked, Wt, On);
        for (Index r = 0; r < n; ++r) {
            S* o = output + ((b * T + start + r) * H + h) * V;
            for (Index c = 0; c < V; ++c) o[c] = On(r, c);
        }
    }
    head.memory = Wt.transpose();
}

}  // namespace detail
}  // namespace miras
