// Chunked execution of the matrix-memory layers whose recurrence is linear in the state: the delta
// rule family (l2 bias) and the decayed linear attention family (dot-product bias). Both take one
// gradient step per token with a per-head rate, and no retention or a per-head decay. The chunked
// form returns the numbers of the token loop, computed with a few matrix products per chunk.
//
// Within a chunk, with the chunk's start state W_0, cumulative log-decays G_r = g_1 + ... + g_r and
// the exponent E_r of the state where token r's prediction is taken (E_r = G_r for
// decay_then_gradient, G_{r-1} for gradient_then_decay), every write is W_r = exp(g_r) W_{r-1} +
// u_r k_r^T with
//   u_r = eta_r (v_r - exp(E_r) W_0 k_r - sum_{i<r} exp(E_r - G_i) (k_i . k_r) u_i)   (l2 bias)
//   u_r = eta_r v_r                                                                  (dot product)
// so (I + A) U = diag(eta) V - diag(eta exp(E)) K W_0^T with the strictly lower triangular
// A[r, i] = eta_r exp(E_r - G_i) (k_r . k_i): the WY (UT transform) form of the flash-linear-attention
// chunked delta rule, solved here by a unit lower triangular solve. Then
//   O = diag(exp(G)) Q W_0^T + (tril(exp(G_r - G_i)) * Q K^T) U
//   W_C = exp(G_C) W_0 + U^T diag(exp(G_C - G)) K.
// Every exponent is a difference G_r - G_i with i <= r (or a single G_r), so it is <= 0.
#pragma once

#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "miras/algorithm/gradient_step.hpp"
#include "miras/layer/options.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/bias/l2.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"

