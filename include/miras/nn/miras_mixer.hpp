// The Miras token mixer around a layer of the algebra, as in the Gated DeltaNet and Miras models:
// q, k, v = silu(ShortConv(W_{q,k,v} x)) with q and k L2-normalised per head, eta = sigmoid(W_eta x),
// g = -softplus(W_g x) per head, o = Layer(q, k, v, g, eta), y = W_o GatedRMSNorm(o, W_z x).
// The backward pass runs layer_backward through the inner updates.
#pragma once

#include <cmath>
#include <random>

#include "miras/layer/backward.hpp"
#include "miras/nn/gated_norm.hpp"
#include "miras/nn/l2_norm.hpp"
#include "miras/nn/activation.hpp"
#include "miras/nn/linear.hpp"
#include "miras/nn/short_conv.hpp"

namespace miras::nn {

/// Sizes of a mixer: model width d, heads H, head width K (keys and values).
struct MixerDims {
    Index model = 64;
    Index heads = 2;
    Index head = 32;
    Index conv = 4;
};

/// Draws a [rows, cols] matrix with entries N(0, stddev^2).
template <class S>
Mat<S> normal_matrix(std::mt19937_64& rng, Index rows, Index cols, double stddev) {
    std::normal_distribution<double> n(0.0, stddev);
    Mat<S> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = S(n(rng));
    return m;
}

/// \tparam L a layer with gates g (log-decay, per head, per token) and eta (rate, per head, per
///           token), such as presets::GatedDeltaNet built by presets::gated_deltanet.
template <class L, class S>
class MirasMixer {
public:
    MirasMixer(L layer, MixerDims dims, std::mt19937_64& rng) : layer_(std::move(layer)), dims_(dims) {
        const Index d = dims.model, HK = dims.heads * dims.head;
        if (layer_.dims().heads != dims.heads || layer_.dims().key != dims.head || layer_.dims().value != dims.head) {
            throw ConfigError("MirasMixer: the layer has H = " + std::to_string(layer_.dims().heads) + ", K = " +
                              std::to_string(layer_.dims().key) + ", V = " + std::to_string(layer_.dims().value) +
                              "; the mixer needs H = " + std::to_string(dims.heads) + " and K = V = " +
                              std::to_string(dims.head));
        }
        const double init_std = 0.02;
        wq = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        wk = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        wv = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        wz = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        weta = Linear<S>(normal_matrix<S>(rng, dims.heads, d, init_std), true);
        wg = Linear<S>(normal_matrix<S>(rng, dims.heads, d, init_std), true);
        wg.bias.value.setConstant(S(-3));  // softplus(-3) = 0.049: a slow initial decay
        wo = Linear<S>(normal_matrix<S>(rng, d, HK, init_std), false);
        const double conv_scale = 1.0 / std::sqrt(static_cast<double>(dims.conv));
        conv_q = ShortConv<S>(normal_matrix<S>(rng, HK, dims.conv, conv_scale), false);
        conv_k = ShortConv<S>(normal_matrix<S>(rng, HK, dims.conv, conv_scale), false);
        conv_v = ShortConv<S>(normal_matrix<S>(rng, HK, dims.conv, conv_scale), false);
        norm = GatedRMSNorm<S>(dims.head);
    }

    std::vector<Param<S>*> params() {
        std::vector<Param<S>*> list;
        for (Linear<S>* lin : {&wq, &wk, &wv, &wz, &weta, &wg, &wo}) {
            list.push_back(&lin->weight);
            if (lin->has_bias()) list.push_back(&lin->bias);
        }
        for (ShortConv<S>* c : {&conv_q, &conv_k, &conv_v}) list.push_back(&c->weight);
        list.push_back(&norm.norm.gamma);
        return list;
    }

    /// Maps X [B * T, d] to Y [B * T, d], keeping what backward needs.
    Mat<S> forward(const Mat<S>& x, Index batch, Index tokens) {
        cache_ = Cache{};
        Cache& c = cache_;
        c.x = x;
        c.batch = batch;
        c.tokens = tokens;
        c.q_proj = wq.forward(x);
        c.k_proj = wk.forward(x);
        c.v_proj = wv.forward(x);
        c.q_conv = conv_q.forward(c.q_proj, tokens);
        c.k_conv = conv_k.forward(c.k_proj, tokens);
        c.v_conv = conv_v.forward(c.v_proj, tokens);
        c.q_act = activation_forward(Activation::silu, c.q_conv);
        c.k_act = activation_forward(Activation::silu, c.k_conv);
        c.v = activation_forward(Activation::silu, c.v_conv);
        c.q = l2_normalise<S>(c.q_act, dims_.head);
        c.k = l2_normalise<S>(c.k_act, dims_.head);
        c.eta_pre = weta.forward(x);
        c.g_pre = wg.forward(x);
        c.eta = c.eta_pre.unaryExpr([](S a) { return math::sigmoid(a); });
        c.g = c.g_pre.unaryExpr([](S a) { return -softplus(a); });
        c.o = layer_output(c);
        c.z = wz.forward(x);
        c.normed = norm.forward(c.o, c.z);
        return wo.forward(c.normed);
    }

