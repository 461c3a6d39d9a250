// Chunked execution of the generalised delta rule: RWKV-7's diagonal-plus-low-rank recurrence, as
// flash-linear-attention's `chunk_dplr_delta_rule` computes it, in this project's orientation. Per token
//   W_r = W_{r-1} diag(exp(g_r)) + y_r b_r^T + eta_r v_r k_r^T,   y_r = W_p a_r,
// with W_p = W_{r-1} (gradient_then_decay, RWKV-7) or W_{r-1} diag(exp(g_r)) (decay_then_gradient).
// Within a chunk with start state W_0, cumulative log-decays G_r = g_1 + ... + g_r per key channel
// and the exponent E_r of the state y_r reads (G_{r-1} or G_r), unrolling the recurrence gives
//   y_r = W_0 (a_r * exp(E_r)) + sum_{i<r} (a_r . b_i)_E y_i + (a_r . k_i)_E eta_i v_i
// where (x_r . z_i)_E = sum_c x_rc z_ic exp(E_rc - G_ic). So the removed vectors Y solve the unit
// lower triangular system
//   (I - L_ab) Y = (A * exp(E)) W_0^T + L_ak diag(eta) V
// with the strictly lower L_ab[r, i] = (a_r . b_i)_E and L_ak[r, i] = (a_r . k_i)_E: the WY form of
// the delta rule with a second pair (y_i, b_i) written beside (eta_i v_i, k_i). Then
//   O = (Q * exp(G)) W_0^T + P_qb Y + P_qk diag(eta) V
// with the lower triangular P_qb[r, i] = (q_r . b_i)_G and P_qk[r, i] = (q_r . k_i)_G, i <= r.
//   W_C = W_0 diag(exp(G_C)) + Y^T (B * exp(G_C - G)) + V^T diag(eta) (K * exp(G_C - G)).
// decayed_products (chunked.hpp) forms every decayed product with exponents <= 0. With a per-head
// decay or none, each row of G repeats the head's value across the K channels.
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "miras/algorithm/generalized_delta.hpp"
#include "miras/layer/chunked.hpp"
#include "miras/layer/options.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"

