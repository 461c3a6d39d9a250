// Chunked execution of the matrix-memory layers whose recurrence is linear in the state: the delta
// rule family (l2 bias) and the decayed linear attention family (dot-product bias). Both take one
// gradient step per token with a per-head rate, and no retention or a decay per head or per key
// channel. The chunked form returns the numbers of the token loop, computed with a few matrix
// products per chunk.
//
// Per-head decay. Within a chunk, with the chunk's start state W_0, cumulative log-decays
// G_r = g_1 + ... + g_r and the exponent E_r of the state where token r's prediction is taken
// (E_r = G_r for decay_then_gradient, G_{r-1} for gradient_then_decay), every write is
// W_r = exp(g_r) W_{r-1} + u_r k_r^T with
//   u_r = eta_r (v_r - exp(E_r) W_0 p_r - sum_{i<r} exp(E_r - G_i) (k_i . p_r) u_i)   (l2 bias)
//   u_r = eta_r v_r                                                                  (dot product)
// where p_r = k_r, or the separate read key of Comba. So (I + A) U = diag(eta) V -
// diag(eta exp(E)) P W_0^T with the strictly lower triangular A[r, i] = eta_r exp(E_r - G_i)
// (p_r . k_i): the WY (UT transform) form of the flash-linear-attention chunked delta rule, solved
// here by a unit lower triangular solve. Then
//   O = diag(exp(G)) Q W_0^T + (tril(exp(G_r - G_i)) * Q K^T) U
//   W_C = exp(G_C) W_0 + U^T diag(exp(G_C - G)) K.
// Every exponent is a difference G_r - G_i with i <= r (or a single G_r), so it is <= 0.
//
// Per-key-channel decay (GLA, HGRN2, KDA). G_r and E_r become rows of K cumulative log-decays, the
// write is W_r = W_{r-1} diag(exp(g_r)) + u_r k_r^T, and every scalar exp(E_r - G_i) (x_r . y_i)
// becomes the decayed product sum_c x_rc y_ic exp(E_rc - G_ic). decayed_products computes these in
// sub-blocks of 16 tokens, as the secondary chunking of flash-linear-attention's GLA kernels does.
// Across sub-blocks it goes through the last row G_e of the earlier block and the row G_f before
// the later one: x_r exp(E_r - G_f) . (exp(G_f - G_e) y_i exp(G_e - G_i)), each exponent <= 0
// because i <= e <= f < r. Within a sub-block, E_r is G_r or G_{r-1}, so exp(E_r - G_{r-1}) is the step exp(G_r -
// G_{r-1}) or one, and the chain exp(E_r - G_i) = exp(E_r - G_{i+1}) exp(G_{i+1} - G_i) gives the
// others with no exponential of their own, every factor exp(<= 0). The per-channel decays of the
// queries, the keys and the state, exp(G_r), exp(G_C - G_r) and exp(G_C), are products of the same
// steps exp(G_r - G_{r-1}).
//
// DeltaProduct, which writes n pairs per token, runs the same form over the sequence of pairs:
// the token's decay enters at its first pair, and its query reads after its last.
#pragma once

#include <limits>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "miras/algorithm/gradient_step.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/layer/options.hpp"
#include "miras/layer/small_product.hpp"
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

/// Whether the options of a matrix memory allow a chunked form that takes one write per token:
/// identity features, the read after the write and one pair per token.
template <class L>
bool reads_after_one_write(const L& layer) {
    return layer.options().read == ReadTiming::after_write &&
           layer.memory().features.kind == FeatureKind::identity && layer.dims().steps_per_token == 1;
}

/// Copies the rows of tokens [start, start + n) of sequence b and head h into Q (times `scale`),
/// Kc and Vc, for the chunked forms that take one write per token, and returns whether every value
/// read is finite.
template <class S>
bool load_chunk(const Inputs<S>& inputs, Index b, Index h, Index H, Index T, Index start, Index n, S scale,
                Mat<S>& Q, Mat<S>& Kc, Mat<S>& Vc) {
    const Index K = Q.cols(), V = Vc.cols();
    bool finite = true;
    for (Index r = 0; r < n; ++r) {
        const Index row = (b * T + start + r) * H + h;
        finite &= scale_into_finite(inputs.q.data() + row * K, K, scale, &Q(r, 0));
        finite &= scale_into_finite(inputs.k.data() + row * K, K, S(1), &Kc(r, 0));
        finite &= scale_into_finite(inputs.v.data() + row * V, V, S(1), &Vc(r, 0));
    }
    return finite;
}