namespace miras {

namespace detail {

template <class Memory, class Bias, class Retention, class Algorithm>
inline constexpr bool chunkable_types_v =
    std::is_same_v<Memory, MatrixMemory> && std::is_same_v<Algorithm, GradientStep> &&
    (std::is_same_v<Bias, L2Bias> || std::is_same_v<Bias, DotProductBias>) &&
    (std::is_same_v<Retention, NoRetention> || std::is_same_v<Retention, DecayRetention>);

/// Whether a layer of chunkable types can run chunked with its run-time options.
template <class L>
bool chunkable(const L& layer) {
    using Memory = typename L::memory_type;
    using Bias = typename L::bias_type;
    using Retention = typename L::retention_type;
    using Algorithm = typename L::algorithm_type;
    if constexpr (!chunkable_types_v<Memory, Bias, Retention, Algorithm>) {
        return false;
    } else {
        const auto& options = layer.options();
        if (options.read != ReadTiming::after_write || options.steps_per_token != 1) return false;
        if (layer.memory().features.kind != FeatureKind::identity) return false;
        if constexpr (std::is_same_v<Bias, L2Bias>) {
            if (layer.bias().subtract_key) return false;
        }
        const GradientStep& step = layer.algorithm();
        if (step.separate_read_key || step.rate.axis != Axis::head) return false;
        if constexpr (std::is_same_v<Retention, DecayRetention>) {
            if (layer.retention().gate.axis != Axis::head) return false;
        }
        return true;
    }
}

/// mask[r, i] = exp(row[r] - column[i]) for i < r (or i <= r), 0 above; the exponents are
/// differences of cumulative log-gates with i before r, so each is <= 0.
template <class S>
void decay_mask(const Vec<S>& row, const Vec<S>& column, Index n, bool include_diagonal, Mat<S>& mask) {
    auto m = mask.topLeftCorner(n, n);
    for (Index r = 0; r < n; ++r) {
        const Index last = include_diagonal ? r : r - 1;
        for (Index i = 0; i <= last; ++i) m(r, i) = row[r] - column[i];
        for (Index i = last + 1; i < n; ++i) m(r, i) = S(-std::numeric_limits<double>::infinity());
    }
    m = m.array().exp().matrix();
}

/// Runs one (b, h) sequence chunk by chunk; W is the head's state, updated in place.
template <class S, class L, class RetentionBound, class AlgorithmBound>
void forward_head_chunked(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                          const AlgorithmBound& algorithm_gates, Index b, Index h, Index T, Mat<S>& W, Tensor<S>& output) {
    using Bias = typename L::bias_type;
    using Retention = typename L::retention_type;
    constexpr bool delta = std::is_same_v<Bias, L2Bias>;
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Index C = layer.options().chunk_size;
    const S scale = S(layer.query_scale());
    const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;

    Mat<S> Q(C, K), Kc(C, K), Vc(C, V), A(C, C), U(C, V), Wk(C, K), O(C, V), mask(C, C);
    Vec<S> G(C), E(C), eta(C);

    for (Index start = 0; start < T; start += C) {
        const Index n = std::min(C, T - start);
        auto Qn = Q.topRows(n);
        auto Kn = Kc.topRows(n);
        auto Vn = Vc.topRows(n);
        for (Index r = 0; r < n; ++r) {
            const Index t = start + r;
            const S* q = inputs.q.data() + ((b * T + t) * H + h) * K;
            const S* k = inputs.k.data() + ((b * T + t) * H + h) * K;
            const S* v = inputs.v.data() + ((b * T + t) * H + h) * V;
            for (Index c = 0; c < K; ++c) {
                Qn(r, c) = q[c] * scale;
                Kn(r, c) = k[c];
            }
            for (Index c = 0; c < V; ++c) Vn(r, c) = v[c];
            const S g = layer.retention().log_decay(retention_gates, b, t, h)[0];
            const S previous = r == 0 ? S(0) : G[r - 1];
            G[r] = previous + g;
            E[r] = gradient_first ? previous : G[r];
            eta[r] = algorithm_gates.eta.at(b, t, h)[0];
        }

        // U = (I + A)^{-1} (diag(eta) V - diag(eta exp(E)) K W_0^T).
        auto Un = U.topRows(n);
        Un.noalias() = eta.head(n).asDiagonal() * Vn;
        if constexpr (delta) {
            auto Wn = Wk.topRows(n);
            for (Index r = 0; r < n; ++r) Wn.row(r) = (eta[r] * math::exp(E[r])) * Kn.row(r);
            Un.noalias() -= Wn * W.transpose();
            auto An = A.topLeftCorner(n, n);
            An.noalias() = Kn * Kn.transpose();
            decay_mask(E, G, n, /*include_diagonal=*/false, mask);
            An.array() *= mask.topLeftCorner(n, n).array();
            An = eta.head(n).asDiagonal() * An;
            // The unit lower view reads only the strictly lower part of A and puts ones on the diagonal.
            An.template triangularView<Eigen::UnitLower>().solveInPlace(Un);
        }

        // O = diag(exp(G)) Q W_0^T + (tril(exp(G_r - G_i)) * Q K^T) U.
        auto On = O.topRows(n);
        On.noalias() = Qn * W.transpose();
        for (Index r = 0; r < n; ++r) On.row(r) *= math::exp(G[r]);
        auto P = A.topLeftCorner(n, n);
        P.noalias() = Qn * Kn.transpose();
        decay_mask(G, G, n, /*include_diagonal=*/true, mask);
        P.array() *= mask.topLeftCorner(n, n).array();
        On.noalias() += P * Un;
        for (Index r = 0; r < n; ++r) {
            S* o = output.data() + ((b * T + start + r) * H + h) * V;
            for (Index c = 0; c < V; ++c) o[c] = On(r, c);
        }

        // W_C = exp(G_C) W_0 + U^T diag(exp(G_C - G)) K.
        const S last = G[n - 1];
        auto Wn = Wk.topRows(n);
        for (Index r = 0; r < n; ++r) Wn.row(r) = math::exp(last - G[r]) * Kn.row(r);
        W *= math::exp(last);
        W.noalias() += Un.transpose() * Wn;
    }
    if constexpr (std::is_same_v<Retention, NoRetention>) (void)retention_gates;
}

}  // namespace detail
}  // namespace miras