namespace miras {

namespace detail {

template <class Memory, class Retention, class Algorithm>
inline constexpr bool dplr_types_v =
    std::is_same_v<Memory, MatrixMemory> && std::is_same_v<Algorithm, GeneralizedDelta> &&
    (std::is_same_v<Retention, NoRetention> || std::is_same_v<Retention, DecayRetention>);

/// Whether a layer of the generalised delta rule can run chunked with its run-time options.
template <class L>
bool dplr_chunkable(const L& layer) {
    if constexpr (!dplr_types_v<typename L::memory_type, typename L::retention_type, typename L::algorithm_type>) {
        return false;
    } else {
        if constexpr (std::is_same_v<typename L::retention_type, DecayRetention>) {
            const Axis axis = layer.retention().gate.axis;
            if (axis != Axis::head && axis != Axis::key) return false;
        }
        return reads_after_one_write(layer) && layer.algorithm().rate.axis == Axis::head;
    }
}

/// Runs heads [first_head, last_head) of sequence b of the generalised delta rule chunk by chunk,
/// updating each head's state in place. The heads take each chunk in turn, the states run
/// transposed and with `check_inputs` each head checks the rows it copies, as in
/// forward_heads_chunked.
template <class S, class L, class RetentionBound, class AlgorithmBound, class HeadStates>
ChunkedChecks forward_heads_chunked_dplr(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                                         const AlgorithmBound& algorithm_gates, Index b, Index first_head,
                                         Index last_head, Index T, HeadStates& heads, S* output, bool check_inputs,
                                         const std::vector<ChannelGateRows<S>>& gate_rows) {
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Index C = layer.options().chunk_size;
    const S scale = S(layer.query_scale());
    const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;

    // Y has room for the chunk's rows of V below its own for the state update.
    Mat<S> Q(C, K), Kc(C, K), Ac(C, K), Bc(C, K), Vc(C, V), Y(2 * C, V), L_ab(C, C), L_ak(C, C);
    Mat<S> G(C, K), scratch(2 * C, K);
    ChannelDecays<S> decays;
    DecayedProductScratch<S> products;
    Vec<S> end_decay(K);
    // Rows [0, n) are A * exp(E), the removal keys at the state they read. Rows [n, 2n) are Q * exp(G).
    Mat<S> stacked(2 * C, K), from_start(2 * C, V);
    TransposedStates<S, HeadStates> states(heads, b, H, first_head, last_head);
    ChunkedChecks checks;

    for (Index start = 0; start < T; start += C) {
        const Index n = std::min(C, T - start);
        for (Index h = first_head; h < last_head; ++h) {
            Mat<S>& Wt = states[h];
            bool finite = load_chunk(inputs, b, h, H, T, start, n, scale, Q, Kc, Vc);
            for (Index r = 0; r < n; ++r) {
                const Index t = start + r;
                finite &= detail::channel_gates_in_range(gate_rows, b, t, t, h);
                set_row(algorithm_gates.a.at(b, t, h), Ac.row(r));
                set_row(algorithm_gates.b.at(b, t, h), Bc.row(r));
                auto Gr = G.row(r);
                set_row(layer.retention().log_decay(retention_gates, b, t, h), Gr);
                if (r > 0) Gr += G.row(r - 1);
                Vc.row(r) *= algorithm_gates.eta.at(b, t, h)[0];
            }
            if (check_inputs && !finite) {
                checks.inputs_valid = false;
                return checks;
            }
            auto Vn = Vc.topRows(n);
            auto Yn = Y.topRows(n);

            // exp(E_r) is exp(G_r), or exp(G_{r-1}) when the gradient comes before the decay.
            decays.compute(G, n);
            const ReadsAt reads = gradient_first ? ReadsAt::before_decay : ReadsAt::after_decay;
            for (Index r = 0; r < n; ++r) {
                if (!gradient_first) {
                    stacked.row(r) = Ac.row(r).cwiseProduct(decays.from_start.row(r));
                } else if (r > 0) {
                    stacked.row(r) = Ac.row(r).cwiseProduct(decays.from_start.row(r - 1));
                } else {
                    stacked.row(r) = Ac.row(r);
                }
            }
            stacked.middleRows(n, n) = Q.topRows(n).cwiseProduct(decays.from_start.topRows(n));
            multiply_into(stacked.topRows(2 * n), Wt, from_start.topRows(2 * n), /*accumulate=*/false);

            // (I - L_ab) Y = (A * exp(E)) W_0^T + L_ak diag(eta) V.
            decayed_products(Ac, reads, Bc, G, decays.steps, n, /*include_diagonal=*/false, products, L_ab);
            decayed_products(Ac, reads, Kc, G, decays.steps, n, /*include_diagonal=*/false, products, L_ak);
            Yn = from_start.topRows(n);
            multiply_into(L_ak.topLeftCorner(n, n), Vn, Yn, /*accumulate=*/true);
            auto system = L_ab.topLeftCorner(n, n);
            system = -system;
            solve_unit_lower_in_place(system, Yn);

            // O = (Q * exp(G)) W_0^T + P_qb Y + P_qk diag(eta) V, reusing L_ab and L_ak for P_qb, P_qk.
            auto On = from_start.middleRows(n, n);
            decayed_products(Q, ReadsAt::after_decay, Bc, G, decays.steps, n, /*include_diagonal=*/true, products, L_ab);
            decayed_products(Q, ReadsAt::after_decay, Kc, G, decays.steps, n, /*include_diagonal=*/true, products, L_ak);
            multiply_into(L_ab.topLeftCorner(n, n), Yn, On, /*accumulate=*/true);
            multiply_into(L_ak.topLeftCorner(n, n), Vn, On, /*accumulate=*/true);
            for (Index r = 0; r < n; ++r) {
                S* o = output + ((b * T + start + r) * H + h) * V;
                for (Index c = 0; c < V; ++c) o[c] = On(r, c);
                checks.outputs_finite = checks.outputs_finite && all_finite(o, V);
            }

            // W_C^T = diag(exp(G_C)) W_0^T + (B * exp(G_C - G))^T Y + (K * exp(G_C - G))^T diag(eta) V.
            // One product over the stacked rows [Y; diag(eta) V] and [B; K] * exp(G_C - G).
            const auto ratio = decays.to_end.topRows(n);
            Y.middleRows(n, n) = Vn;
            scratch.topRows(n) = Bc.topRows(n).cwiseProduct(ratio);
            scratch.middleRows(n, n) = Kc.topRows(n).cwiseProduct(ratio);
            end_decay = decays.from_start.row(n - 1).transpose();
            scale_rows_and_add_transpose_product(scratch.topRows(2 * n), Y.topRows(2 * n), end_decay, Wt);
        }
    }
    states.store();
    if constexpr (std::is_same_v<typename L::retention_type, NoRetention>) (void)retention_gates;
    return checks;
}

}  // namespace detail
}  // namespace miras