/// Sets `row` to the K values of a gate with a value per channel, or to its one value K times.
template <class S, class Row>
void set_row(const GateValues<S>& values, Row&& row) {
    if (values.scalar()) row.setConstant(values[0]);
    else row = Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(values.data, row.size());
}

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
        if (options.read != ReadTiming::after_write) return false;
        if (layer.memory().features.kind != FeatureKind::identity) return false;
        if constexpr (std::is_same_v<Bias, L2Bias>) {
            if (layer.bias().subtract_key) return false;
        }
        const GradientStep& step = layer.algorithm();
        if (step.rate.axis != Axis::head) return false;
        if constexpr (std::is_same_v<Retention, DecayRetention>) {
            const Axis axis = layer.retention().gate.axis;
            if (axis != Axis::head && axis != Axis::key) return false;
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

/// Adds the reads within a chunk of n rows with a decay per head to O, O += (mask * Q K^T) U, and
/// moves the transposed state (K x V) to the chunk's end, W^T <- exp(G_n) W^T + K^T diag(exp(G_n -
/// G)) U. `Kt` is K^T (K x n), and `mask` contains exp(G_r - G_i) for i <= r (decay_mask with the
/// diagonal). `scores` and `scaled_keys` are workspace of at least n x n and n x K.
template <class S, class QRows, class KRows, class KtColumns, class URows, class ORows>
void finish_chunk_per_head(const QRows& Qn, const KRows& Kn, const KtColumns& Kt, const URows& Un, const Vec<S>& G,
                           Index n, const Mat<S>& mask, Mat<S>& scores, Mat<S>& scaled_keys, Mat<S>& Wt, ORows On) {
    auto P = scores.topLeftCorner(n, n);
    multiply_into(Qn, Kt, P, /*accumulate=*/false);
    P.array() *= mask.topLeftCorner(n, n).array();
    multiply_into(P, Un, On, /*accumulate=*/true);
    const S last = G[n - 1];
    auto Wn = scaled_keys.topRows(n);
    for (Index r = 0; r < n; ++r) Wn.row(r) = math::exp(last - G[r]) * Kn.row(r);
    scale_and_add_transpose_product(Wn, Un, S(math::exp(last)), Wt);
}

/// The per-channel decay factors of a chunk of n rows with cumulative log-decays G (rows of K):
/// steps(r) = exp(G_r - G_{r-1}) with G_{-1} = 0, the decay of token r; from_start(r) = exp(G_r),
/// the product of steps 0 to r; to_end(r) = exp(G_{n-1} - G_r), the product of steps r + 1 to
/// n - 1. One exponential per entry, each of an exponent <= 0, and the other factors products of
/// them.
template <class S>
struct ChannelDecays {
    Mat<S> steps, from_start, to_end;

    void compute(const Mat<S>& G, Index n) {
        const Index K = G.cols();
        steps.resize(std::max(steps.rows(), n), K);
        from_start.resize(steps.rows(), K);
        to_end.resize(steps.rows(), K);
        steps.row(0) = G.row(0).array().exp();
        for (Index r = 1; r < n; ++r) steps.row(r) = (G.row(r) - G.row(r - 1)).array().exp();
        from_start.row(0) = steps.row(0);
        for (Index r = 1; r < n; ++r) from_start.row(r) = from_start.row(r - 1).cwiseProduct(steps.row(r));
        to_end.row(n - 1).setOnes();
        for (Index r = n - 1; r-- > 0;) to_end.row(r) = to_end.row(r + 1).cwiseProduct(steps.row(r + 1));
    }
};

/// The state that row r of the left operand of decayed_products reads: the one after token r's
/// decay, at the cumulative log-decay G[r], or the one before it, at G[r - 1] (G[-1] = 0), as the
/// predictions of a gradient taken before the decay do.
enum class ReadsAt { after_decay, before_decay };

/// Workspace of decayed_products.
template <class S>
struct DecayedProductScratch {
    Mat<S> Y_hat, X_hat, scaled;
    Eigen::Array<S, 1, Eigen::Dynamic> bridge, decayed_row;
};

/// Sets out[r, i] = sum_c X[r, c] Y[i, c] exp(R[r, c] - G[i, c]) for i < r (i <= r with
/// include_diagonal, which needs ReadsAt::after_decay) and 0 above, for the first n rows. G
/// contains cumulative log-decays (each row <= the one before) and R[r] is G[r] or G[r - 1] as `at`
/// selects, so every exponent taken is <= 0. `steps` contains exp(G[r] - G[r - 1]) (ChannelDecays).
/// Reading after the decay, R[r] - G[r] is zero and R[r] - G[r - 1] a step, so a row takes no
/// exponential of its own. X, Y, G and steps are row-major with K columns.
template <class S>
void decayed_products(const Mat<S>& X, ReadsAt at, const Mat<S>& Y, const Mat<S>& G, const Mat<S>& steps, Index n,
                      bool include_diagonal, DecayedProductScratch<S>& scratch, Mat<S>& out) {
    eigen_assert(!(include_diagonal && at == ReadsAt::before_decay));
    constexpr Index block = 16;
    const Index K = X.cols();
    const bool after = at == ReadsAt::after_decay;
    auto result = out.topLeftCorner(n, n);
    result.setZero();
    Mat<S>& Y_hat = scratch.Y_hat;
    if (Y_hat.rows() < n || Y_hat.cols() != K) Y_hat.resize(n, K);
    scratch.X_hat.resize(block, K);
    scratch.bridge.resize(K);
    scratch.decayed_row.resize(K);
    // Y_hat[i] = Y[i] exp(G_e - G[i]) with e the last row of i's sub-block, for the sub-blocks
    // that a later one reads (all but the last, so each is full).
    for (Index first = 0; first + block < n; first += block) {
        const Index last = first + block - 1;
        for (Index i = first; i <= last; ++i) {
            Y_hat.row(i) = Y.row(i).array() * (G.row(last) - G.row(i)).array().exp();
        }
    }
    auto X_hat = scratch.X_hat.array();
    auto& decayed_row = scratch.decayed_row;
    for (Index first = 0; first < n; first += block) {
        const Index rows = std::min(block, n - first);
        // X_hat[r] = X[r] exp(R[r] - G_f) with f = first - 1, the row before this sub-block, for the
        // products with earlier sub-blocks.
        for (Index r = 0; first > 0 && r < rows; ++r) {
            const Index reads = after ? first + r : first + r - 1;
            X_hat.row(r) = X.row(first + r).array() * (G.row(reads) - G.row(first - 1)).array().exp();
        }
        for (Index other = 0; other < first; other += block) {
            const Index e = other + block - 1;
            scratch.bridge = (G.row(first - 1) - G.row(e)).array().exp();
            scratch.scaled = (X_hat.topRows(rows).rowwise() * scratch.bridge).matrix();
            result.block(first, other, rows, block).noalias() = scratch.scaled * Y_hat.middleRows(other, block).transpose();
        }
        // Within the sub-block, x_r exp(R[r] - G[i]) for i = r - 1 down to `first` by the chain
        // x_r exp(R[r] - G[i]) = x_r exp(R[r] - G[i + 1]) exp(G[i + 1] - G[i]): a product per pair,
        // every factor exp(<= 0). Reading before the decay, R[r] - G[r - 1] is zero.
        for (Index r = first; r < first + rows; ++r) {
            if (include_diagonal) result(r, r) = (X.row(r).array() * Y.row(r).array()).sum();
            if (r == first) continue;
            if (after) {
                decayed_row = X.row(r).array() * steps.row(r).array();
            } else {
                decayed_row = X.row(r).array();
            }
            result(r, r - 1) = (decayed_row * Y.row(r - 1).array()).sum();
            for (Index i = r - 2; i >= first; --i) {
                decayed_row *= steps.row(i + 1).array();
                result(r, i) = (decayed_row * Y.row(i).array()).sum();
            }
        }
    }
}

/// The findings of forward_heads_chunked: whether every input it checked is valid (q, k and v
/// finite, the gates with a value per channel in range) and whether the outputs it wrote are
/// finite. It checks inputs only when asked to, and it stops at the first chunk that fails.
struct ChunkedChecks {
    bool inputs_valid = true;
    bool outputs_finite = true;
};

/// The states of heads [first_head, last_head) of sequence b, transposed (K x V) for a chunked run
/// and written back by store().
template <class S, class HeadStates>
class TransposedStates {
public:
    TransposedStates(HeadStates& heads, Index b, Index H, Index first_head, Index last_head)
        : heads_(heads), first_(b * H + first_head), first_head_(first_head),
          states_(static_cast<std::size_t>(last_head - first_head)) {
        for (std::size_t i = 0; i < states_.size(); ++i) states_[i] = heads_[first_ + i].memory.transpose();
    }

    /// The transposed state of head h.
    Mat<S>& operator[](Index h) { return states_[static_cast<std::size_t>(h - first_head_)]; }

    /// Writes every state back to its head in the layer's orientation (V x K).
    void store() const {
        for (std::size_t i = 0; i < states_.size(); ++i) heads_[first_ + i].memory = states_[i].transpose();
    }

private:
    HeadStates& heads_;
    std::size_t first_;
    Index first_head_;
    std::vector<Mat<S>> states_;
};

/// Runs heads [first_head, last_head) of sequence b chunk by chunk, updating each head's state
/// (heads[b * H + h].memory) in place. Every head takes the chunk before any head takes the next,
/// because the rows of one token lie side by side for all heads in q, k, v and the output. So the
/// heads of one chunk share the same pages, where one head alone would touch a new page per token.
/// The states run transposed (K x V), so that the reads S W^T = S (W^T) and the writes
/// W^T += K^T U both stream rows of W^T with no operand transposed.
///
/// With `check_inputs`, each head checks its rows of q, k and v finite as it copies them, in the
/// same pass, and the rows of `gate_rows` (gates with a value per channel) in their ranges. The run
/// stops at the first chunk with a non-finite value and returns without writing the states back
/// (the heads before it in the chunk updated only their transposed copies), and the caller restores
/// the states of the other groups. Every output row written is checked finite too, and the caller
/// names the first non-finite one.
template <class S, class L, class RetentionBound, class AlgorithmBound, class HeadStates>
ChunkedChecks forward_heads_chunked(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                                    const AlgorithmBound& algorithm_gates, Index b, Index first_head, Index last_head,
                                    Index T, HeadStates& heads, S* output, bool check_inputs,
                                    const std::vector<ChannelGateRows<S>>& gate_rows) {
    using Bias = typename L::bias_type;
    using Retention = typename L::retention_type;
    constexpr bool delta = std::is_same_v<Bias, L2Bias>;
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const Index C = layer.options().chunk_size;
    // DeltaProduct writes `steps` pairs per token: the rows of a chunk are pairs, the decay acts at
    // a token's first pair and the query reads after its last.
    const Index steps = layer.dims().steps_per_token, pairs = T * steps;
    const S scale = S(layer.query_scale());
    const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;
    const bool read_key = delta && layer.algorithm().separate_read_key;
    bool channel = false;
    if constexpr (std::is_same_v<Retention, DecayRetention>) channel = layer.retention().gate.axis == Axis::key;

    Mat<S> Q(C, K), Kc(C, K), Pc(read_key ? C : 0, K), Vc(C, V), A(C, C), U(C, V), Wk(C, K), mask(C, C);
    // The rows that read the chunk's start state W_0, stacked so that one product reads W_0 once:
    // the decayed predictions eta exp(E) P (delta rule) above the decayed queries exp(G) Q.
    const Index reads_of_start = delta ? 2 * C : C;
    Mat<S> stacked(reads_of_start, K), from_start(reads_of_start, V);
    Vec<S> G(C), E(C), eta(C);
    // Per-channel decay: cumulative log-decays per key channel.
    Mat<S> Gm(channel ? C : 0, K);
    DecayedProductScratch<S> products;
    ChannelDecays<S> decays;
    Vec<S> end_decay(channel ? K : 0);
    // K^T of the chunk, and the transposed states of the heads.
    Mat<S> Kt(K, C);
    TransposedStates<S, HeadStates> states(heads, b, H, first_head, last_head);
    ChunkedChecks checks;

    for (Index start = 0; start < pairs; start += C) {
        const Index n = std::min(C, pairs - start);
        for (Index h = first_head; h < last_head; ++h) {
            Mat<S>& Wt = states[h];
            auto Qn = Q.topRows(n);
            auto Kn = Kc.topRows(n);
            auto Vn = Vc.topRows(n);
            bool finite = true;
            for (Index r = 0; r < n; ++r) {
                const Index step = start + r, t = step / steps, pair = step % steps;
                const Index row = (b * pairs + step) * H + h;
                if (pair == steps - 1) {
                    finite &= scale_into_finite(inputs.q.data() + ((b * T + t) * H + h) * K, K, scale, &Qn(r, 0));
                } else {
                    Qn.row(r).setZero();
                }
                finite &= scale_into_finite(inputs.k.data() + row * K, K, S(1), &Kn(r, 0));
                finite &= scale_into_finite(inputs.v.data() + row * V, V, S(1), &Vn(r, 0));
                if (read_key) set_row(algorithm_gates.p.at(b, step, h), Pc.row(r));
                const GateValues<S> g = layer.retention().log_decay(retention_gates, b, t, h);
                if (channel) {
                    // A token's decay enters at its first pair.
                    auto Gr = Gm.row(r);
                    if (pair == 0) set_row(g, Gr);
                    else Gr.setZero();
                    if (r > 0) Gr += Gm.row(r - 1);
                } else {
                    const S previous = r == 0 ? S(0) : G[r - 1];
                    G[r] = previous + (pair == 0 ? g[0] : S(0));
                    E[r] = gradient_first ? previous : G[r];
                }
                eta[r] = algorithm_gates.eta.at(b, step, h)[0];
                finite &= detail::channel_gates_in_range(gate_rows, b, t, step, h);
            }
            if (check_inputs && !finite) {
                checks.inputs_valid = false;
                return checks;
            }
            // The keys the predictions read: p for Comba, else k.
            const auto Pn = read_key ? Pc.topRows(n) : Kc.topRows(n);

            // Rows [0, n) of `stacked`: diag(eta) (P * exp(E)); rows [m, m + n): Q * exp(G), with m = n
            // for the delta rule and 0 for the dot product.
            const Index m = delta ? n : 0;
            if (channel) decays.compute(Gm, n);
            if constexpr (delta) {
                if (channel) {
                    // exp(E_r) is exp(G_r), or exp(G_{r-1}) when the gradient comes before the decay.
                    for (Index r = 0; r < n; ++r) {
                        if (!gradient_first) {
                            stacked.row(r) = eta[r] * Pn.row(r).cwiseProduct(decays.from_start.row(r));
                        } else if (r > 0) {
                            stacked.row(r) = eta[r] * Pn.row(r).cwiseProduct(decays.from_start.row(r - 1));
                        } else {
                            stacked.row(r) = eta[r] * Pn.row(r);
                        }
                    }
                } else {
                    for (Index r = 0; r < n; ++r) stacked.row(r) = (eta[r] * math::exp(E[r])) * Pn.row(r);
                }
            }
            if (channel) {
                stacked.middleRows(m, n) = Qn.cwiseProduct(decays.from_start.topRows(n));
            } else {
                for (Index r = 0; r < n; ++r) stacked.row(m + r) = math::exp(G[r]) * Qn.row(r);
            }
            multiply_into(stacked.topRows(m + n), Wt, from_start.topRows(m + n), /*accumulate=*/false);
            auto Kt_n = Kt.leftCols(n);
            transpose_into(Kc.data(), n, K, K, Kt.data(), C);

            // U = (I + A)^{-1} (diag(eta) V - diag(eta) (P * exp(E)) W_0^T).
            auto Un = U.topRows(n);
            Un.noalias() = eta.head(n).asDiagonal() * Vn;
            if constexpr (delta) {
                auto An = A.topLeftCorner(n, n);
                if (channel) {
                    // Predictions read at G itself unless the gradient comes before the decay.
                    decayed_products(Pc.rows() > 0 ? Pc : Kc, gradient_first ? ReadsAt::before_decay : ReadsAt::after_decay,
                                     Kc, Gm, decays.steps, n, /*include_diagonal=*/false, products, A);
                } else {
                    multiply_into(Pn, Kt_n, An, /*accumulate=*/false);
                    decay_mask(E, G, n, /*include_diagonal=*/false, mask);
                    An.array() *= mask.topLeftCorner(n, n).array();
                }
                Un -= from_start.topRows(n);
                An = eta.head(n).asDiagonal() * An;
                solve_unit_lower_in_place(An, Un);
            }

            // O = (Q * exp(G)) W_0^T + (decayed Q K^T, lower triangle with the diagonal) U, and
            // W_C^T = exp(G_C) W_0^T + (K * exp(G_C - G))^T U, the exponentials per channel or per head.
            auto On = from_start.middleRows(m, n);
            if (channel) {
                decayed_products(Q, ReadsAt::after_decay, Kc, Gm, decays.steps, n, /*include_diagonal=*/true, products, A);
                multiply_into(A.topLeftCorner(n, n), Un, On, /*accumulate=*/true);
                auto Wn = Wk.topRows(n);
                Wn = Kn.cwiseProduct(decays.to_end.topRows(n));
                end_decay = decays.from_start.row(n - 1).transpose();
                scale_rows_and_add_transpose_product(Wn, Un, end_decay, Wt);
            } else {
                decay_mask(G, G, n, /*include_diagonal=*/true, mask);
                finish_chunk_per_head(Qn, Kn, Kt_n, Un, G, n, mask, A, Wk, Wt, On);
            }
            for (Index r = 0; r < n; ++r) {
                const Index step = start + r;
                if (step % steps != steps - 1) continue;
                S* o = output + ((b * T + step / steps) * H + h) * V;
                for (Index c = 0; c < V; ++c) o[c] = On(r, c);
                checks.outputs_finite = checks.outputs_finite && all_finite(o, V);
            }
        }
    }
    states.store();
    if constexpr (std::is_same_v<Retention, NoRetention>) (void)retention_gates;
    return checks;
}

}  // namespace detail
}  // namespace miras
