// Mini-batch gradient descent on an MLP memory as matrix products. This is the dual form of TTT
// (Sun et al., 2024), which the official TTT code applies layer by layer. Here it covers any depth,
// biases, a LayerNorm on the branch, a residual, any attentional bias, inner gradient clipping,
// and no retention or a decay per head. It covers MiniBatchGD and the momentum of Titans
// (Momentum without the Omega window and Newton-Schulz step of Atlas). It returns the numbers of
// their token loops, reordered.
//
// Within a mini-batch of n tokens every gradient G_j is taken at the start weights W0, and the
// weights after token i are W_i = s_i W0 - sum_{j<=i} C[i, j] G_j with
//   per_token    s_i = exp(Gc_i - Gc_0) (decay first, W0 already decayed) or exp(Gc_i) (gradient
//                first), C[i, j] = eta_j exp(Gc_i - Gc_j), Gc the cumulative log-decays;
//   query_token  s_i = 1, C[i, j] = eta_i;
//   factored     s_i = 1, C[i, j] = f[i] eta_j;
//   momentum     as per_token, plus m_i S for the momentum S carried in, with C from its recurrence.
// The gradient of layer l for token j is delta_lj h_lj^T (and delta_lj for its bias), with h_lj the
// layer's input and delta_lj the backpropagated error at W0. So layer l of the read at W_i is
//   z_l(u_i) = s_i (W0_l u_i + b0_l) - sum_{j<=i} C[i, j] (h_lj . u_i + 1) delta_lj
// (the 1 only with biases), which for the whole mini-batch is the products
//   Z_l = diag(s) (U_l W0_l^T + 1 b0_l^T) - (C * (U_l H_l^T + 1)) Delta_l.
// The key side (H_l, Delta_l) is one forward and one backward pass of the n keys through W0.
// Every exponent Gc_i - Gc_j with j <= i is <= 0.
#pragma once

#include <cmath>
#include <numbers>
#include <type_traits>
#include <vector>

#include <unsupported/Eigen/SpecialFunctions>

#include "miras/algorithm/context.hpp"
#include "miras/algorithm/minibatch_gd.hpp"
#include "miras/algorithm/momentum.hpp"
#include "miras/layer/options.hpp"
#include "miras/layer/small_product.hpp"
#include "miras/memory/layer_norm.hpp"
#include "miras/memory/mlp.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"

