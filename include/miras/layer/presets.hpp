// Published models as points of the algebra: type aliases and constructors with the published
// parameterisation. Gates named here are per-token inputs unless the model fixes them:
//   g     log-decay (<= 0)          eta   inner learning rate / delta strength
//   beta  least-squares strength    lambda ridge of the least-squares solve
//   p     read key of Comba         a, b  removal key and replacement direction of RWKV-7
// Sources: flash-linear-attention naive references (linear attention, RetNet, GLA, simple GLA,
// HGRN2, DeltaNet, Gated DeltaNet, KDA, Comba, DPLR, MesaNet), Longhorn's official kernel, and the
// Miras/Atlas tables for the algebraic form of each.
#pragma once

#include <cmath>

#include "miras/algorithm/generalized_delta.hpp"
#include "miras/algorithm/gradient_step.hpp"
#include "miras/algorithm/implicit_step.hpp"
#include "miras/algorithm/least_squares.hpp"
#include "miras/algorithm/nonparametric.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/bias/l2.hpp"
#include "miras/layer/layer.hpp"
#include "miras/memory/kv_cache.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/memory/vector.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"

namespace miras::presets {

using LinearAttention = Layer<MatrixMemory, DotProductBias, NoRetention, GradientStep>;
using DecayedLinearAttention = Layer<MatrixMemory, DotProductBias, DecayRetention, GradientStep>;
using ElementwiseLinearRnn = Layer<VectorMemory, DotProductBias, DecayRetention, GradientStep>;
using DeltaNet = Layer<MatrixMemory, L2Bias, NoRetention, GradientStep>;
using GatedDeltaNet = Layer<MatrixMemory, L2Bias, DecayRetention, GradientStep>;
using Rwkv7 = Layer<MatrixMemory, L2Bias, DecayRetention, GeneralizedDelta>;
using Longhorn = Layer<MatrixMemory, L2Bias, NoRetention, ImplicitStep>;
using MesaNet = Layer<MatrixMemory, L2Bias, DecayRetention, LeastSquares>;
using SoftmaxAttention = Layer<KVCacheMemory, L2Bias, NoRetention, NonParametric>;

inline DecayRetention per_token_decay(Axis axis, Placement placement = Placement::decay_then_gradient) {
    return DecayRetention{GateConfig::input(axis), placement};
}

inline GradientStep unit_step() { return GradientStep{GateConfig::constant(1.0)}; }
inline GradientStep per_token_step() { return GradientStep{GateConfig::input(Axis::head)}; }

/// Linear attention: W_t = W_{t-1} + v k^T.
inline LinearAttention linear_attention(LayerOptions options) {
    return LinearAttention(options, {}, {}, {}, unit_step());
}

/// RetNet: W_t = gamma_h W_{t-1} + v k^T with the fixed per-head decay gamma_h = 1 - 2^(-5-h).
inline DecayedLinearAttention retnet(LayerOptions options) {
    std::vector<double> g;
    for (Index h = 0; h < options.heads; ++h) g.push_back(std::log1p(-std::exp2(-5.0 - static_cast<double>(h))));
    return DecayedLinearAttention(options, {}, {}, DecayRetention{GateConfig::per_head(g)}, unit_step());
}

/// Lightning attention: fixed per-head log-decay g_h = -(8 / H)(1 - l / L) h for layer l of L.
inline DecayedLinearAttention lightning_attention(LayerOptions options, int layer = 0, int layers = 1) {
    std::vector<double> g;
    const double depth = 1.0 - static_cast<double>(layer) / static_cast<double>(layers);
    for (Index h = 0; h < options.heads; ++h) {
        g.push_back(-(8.0 / static_cast<double>(options.heads)) * depth * static_cast<double>(h));
    }
    return DecayedLinearAttention(options, {}, {}, DecayRetention{GateConfig::per_head(g)}, unit_step());
}

/// Mamba2 (scalar decay): W_t = exp(g_t) W_{t-1} + v k^T with one data-dependent g_t per head
/// (g = Delta A, k = B, q = C, v = Delta x); also simple GLA.
inline DecayedLinearAttention mamba2(LayerOptions options) {
    return DecayedLinearAttention(options, {}, {}, per_token_decay(Axis::head), unit_step());
}

/// GLA: W_t = W_{t-1} diag(exp(g_t)) + v k^T with a per-key-channel log-decay.
inline DecayedLinearAttention gla(LayerOptions options) {
    return DecayedLinearAttention(options, {}, {}, per_token_decay(Axis::key), unit_step());
}

/// HGRN2: GLA whose key is 1 - exp(g_t) (see hgrn2_keys).
inline DecayedLinearAttention hgrn2(LayerOptions options) { return gla(options); }

/// The keys of HGRN2: k = 1 - f with the forget gate f = exp(g), elementwise.
template <class S>
Tensor<S> hgrn2_keys(const TensorView<S>& g) {
    Tensor<S> k(g.shape());
    for (Index i = 0; i < g.size(); ++i) k[i] = S(1) - math::exp(g.data()[i]);
    return k;
}

/// HGRN-style vector memory: h_t = exp(g_t) * h_{t-1} + x_t with q = k = 1 and v = x.
inline ElementwiseLinearRnn elementwise_linear_rnn(LayerOptions options) {
    return ElementwiseLinearRnn(options, {}, {}, per_token_decay(Axis::key), unit_step());
}

/// DeltaNet: W_t = W_{t-1} - eta_t (W_{t-1} k - v) k^T.
inline DeltaNet deltanet(LayerOptions options) { return DeltaNet(options, {}, {}, {}, per_token_step()); }

/// Gated DeltaNet: decay, then the delta step on the decayed state.
inline GatedDeltaNet gated_deltanet(LayerOptions options) {
    return GatedDeltaNet(options, {}, {}, per_token_decay(Axis::head), per_token_step());
}

/// Per-channel gated delta rule (KDA): the decay of Gated DeltaNet per key channel.
inline GatedDeltaNet kda(LayerOptions options) {
    return GatedDeltaNet(options, {}, {}, per_token_decay(Axis::key), per_token_step());
}

/// Comba: Gated DeltaNet whose prediction reads a separate key p: W_t = W' - eta (W' p - v) k^T.
inline GatedDeltaNet comba(LayerOptions options) {
    GradientStep step = per_token_step();
    step.separate_read_key = true;
    return GatedDeltaNet(options, {}, {}, per_token_decay(Axis::head), step);
}

/// DeltaProduct: `steps` delta steps per token after one decay; k, v and eta carry T * steps entries.
inline GatedDeltaNet deltaproduct(LayerOptions options, Index steps) {
    options.steps_per_token = steps;
    return GatedDeltaNet(options, {}, {}, per_token_decay(Axis::head), per_token_step());
}

/// RWKV-7: W_t = W_{t-1} diag(exp(g_t)) + (W_{t-1} a) b^T + v k^T, with a = -kappa and
/// b = kappa * a_rate; RWKV-7 layers use a query scale of 1.
inline Rwkv7 rwkv7(LayerOptions options) {
    if (!options.query_scale) options.query_scale = 1.0;
    return Rwkv7(options, {}, {}, per_token_decay(Axis::key, Placement::gradient_then_decay), GeneralizedDelta{});
}

/// Longhorn: the implicit l2 step with a per-value-channel strength beta; `diagonal` selects the
/// diagonal approximation of the official kernel, otherwise the exact closed form.
inline Longhorn longhorn(LayerOptions options, bool diagonal = true) {
    return Longhorn(options, {}, {}, {}, ImplicitStep{GateConfig::input(Axis::value), diagonal});
}

/// MesaNet: exact ridge least squares with per-head decay and strength and a fixed per-key-channel
/// ridge lambda (flash-linear-attention initialises lambda to 1). No query scaling.
inline MesaNet mesanet(LayerOptions options, std::vector<double> lambda = {1.0},
                       LinearSolver solver = LinearSolver::exact, int cg_iterations = 30) {
    if (!options.query_scale) options.query_scale = 1.0;
    LeastSquares algorithm{GateConfig::input(Axis::head), GateConfig{Axis::key, false, std::move(lambda)}, solver,
                           cg_iterations};
    return MesaNet(options, {}, {}, per_token_decay(Axis::head), algorithm);
}

/// Softmax attention: the kv cache read by the Nadaraya-Watson estimator.
inline SoftmaxAttention softmax_attention(LayerOptions options) { return SoftmaxAttention(options); }

/// Sliding-window attention over the last `window` tokens.
inline SoftmaxAttention sliding_window_attention(LayerOptions options, Index window) {
    return SoftmaxAttention(options, KVCacheMemory{{}, window});
}

}  // namespace miras::presets
