// Reverse pass of a layer through its inner updates: the gradients of a loss with respect to q, k,
// v, every per-token gate and the initial state, given dL/do (and optionally dL/dW_T). Written for
// the linear families W_t = A - eta (dl/dy) phi(k)^T with a matrix memory, the dot-product or l2
// bias, no retention or decay, and one gradient step per token (linear attention, Mamba2, GLA,
// DeltaNet, Gated DeltaNet in both placements, KDA).
//
// Memory: the state is saved every C tokens; each segment is recomputed forward from its
// checkpoint and then reversed, so the pass keeps O(T / C + C) states per head besides the inputs.
// The second-order term of the bias (the derivative of dl/dy along the incoming gradient) comes
// from the bias's own first-order functions evaluated on dual numbers.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "miras/algorithm/gradient_step.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/bias/l2.hpp"
#include "miras/core/dual.hpp"
#include "miras/layer/layer.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"

namespace miras {

/// Gradients of one layer call. Each tensor has the shape of its input. gates
/// contains one entry per per-token gate, and initial_state is dL/dW_0 as [B, H, V, D] for a
/// memory whose state is the one matrix W (empty otherwise).
template <class S>
struct LayerGradients {
    Tensor<S> output;  ///< o [B, T, H, V], recomputed by the pass (equal to Layer::forward).
    Tensor<S> q, k, v;
    std::map<std::string, Tensor<S>> gates;
    Tensor<S> initial_state;
    /// dL/d(initial state) by name, in the layout of Layer::save_state (name -> [B, H, rows, cols]).
    /// Filled by generic_layer_backward for every memory; layer_backward leaves it empty.
    std::map<std::string, Tensor<S>> initial_state_tensors;
};

template <class L>
inline constexpr bool has_linear_backward_v = false;

template <class Bias, class Retention>
inline constexpr bool has_linear_backward_v<Layer<MatrixMemory, Bias, Retention, GradientStep>> =
    (std::is_same_v<Bias, DotProductBias> || std::is_same_v<Bias, L2Bias>) &&
    (std::is_same_v<Retention, NoRetention> || std::is_same_v<Retention, DecayRetention>);

namespace detail {

/// Sets dy_pred = d/dy <ddy, dl/dy> and dv = d/dv <ddy, dl/dy> by evaluating the bias's gradient
/// and value gradient on dual numbers with tangent ddy on y.
template <class Bias, class S>
void bias_gradient_vjp(const Bias& bias, const Vec<S>& y, const S* v, const Vec<S>& ddy, Vec<S>& dy_pred, Vec<S>& dv) {
    using D = Dual<S>;
    const Index n = y.size();
    Vec<D> yd(n), vd(n), g, gv;
    for (Index i = 0; i < n; ++i) {
        yd[i] = D(y[i], ddy[i]);
        vd[i] = D(v[i], S(0));
    }
    bias.gradient(yd, vd.data(), g);
    bias.value_gradient(yd, vd.data(), gv);
    dy_pred.resize(n);
    dv.resize(n);
    for (Index i = 0; i < n; ++i) {
        dy_pred[i] = g[i].d;
        dv[i] = gv[i].d;
    }
}

/// Adds `values` into the entries of a gate gradient at (b, t, h), laid out as the bound gate.
template <class S>
void add_gate_gradient(Tensor<S>& grad, const BoundGate<S>& gate, Index b, Index t, Index h, const Vec<S>& values) {
    S* at = grad.data() + b * gate.stride_b + t * gate.stride_t + h * gate.stride_h;
    for (Index c = 0; c < values.size(); ++c) at[c] += values[c];
}

}  // namespace detail

/// Runs the layer over `inputs` from `initial` (zero when null) and back-propagates `d_output`
/// [B, T, H, V] and, when given, `d_final_state` [B, H, V, D] through every token, saving the state
/// every `checkpoint_every` tokens. Raises ConfigError for an option the pass does not cover.
template <class L, class S>
LayerGradients<S> layer_backward(const L& layer, const Inputs<S>& inputs, const typename L::template State<S>* initial,
                                 const std::type_identity_t<TensorView<S>>& d_output,
                                 const std::type_identity_t<TensorView<S>>* d_final_state = nullptr,
                                 Index checkpoint_every = 16) {
    static_assert(has_linear_backward_v<L>,
                  "layer_backward covers the matrix memory with the dot-product or l2 bias, no retention or decay, "
                  "and the gd algorithm");
    const LayerDims& dims = layer.dims();
    const LayerOptions& options = layer.options();
    if (layer.memory().features.kind != FeatureKind::identity) {
        throw ConfigError(std::string("layer_backward needs the identity feature map; this layer uses ") +
                          feature_kind_name(layer.memory().features.kind));
    }
    if (dims.steps_per_token != 1) {
        throw ConfigError("layer_backward writes one pair per token; this layer writes " +
                          std::to_string(dims.steps_per_token));
    }
    if (layer.algorithm().separate_read_key) throw ConfigError("layer_backward does not cover separate_read_key");
    if constexpr (std::is_same_v<typename L::bias_type, L2Bias>) {
        if (layer.bias().subtract_key) throw ConfigError("layer_backward does not cover the l2 bias with subtract_key");
    }
    if (checkpoint_every < 1) {
        throw ConfigError("checkpoint_every = " + std::to_string(checkpoint_every) + " is invalid; valid is 1 or more");
    }

    // The forward pass checks q, k, v and every gate; it also gives the output to compare against.
    typename L::template State<S> start = initial != nullptr ? *initial : layer.template initial_state<S>(inputs.q.dim(0));
    {
        typename L::template State<S> scratch_state = start;
        (void)layer.forward(inputs, scratch_state);
    }

    const Index B = inputs.q.dim(0), T = inputs.q.dim(1), H = dims.heads, K = dims.key, V = dims.value;
    if (d_output.shape() != Shape{B, T, H, V}) {
        throw InputError("d_output has shape " + shape_string(d_output.shape()) + ", expected [B, T, H, V] = " +
                         shape_string({B, T, H, V}));
    }
    if (d_final_state != nullptr && d_final_state->shape() != Shape{B, H, V, K}) {
        throw InputError("d_final_state has shape " + shape_string(d_final_state->shape()) +
                         ", expected [B, H, V, D] = " + shape_string({B, H, V, K}));
    }

    const auto& memory = layer.memory();
    const auto& bias = layer.bias();
    const auto& retention = layer.retention();
    const GradientStep& algorithm = layer.algorithm();
    using Retention = typename L::retention_type;
    constexpr bool decays = std::is_same_v<Retention, DecayRetention>;

    GateBinder<S> binder(inputs, dims, B, T);
    const auto retention_gates = retention.bind(binder);
    const auto algorithm_gates = algorithm.bind(binder, dims);
    binder.check_values();
    bool decay_first = true;
    Axis decay_axis = Axis::head;
    if constexpr (decays) {
        decay_first = retention.placement == Placement::decay_then_gradient;
        decay_axis = retention.gate.axis;
    }
    const Axis rate_axis = algorithm.rate.axis;
    const bool after_write = options.read == ReadTiming::after_write;
    const S scale = S(layer.query_scale());

    LayerGradients<S> grads;
    grads.output = Tensor<S>({B, T, H, V});
    grads.q = Tensor<S>(inputs.q.shape());
    grads.k = Tensor<S>(inputs.k.shape());
    grads.v = Tensor<S>(inputs.v.shape());
    grads.initial_state = Tensor<S>({B, H, V, K});
    Tensor<S>* dg_tensor = nullptr;
    Tensor<S>* deta_tensor = nullptr;
    if constexpr (decays) {
        if (retention.gate.per_token) dg_tensor = &(grads.gates["g"] = Tensor<S>(inputs.gates.find("g")->second.shape()));
    }
    if (algorithm.rate.per_token) deta_tensor = &(grads.gates["eta"] = Tensor<S>(inputs.gates.find("eta")->second.shape()));

    // W_t from W_{t-1}: A = D(W_{t-1}), P = A (decay first) or W_{t-1}, y = P k, W_t = A - eta dl/dy k^T.
    auto step = [&](const Mat<S>& W_prev, Index b, Index t, Index h, Mat<S>& W) {
        const Vec<S> x = VecMap<S>(inputs.k.data() + ((b * T + t) * H + h) * K, K);
        const S* v = inputs.v.data() + ((b * T + t) * H + h) * V;
        W = W_prev;
        if constexpr (decays) memory.decay(W, retention.log_decay(retention_gates, b, t, h), decay_axis);
        Vec<S> y, dy;
        memory.predict(decay_first ? W : W_prev, x, y);
        bias.gradient(y, v, dy);
        const GateValues<S> eta = algorithm_gates.eta.at(b, t, h);
        if (eta.scalar()) {
            memory.add_gradient(W, S(-eta[0]), dy, x);
        } else if (rate_axis == Axis::value) {
            for (Index i = 0; i < V; ++i) dy[i] *= eta[i];
            memory.add_gradient(W, S(-1), dy, x);
        } else {
            Vec<S> scaled = x;
            for (Index j = 0; j < K; ++j) scaled[j] *= eta[j];
            memory.add_gradient(W, S(-1), dy, scaled);
        }
    };

    // dW is dL/dW_t on entry and dL/dW_{t-1} on exit. The gradients of token t are added.
    auto reverse_step = [&](const Mat<S>& W_prev, const Mat<S>& W_t, Index b, Index t, Index h, Mat<S>& dW) {
        const Index row = (b * T + t) * H + h;
        const Vec<S> x = VecMap<S>(inputs.k.data() + row * K, K);
        const S* v = inputs.v.data() + row * V;
        const Vec<S> q_scaled = VecMap<S>(inputs.q.data() + row * K, K) * scale;
        const Vec<S> d_o = VecMap<S>(d_output.data() + row * V, V);
        auto read_vjp = [&](const Mat<S>& W) {
            memory.add_gradient(dW, S(1), d_o, q_scaled);
            Vec<S> dq;
            memory.input_vjp(W, d_o, dq);
            for (Index j = 0; j < K; ++j) grads.q.data()[row * K + j] += scale * dq[j];
        };
        if (after_write) read_vjp(W_t);

        // Recompute the step's intermediates.
        Mat<S> A = W_prev;
        if constexpr (decays) memory.decay(A, retention.log_decay(retention_gates, b, t, h), decay_axis);
        const Mat<S>& P = decay_first ? A : W_prev;
        Vec<S> y, dy;
        memory.predict(P, x, y);
        bias.gradient(y, v, dy);

        // U = -eta dy x^T with dU = dW: gradients of dy, x and eta.
        const GateValues<S> eta = algorithm_gates.eta.at(b, t, h);
        const Vec<S> dW_x = dW * x;
        const Vec<S> dWT_dy = dW.transpose() * dy;
        Vec<S> ddy(V), dx(K), deta;
        if (eta.scalar()) {
            ddy = -eta[0] * dW_x;
            dx = -eta[0] * dWT_dy;
            deta = Vec<S>::Constant(1, -dy.dot(dW_x));
        } else if (rate_axis == Axis::value) {
            Vec<S> eta_dy(V);
            deta.resize(V);
            for (Index i = 0; i < V; ++i) {
                ddy[i] = -eta[i] * dW_x[i];
                eta_dy[i] = eta[i] * dy[i];
                deta[i] = -dy[i] * dW_x[i];
            }
            dx = -(dW.transpose() * eta_dy);
        } else {
            Vec<S> eta_x(K);
            deta.resize(K);
            for (Index j = 0; j < K; ++j) {
                eta_x[j] = eta[j] * x[j];
                dx[j] = -eta[j] * dWT_dy[j];
                deta[j] = -x[j] * dWT_dy[j];
            }
            ddy = -(dW * eta_x);
        }
        if (deta_tensor != nullptr) detail::add_gate_gradient(*deta_tensor, algorithm_gates.eta, b, t, h, deta);

        // dy = dl/dy(y, v) and y = P x.
        Vec<S> dy_pred, dv;
        detail::bias_gradient_vjp(bias, y, v, ddy, dy_pred, dv);
        for (Index i = 0; i < V; ++i) grads.v.data()[row * V + i] += dv[i];
        Mat<S> dP = Mat<S>::Zero(V, K);
        memory.add_gradient(dP, S(1), dy_pred, x);
        Vec<S> dx_pred;
        memory.input_vjp(P, dy_pred, dx_pred);
        dx += dx_pred;
        for (Index j = 0; j < K; ++j) grads.k.data()[row * K + j] += dx[j];

        // A = D(W_prev) receives dW directly and, when the gradient is taken after the decay, dP.
        Mat<S> dA = dW;
        if (decay_first) dA += dP;
        Mat<S> d_prev;
        if constexpr (decays) {
            Vec<S> dg;
            memory.decay_vjp(W_prev, retention.log_decay(retention_gates, b, t, h), decay_axis, dA, d_prev, dg);
            if (dg_tensor != nullptr) detail::add_gate_gradient(*dg_tensor, retention_gates.g, b, t, h, dg);
        } else {
            d_prev = dA;
        }
        if (!decay_first) d_prev += dP;
        dW = d_prev;

        if (!after_write) read_vjp(W_prev);
    };

    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            const Mat<S>& W0 = start.heads[static_cast<std::size_t>(b * H + h)].memory;

            // Forward: keep W every C tokens and write the outputs.
            std::vector<Mat<S>> checkpoints;
            Mat<S> W = W0, next;
            Vec<S> o;
            for (Index t = 0; t < T; ++t) {
                if (t % checkpoint_every == 0) checkpoints.push_back(W);
                const Vec<S> q_scaled = VecMap<S>(inputs.q.data() + ((b * T + t) * H + h) * K, K) * scale;
                if (!after_write) memory.predict(W, q_scaled, o);
                step(W, b, t, h, next);
                W.swap(next);
                if (after_write) memory.predict(W, q_scaled, o);
                for (Index i = 0; i < V; ++i) grads.output.data()[((b * T + t) * H + h) * V + i] = o[i];
            }

            Mat<S> dW = Mat<S>::Zero(V, K);
            if (d_final_state != nullptr) dW = Eigen::Map<const Mat<S>>(d_final_state->data() + (b * H + h) * V * K, V, K);

            // Reverse, one segment at a time from its checkpoint.
            for (Index segment = static_cast<Index>(checkpoints.size()) - 1; segment >= 0; --segment) {
                const Index first = segment * checkpoint_every, last = std::min(T, first + checkpoint_every);
                std::vector<Mat<S>> states{checkpoints[static_cast<std::size_t>(segment)]};
                for (Index t = first; t < last; ++t) {
                    states.emplace_back();
                    step(states[states.size() - 2], b, t, h, states.back());
                }
                for (Index t = last - 1; t >= first; --t) {
                    reverse_step(states[static_cast<std::size_t>(t - first)], states[static_cast<std::size_t>(t - first + 1)],
                                 b, t, h, dW);
                }
            }
            Eigen::Map<Mat<S>>(grads.initial_state.data() + (b * H + h) * V * K, V, K) = dW;
        }
    }
    return grads;
}

}  // namespace miras