namespace miras::detail {

template <class Memory, class Retention, class Algorithm>
inline constexpr bool minibatch_mlp_types_v =
    std::is_same_v<Memory, MlpMemory> && (std::is_same_v<Algorithm, MiniBatchGD> || std::is_same_v<Algorithm, Momentum>) &&
    (std::is_same_v<Retention, NoRetention> || std::is_same_v<Retention, DecayRetention>);

/// Whether a layer of these types runs its mini-batches in the matrix form with its run-time
/// options: reads after the write, one pair per token, the plain (not gated) branch, mini-batches
/// of two or more tokens and a decay, if any, per head.
template <class L>
bool minibatch_mlp_exact(const L& layer) {
    using Retention = typename L::retention_type;
    if constexpr (!minibatch_mlp_types_v<typename L::memory_type, Retention, typename L::algorithm_type>) {
        return false;
    } else {
        if (layer.options().read != ReadTiming::after_write || layer.dims().steps_per_token != 1) return false;
        if (layer.memory().gated || layer.algorithm().minibatch_size < 2) return false;
        if constexpr (std::is_same_v<typename L::algorithm_type, Momentum>) {
            // The Omega window and the Newton-Schulz step of Atlas have no matrix form here.
            if (layer.algorithm().window != 1 || layer.algorithm().newton_schulz_steps != 0) return false;
        }
        if constexpr (std::is_same_v<Retention, DecayRetention>) {
            if (layer.retention().gate.axis != Axis::head) return false;
        }
        return true;
    }
}

/// Applies the activation to every entry of z into `value` and, when given, its derivative into
/// `derivative`. For float and double the formulas of activation.hpp run on whole arrays, with
/// Eigen's vectorised tanh, exp and erf, and one tanh (or erf) serves both the value and the
/// derivative. In float, Eigen's erf is its own rational approximation, a few units in the last
/// place from std::erf of the token loop. In double, it calls std::erf.
template <class S>
void activate_all(Activation activation, const Mat<S>& z, Mat<S>& value, Mat<S>* derivative) {
    if constexpr (std::is_floating_point_v<S>) {
        const auto x = z.array();
        switch (activation) {
            case Activation::gelu_tanh: {
                const S c = S(std::sqrt(2.0 / std::numbers::pi)), cubic = S(0.044715);
                const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> t =
                    (c * (x + cubic * x * x * x)).tanh();
                value = (S(0.5) * x * (S(1) + t)).matrix();
                if (derivative) {
                    *derivative = (S(0.5) * (S(1) + t) +
                                   S(0.5) * x * (S(1) - t * t) * c * (S(1) + S(3) * cubic * x * x))
                                      .matrix();
                }
                return;
            }
            case Activation::tanh: {
                value = x.tanh().matrix();
                if (derivative) *derivative = (S(1) - value.array().square()).matrix();
                return;
            }
            case Activation::silu: {
                const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sigma = S(1) / (S(1) + (-x).exp());
                value = (x * sigma).matrix();
                if (derivative) *derivative = (sigma * (S(1) + x * (S(1) - sigma))).matrix();
                return;
            }
            case Activation::gelu: {
                const Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> cdf =
                    S(0.5) * (S(1) + (x * S(1.0 / std::numbers::sqrt2)).erf());
                value = (x * cdf).matrix();
                if (derivative) {
                    *derivative = (cdf + x * (S(-0.5) * x * x).exp() * S(1.0 / std::sqrt(2.0 * std::numbers::pi))).matrix();
                }
                return;
            }
            case Activation::relu:
            case Activation::identity: break;
        }
    }
    value = z.unaryExpr([activation](const S& x) { return activate(activation, x); });
    if (derivative) *derivative = z.unaryExpr([activation](const S& x) { return activate_derivative(activation, x); });
}

/// Whether the rates act token by token (W_i = a_i W_{i-1} - eta_i G_i).
inline bool algorithm_form_is_per_token(const MiniBatchGD& algorithm) { return algorithm.form == MiniBatchRate::per_token; }
inline bool algorithm_form_is_per_token(const Momentum&) { return true; }

/// Runs the full mini-batch of tokens [first, first + n) of sequence b, head h, whose state starts
/// a new mini-batch (position 0), and writes its outputs.
template <class S, class L, class RetentionBound, class AlgorithmBound, class HeadState>
void forward_minibatch_mlp(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                           const AlgorithmBound& algorithm_gates, const void* bias_gates, Index b, Index h, Index T,
                           Index first, HeadState& head, S* output) {
    using Retention = typename L::retention_type;
    using Algorithm = typename L::algorithm_type;
    constexpr bool decays = std::is_same_v<Retention, DecayRetention>;
    constexpr bool momentum = std::is_same_v<Algorithm, Momentum>;
    const MlpMemory& memory = layer.memory();
    const Algorithm& algorithm = layer.algorithm();
    const Retention& retention = layer.retention();
    const LayerDims& dims = layer.dims();
    const Index H = dims.heads, K = dims.key, V = dims.value, D = dims.key_features;
    const Index n = algorithm.minibatch_size;
    const auto depth = static_cast<Index>(head.memory.weights.size());
    const bool biases = memory.biases;
    const S scale = S(layer.query_scale());
    auto& W = head.memory;
    auto& state = head.algorithm;

    // Log-decays and their cumulative sums, rates, and for momentum the gradient weights gamma and
    // the momentum factors theta = exp(theta gate) (0 without momentum).
    Vec<S> log_decay(n), cumulative(n), eta(n), gamma = Vec<S>::Ones(n), theta = Vec<S>::Zero(n);
    S running = S(0);
    for (Index i = 0; i < n; ++i) {
        const Index t = first + i;
        log_decay[i] = retention.log_decay(retention_gates, b, t, h)[0];
        running += log_decay[i];
        cumulative[i] = running;
        eta[i] = algorithm_gates.eta.at(b, t, h)[0];
        if constexpr (momentum) {
            gamma[i] = algorithm_gates.gamma.at(b, t, h)[0];
            if (algorithm.use_momentum) theta[i] = math::exp(algorithm_gates.theta.at(b, t, h)[0]);
        }
    }
    const bool decay_first = retention.placement == Placement::decay_then_gradient;
    if constexpr (decays) {
        if (decay_first) params_scale(W, math::exp(cumulative[0]));
    }
    // The start weights move into the state (the token loop keeps them there), and W receives
    // the weights after the mini-batch at the end, so no weight matrix is copied.
    state.start.weights.swap(W.weights);
    state.start.biases.swap(W.biases);
    W.weights.resize(state.start.weights.size());
    W.biases.resize(state.start.biases.size());
    state.start.norm_weight = W.norm_weight;
    state.start.norm_bias = W.norm_bias;
    const auto& W0 = state.start;

    // W_i = s_i W0 + m_i S - sum_j C[i, j] G_j, with S the momentum before the mini-batch (m = 0
    // without momentum). For momentum, S_i = theta_i S_{i-1} - eta_i G_i and W_i = a_i W_{i-1} + S_i
    // give m_i = a_i m_{i-1} + theta_0 ... theta_i and C[i, j] = eta_j c_ij with c_jj = 1 and
    // c_ij = a_i c_{i-1, j} + theta_{j+1} ... theta_i; carry[j] = theta_{j+1} ... theta_{n-1}
    // weighs G_j in the momentum after the mini-batch.
    Vec<S> s = Vec<S>::Ones(n), m = Vec<S>::Zero(n), carry = Vec<S>::Zero(n);
    Mat<S> C = Mat<S>::Zero(n, n);
    const bool stepwise = momentum || algorithm_form_is_per_token(algorithm);
    for (Index i = 0; i < n; ++i) {
        if (stepwise && decays) s[i] = math::exp(cumulative[i] - (decay_first ? cumulative[0] : S(0)));
    }
    if constexpr (momentum) {
        S theta_product = S(1), previous = S(0);
        for (Index i = 0; i < n; ++i) {
            theta_product *= theta[i];
            m[i] = math::exp(log_decay[i]) * previous + theta_product;
            previous = m[i];
        }
        for (Index j = 0; j < n; ++j) {
            S c = S(1), product = S(1);
            C(j, j) = eta[j];
            for (Index i = j + 1; i < n; ++i) {
                product *= theta[i];
                c = math::exp(log_decay[i]) * c + product;
                C(i, j) = eta[j] * c;
            }
            carry[j] = product;
        }
    } else {
        for (Index i = 0; i < n; ++i) {
            for (Index j = 0; j <= i; ++j) {
                switch (algorithm.form) {
                    case MiniBatchRate::per_token: C(i, j) = eta[j] * math::exp(cumulative[i] - cumulative[j]); break;
                    case MiniBatchRate::query_token: C(i, j) = eta[i]; break;
                    case MiniBatchRate::factored:
                        C(i, j) = S(algorithm.token_factor[static_cast<std::size_t>(i)]) * eta[j];
                        break;
                }
            }
        }
    }

    // Key and query features, one row per token.
    Mat<S> X(n, D), Q(n, D);
    Vec<S> features;
    for (Index i = 0; i < n; ++i) {
        const Index row = (b * T + first + i) * H + h;
        memory.map(inputs.k.data() + row * K, K, features);
        X.row(i) = features.transpose();
        memory.map(inputs.q.data() + row * K, K, features);
        Q.row(i) = scale * features.transpose();
    }

    // Key side at W0: layer inputs H_l, pre-activations Z_l and the activation's derivative at Z_l.
    const auto layers = static_cast<std::size_t>(depth);
    std::vector<Mat<S>> inputs_at_start(layers), pre(layers), slopes(layers);
    PacketProductScratch<S> scratch;
    inputs_at_start[0] = X;
    for (Index l = 0; l < depth; ++l) {
        const auto ul = static_cast<std::size_t>(l);
        multiply_by_transpose(inputs_at_start[ul], W0.weights[ul], pre[ul], scratch);
        if (biases) pre[ul].rowwise() += W0.biases[ul].transpose();
        if (l + 1 < depth) activate_all(memory.activation, pre[ul], inputs_at_start[ul + 1], &slopes[ul]);
    }

    // The bias's gradient dl/dy at each prediction y_j = [x_j +] N(r_j), taken back through N.
    Mat<S> errors(n, V);
    {
        Vec<S> r, normed, y, dy, dr, x;
        LayerNormCache<S> cache;
        for (Index j = 0; j < n; ++j) {
            const Index t = first + j, row = (b * T + t) * H + h;
            r = pre.back().row(j).transpose();
            if (memory.norm == MlpNorm::none) normed = r;
            else layer_norm(r, W.norm_weight, W.norm_bias, S(memory.norm_eps), cache, normed);
            x = X.row(j).transpose();
            y = memory.residual ? Vec<S>(x + normed) : normed;
            const WriteContext<MlpMemory, typename L::bias_type, Retention, S> ctx{
                memory, layer.bias(), retention, retention_gates, dims, b, h, t, t, true,
                inputs.k.data() + row * K, inputs.v.data() + row * V, x, bias_gates};
            ctx.loss_gradient(y, dy);
            if (memory.norm == MlpNorm::none) dr = dy;
            else layer_norm_vjp(dy, W.norm_weight, cache, dr);
            errors.row(j) = dr.transpose();
        }
    }

    // Backpropagation at W0: Delta_l, the error at the output of layer l for each token.
    std::vector<Mat<S>> deltas(static_cast<std::size_t>(depth));
    for (Index l = depth; l-- > 0;) {
        const auto ul = static_cast<std::size_t>(l);
        if (l + 1 < depth) errors.array() *= slopes[ul].array();
        deltas[ul] = errors;
        if (l > 0) {
            Mat<S> below;
            multiply_rows(errors, W0.weights[ul], below);
            errors = std::move(below);
        }
    }
    if constexpr (momentum) {
        for (auto& delta : deltas) delta = gamma.asDiagonal() * delta;
    }
    if (algorithm.clip_norm > 0.0) {
        using std::sqrt;
        for (Index j = 0; j < n; ++j) {
            S squared = S(0);
            for (Index l = 0; l < depth; ++l) {
                const auto ul = static_cast<std::size_t>(l);
                squared += deltas[ul].row(j).squaredNorm() *
                           (inputs_at_start[ul].row(j).squaredNorm() + (biases ? S(1) : S(0)));
            }
            const S factor = clip_factor(S(sqrt(squared)), algorithm.clip_norm);
            if (factor != S(1)) {
                for (auto& delta : deltas) delta.row(j) *= factor;
            }
        }
    }

    // Query side: each token reads the weights W_i after its own write.
    Mat<S> U = Q, scores, Z, from_momentum;
    for (Index l = 0; l < depth; ++l) {
        const auto ul = static_cast<std::size_t>(l);
        multiply_by_transpose(U, W0.weights[ul], Z, scratch);
        if (biases) Z.rowwise() += W0.biases[ul].transpose();
        Z = s.asDiagonal() * Z;
        if constexpr (momentum) {
            multiply_by_transpose(U, state.momentum.weights[ul], from_momentum, scratch);
            if (biases) from_momentum.rowwise() += state.momentum.biases[ul].transpose();
            Z.noalias() += m.asDiagonal() * from_momentum;
        }
        scores.noalias() = U * inputs_at_start[ul].transpose();
        if (biases) scores.array() += S(1);
        scores = scores.cwiseProduct(C);
        Z.noalias() -= scores * deltas[ul];
        if (l + 1 < depth) activate_all(memory.activation, Z, U, static_cast<Mat<S>*>(nullptr));
        else U = std::move(Z);
    }
    {
        Vec<S> r, normed;
        LayerNormCache<S> cache;
        for (Index i = 0; i < n; ++i) {
            r = U.row(i).transpose();
            if (memory.norm == MlpNorm::none) normed = r;
            else layer_norm(r, W.norm_weight, W.norm_bias, S(memory.norm_eps), cache, normed);
            S* o = output + ((b * T + first + i) * H + h) * V;
            for (Index c = 0; c < V; ++c) {
                if (memory.read_adds_branch) o[c] = r[c] + normed[c];
                else o[c] = memory.residual ? Q(i, c) + normed[c] : normed[c];
            }
        }
    }

    // The weights after the last token and the rest of the state the token loop would leave. That
    // is the start W0, the sum of the (rate-weighted) gradients for the query_token and factored
    // forms, or the momentum.
    const Index last = n - 1;
    const Vec<S> weights_last = C.row(last).transpose();
    Vec<S> sum_weights = Vec<S>::Zero(n);
    if constexpr (momentum) {
        sum_weights = carry.cwiseProduct(eta);
    } else {
        if (algorithm.form == MiniBatchRate::query_token) sum_weights.setOnes();
        if (algorithm.form == MiniBatchRate::factored) sum_weights = eta;
    }
    // Each weight update scales the start weights (and adds the momentum) in one pass, then adds
    // A^T B in another, with A the errors and B the weighted layer inputs (negated for the steps).
    Mat<S> weighted_inputs;
    for (Index l = 0; l < depth; ++l) {
        const auto ul = static_cast<std::size_t>(l);
        if constexpr (momentum) {
            W.weights[ul] = s[last] * state.start.weights[ul] + m[last] * state.momentum.weights[ul];
        } else {
            W.weights[ul] = s[last] * state.start.weights[ul];
        }
        weighted_inputs.noalias() = -(weights_last.asDiagonal() * inputs_at_start[ul]);
        scale_and_add_transpose_product(deltas[ul], weighted_inputs, S(1), W.weights[ul]);
        if (biases) W.biases[ul] = s[last] * state.start.biases[ul] - deltas[ul].transpose() * weights_last;
        if constexpr (momentum) {
            weighted_inputs.noalias() = -(sum_weights.asDiagonal() * inputs_at_start[ul]);
            scale_and_add_transpose_product(deltas[ul], weighted_inputs, S(carry[0] * theta[0]), state.momentum.weights[ul]);
            if (biases) {
                W.biases[ul] += m[last] * state.momentum.biases[ul];
                state.momentum.biases[ul] = carry[0] * theta[0] * state.momentum.biases[ul] -
                                            deltas[ul].transpose() * sum_weights;
            }
        } else {
            weighted_inputs.noalias() = sum_weights.asDiagonal() * inputs_at_start[ul];
            state.sum.weights[ul].setZero(W.weights[ul].rows(), W.weights[ul].cols());
            scale_and_add_transpose_product(deltas[ul], weighted_inputs, S(0), state.sum.weights[ul]);
            if (biases) state.sum.biases[ul] = deltas[ul].transpose() * sum_weights;
        }
    }
    state.position = 0;
}

}  // namespace miras::detail