    /// Accumulates the parameter gradients and returns dX for the last forward call.
    Mat<S> backward(const Mat<S>& dy) {
        Cache& c = cache_;
        const Mat<S> d_normed = wo.backward(c.normed, dy);
        const auto gated = norm.backward(c.o, c.z, d_normed);
        Mat<S> dx = wz.backward(c.x, gated.dz);

        const Index B = c.batch, T = c.tokens, H = dims_.heads, K = dims_.head;
        const Tensor<S> q = as_tensor(c.q, {B, T, H, K}), k = as_tensor(c.k, {B, T, H, K}), v = as_tensor(c.v, {B, T, H, K});
        const Tensor<S> g = as_tensor(c.g, {B, T, H}), eta = as_tensor(c.eta, {B, T, H});
        const Tensor<S> d_o = as_tensor(gated.dx, {B, T, H, K});
        Inputs<S> in{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
        const LayerGradients<S> lg = layer_backward(layer_, in, nullptr, d_o.view(), nullptr, checkpoint_every);

        const Mat<S> dg = as_mat(lg.gates.at("g"), B * T, H);
        const Mat<S> deta = as_mat(lg.gates.at("eta"), B * T, H);
        const Mat<S> dg_pre = dg.cwiseProduct(c.g_pre.unaryExpr([](S a) { return -math::sigmoid(a); }));
        const Mat<S> deta_pre = deta.cwiseProduct(c.eta.unaryExpr([](S s) { return s * (S(1) - s); }));
        dx += wg.backward(c.x, dg_pre);
        dx += weta.backward(c.x, deta_pre);

        const Mat<S> dq = l2_normalise_backward<S>(c.q_act, as_mat(lg.q, B * T, H * K), K);
        const Mat<S> dk = l2_normalise_backward<S>(c.k_act, as_mat(lg.k, B * T, H * K), K);
        const Mat<S> dv = as_mat(lg.v, B * T, H * K);
        dx += wq.backward(c.x, conv_q.backward(c.q_proj, activation_backward(Activation::silu, c.q_conv, dq), T));
        dx += wk.backward(c.x, conv_k.backward(c.k_proj, activation_backward(Activation::silu, c.k_conv, dk), T));
        dx += wv.backward(c.x, conv_v.backward(c.v_proj, activation_backward(Activation::silu, c.v_conv, dv), T));
        return dx;
    }

    Linear<S> wq, wk, wv, wz, weta, wg, wo;
    ShortConv<S> conv_q, conv_k, conv_v;
    GatedRMSNorm<S> norm;
    Index checkpoint_every = 16;

private:
    struct Cache {
        Mat<S> x, q_proj, k_proj, v_proj, q_conv, k_conv, v_conv, q_act, k_act, q, k, v;
        Mat<S> eta_pre, g_pre, eta, g, o, z, normed;
        Index batch = 0, tokens = 0;
    };

    static S softplus(S a) { return a > S(20) ? a : std::log1p(std::exp(a)); }

    static Tensor<S> as_tensor(const Mat<S>& m, Shape shape) {
        return Tensor<S>(std::move(shape), std::vector<S>(m.data(), m.data() + m.size()));
    }
    static Mat<S> as_mat(const Tensor<S>& t, Index rows, Index cols) {
        return Eigen::Map<const Mat<S>>(t.data(), rows, cols);
    }

    Mat<S> layer_output(const Cache& c) const {
        const Index B = c.batch, T = c.tokens, H = dims_.heads, K = dims_.head;
        const Tensor<S> q = as_tensor(c.q, {B, T, H, K}), k = as_tensor(c.k, {B, T, H, K}), v = as_tensor(c.v, {B, T, H, K});
        const Tensor<S> g = as_tensor(c.g, {B, T, H}), eta = as_tensor(c.eta, {B, T, H});
        Inputs<S> in{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
        return as_mat(layer_.forward(in), B * T, H * K);
    }

    L layer_;
    MixerDims dims_;
    Cache cache_;
};

}  // namespace miras::nn
