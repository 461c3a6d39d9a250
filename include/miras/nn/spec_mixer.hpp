// The token mixer around a layer built from a JSON spec (an AnyLayer), in the form of the Gated
// DeltaNet and Miras mixers: q, k, v = silu(ShortConv(W_{q,k,v} x)) with q and k L2-normalised per
// head. Each per-token gate of the layer gets a projection squashed into the gate's range. The
// layer's output o gives y = W_o GatedRMSNorm(o, W_z x). The backward pass runs AnyLayer::backward through the inner
// updates.
//
// Gate squashings, by the range the layer declares (miras/core/gate.hpp):
//   log_gate     g = -softplus(W x + b)          (decay exp(g) in (0, 1), as Mamba2 and Gated DeltaNet)
//   nonnegative  s = sigmoid(W x + b)            (rates in (0, 1), as the beta of DeltaNet)
//   positive     s = softplus(W x + b) + 1e-4    (ridge terms and scales that divide)
//   any          s = W x + b
// A gate has one output per head, or per head and channel. Gates the spec fixes are left alone.
// A gate may also carry a scale c that multiplies its squashed value, as the maximum inner learning
// rate max_lr of titans-pytorch's neural memory: eta = c * sigmoid(W x + b).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "miras/core/parallel.hpp"
#include "miras/nn/activation.hpp"
#include "miras/nn/gated_norm.hpp"
#include "miras/nn/l2_norm.hpp"
#include "miras/nn/linear.hpp"
#include "miras/nn/miras_mixer.hpp"
#include "miras/nn/short_conv.hpp"
#include "miras/spec/any_layer.hpp"

namespace miras::nn {

/// Smallest value of a gate with the positive range.
inline constexpr double positive_gate_floor = 1e-4;

/// Returns the gate value for the pre-activation `a` of a gate with range `range`.
template <class S>
S squash_gate(Range range, S a) {
    const auto softplus = [](S x) { return x > S(20) ? x : std::log1p(std::exp(x)); };
    switch (range) {
        case Range::log_gate: return -softplus(a);
        case Range::nonnegative: return math::sigmoid(a);
        case Range::positive: return softplus(a) + S(positive_gate_floor);
        case Range::any: return a;
    }
    return a;
}

/// Returns d squash_gate(range, a) / da.
template <class S>
S squash_gate_slope(Range range, S a) {
    switch (range) {
        case Range::log_gate: return -math::sigmoid(a);
        case Range::nonnegative: {
            const S s = math::sigmoid(a);
            return s * (S(1) - s);
        }
        case Range::positive: return math::sigmoid(a);
        case Range::any: return S(1);
    }
    return S(1);
}

/// A mixer over any layer whose spec has a reverse pass.
/// \tparam S float or double, the scalar of the parameters and of the layer call.
template <class S>
class SpecMixer {
public:
    /// One per-token gate of the layer and the projection that produces it.
    struct GateHead {
        GateSpec spec;
        Index channels = 1;  ///< C: 1 for a head gate, else the channel count of its axis.
        Linear<S> projection;  ///< [H * C, d] with a bias.
        double scale = 1;  ///< Multiplies the squashed value.
    };

    /// Builds the projections for `layer` at model width `model_dim`, with short convolutions of
    /// `conv_kernel` taps, drawing the weights from `rng`. `gate_scales` gives the scale of a gate by
    /// name (1 for a gate it does not name); it must name per-token gates of the layer, with a
    /// finite scale > 0, and only gates whose range is nonnegative or positive.
    SpecMixer(std::shared_ptr<const AnyLayer> layer, Index model_dim, Index conv_kernel, std::mt19937_64& rng,
              const std::map<std::string, double>& gate_scales = {})
        : layer_(std::move(layer)) {
        if (!layer_) throw ConfigError("SpecMixer: no layer given");
        const LayerDims& dims = layer_->dims();
        if (dims.steps_per_token != 1) {
            throw ConfigError("SpecMixer writes one pair per token; the layer writes " +
                              std::to_string(dims.steps_per_token) + " (steps_per_token)");
        }
        if (model_dim < 1 || conv_kernel < 1) {
            throw ConfigError("SpecMixer: model_dim = " + std::to_string(model_dim) + " and conv_kernel = " +
                              std::to_string(conv_kernel) + " must both be at least 1");
        }
        const Index d = model_dim, HK = dims.heads * dims.key, HV = dims.heads * dims.value;
        const double init_std = 0.02;
        wq = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        wk = Linear<S>(normal_matrix<S>(rng, HK, d, init_std), false);
        wv = Linear<S>(normal_matrix<S>(rng, HV, d, init_std), false);
        wz = Linear<S>(normal_matrix<S>(rng, HV, d, init_std), false);
        wo = Linear<S>(normal_matrix<S>(rng, d, HV, init_std), false);
        const double conv_scale = 1.0 / std::sqrt(static_cast<double>(conv_kernel));
        conv_q = ShortConv<S>(normal_matrix<S>(rng, HK, conv_kernel, conv_scale), false);
        conv_k = ShortConv<S>(normal_matrix<S>(rng, HK, conv_kernel, conv_scale), false);
        conv_v = ShortConv<S>(normal_matrix<S>(rng, HV, conv_kernel, conv_scale), false);
        norm = GatedRMSNorm<S>(dims.value);

        for (const GateSpec& spec : layer_->gates()) {
            if (!spec.config.per_token) continue;
            GateHead head{spec, gate_channels(spec, dims), {}, 1.0};
            if (const auto found = gate_scales.find(spec.name); found != gate_scales.end()) {
                if (spec.range != Range::nonnegative && spec.range != Range::positive) {
                    throw ConfigError("SpecMixer: gate scale for '" + spec.name + "', whose values are " +
                                      range_description(spec.range) +
                                      "; only gates of values >= 0 or > 0 take a scale");
                }
                head.scale = found->second;
            }
            head.projection = Linear<S>(normal_matrix<S>(rng, dims.heads * head.channels, d, init_std), true);
            // softplus(-3) = 0.049: a slow initial decay, as MirasMixer.
            if (spec.range == Range::log_gate) head.projection.bias.value.setConstant(S(-3));
            gates.push_back(std::move(head));
        }
        for (const auto& [name, scale] : gate_scales) {
            const bool known = std::any_of(gates.begin(), gates.end(), [&](const GateHead& g) { return g.spec.name == name; });
            if (!known) {
                std::string names;
                for (const GateHead& g : gates) names += (names.empty() ? "'" : ", '") + g.spec.name + "'";
                throw ConfigError("SpecMixer: gate scale for '" + name + "', which is not a per-token gate of the layer; valid " +
                                  (names.empty() ? std::string("is none: the layer has no per-token gate") : "are " + names));
            }
            if (!(scale > 0) || !std::isfinite(scale)) {
                throw ConfigError("SpecMixer: gate scale " + std::to_string(scale) + " for '" + name +
                                  "'; valid is a finite value > 0");
            }
        }
    }

    const AnyLayer& layer() const { return *layer_; }

    std::vector<Param<S>*> params() {
        std::vector<Param<S>*> list;
        for (Linear<S>* lin : {&wq, &wk, &wv, &wz, &wo}) list.push_back(&lin->weight);
        for (GateHead& gate : gates) {
            list.push_back(&gate.projection.weight);
            list.push_back(&gate.projection.bias);
        }
        for (ShortConv<S>* c : {&conv_q, &conv_k, &conv_v}) list.push_back(&c->weight);
        list.push_back(&norm.norm.gamma);
        return list;
    }

    /// Wall time in seconds since the timing was last reset. `mixer` counts whole forward and
    /// backward calls. `layer` counts the part inside the layer's own passes, the memory updates and reads.
    struct Timing {
        double layer = 0;
        double mixer = 0;
    };
    Timing timing;

    /// Maps X [B * T, d] to Y [B * T, d], keeping what backward needs.
    Mat<S> forward(const Mat<S>& x, Index batch, Index tokens) {
        const auto started = Clock::now();
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
        c.q = l2_normalise<S>(c.q_act, layer_->dims().key);
        c.k = l2_normalise<S>(c.k_act, layer_->dims().key);
        for (GateHead& gate : gates) {
            c.gate_pre.push_back(gate.projection.forward(x));
            const Range range = gate.spec.range;
            const S scale = S(gate.scale);
            c.gate_values.push_back(
                c.gate_pre.back().unaryExpr([range, scale](S a) { return scale * squash_gate<S>(range, a); }));
        }

        const Index width = layer_->dims().heads * layer_->dims().value;
        c.o.resize(batch * tokens, width);
        const auto layer_started = Clock::now();
        for_each_part(batch, [&](Index first, Index count) {
            LayerCall call;
            fill_layer_call(c, first, count, call);
            const std::unique_ptr<AnyState> state = layer_->initial_state(count, std::is_same_v<S, double>);
            const Tensor<S> o = layer_->forward(call.inputs, *state);
            c.o.middleRows(first * tokens, count * tokens) = as_mat(o, count * tokens, width);
        });
        timing.layer += seconds_since(layer_started);
        c.z = wz.forward(x);
        c.normed = norm.forward(c.o, c.z);
        Mat<S> y = wo.forward(c.normed);
        timing.mixer += seconds_since(started);
        return y;
    }

    /// Accumulates the parameter gradients and returns dX for the last forward call.
    Mat<S> backward(const Mat<S>& dy) {
        const auto started = Clock::now();
        Cache& c = cache_;
        const LayerDims& dims = layer_->dims();
        const Index B = c.batch, T = c.tokens, H = dims.heads, K = dims.key, V = dims.value;
        const Mat<S> d_normed = wo.backward(c.normed, dy);
        const auto gated = norm.backward(c.o, c.z, d_normed);
        Mat<S> dx = wz.backward(c.x, gated.dz);

        // Gradients of the layer's inputs, [B * T, H * C] each; every part of the batch fills its rows.
        Mat<S> d_q(B * T, H * K), d_k(B * T, H * K), dv(B * T, H * V);
        std::vector<Mat<S>> d_gates;
        for (const GateHead& gate : gates) d_gates.emplace_back(B * T, H * gate.channels);
        const auto layer_started = Clock::now();
        for_each_part(B, [&](Index first, Index count) {
            LayerCall call;
            fill_layer_call(c, first, count, call);
            const Tensor<S> d_o = as_tensor(gated.dx.middleRows(first * T, count * T), {count, T, H, V});
            const LayerGradients<S> lg = layer_->backward(call.inputs, nullptr, d_o.view(), checkpoint_every);
            d_q.middleRows(first * T, count * T) = as_mat(lg.q, count * T, H * K);
            d_k.middleRows(first * T, count * T) = as_mat(lg.k, count * T, H * K);
            dv.middleRows(first * T, count * T) = as_mat(lg.v, count * T, H * V);
            for (std::size_t i = 0; i < gates.size(); ++i) {
                const auto found = lg.gates.find(gates[i].spec.name);
                if (found == lg.gates.end()) {
                    throw ConfigError("SpecMixer: the reverse pass returned no gradient for the per-token gate '" +
                                      gates[i].spec.name + "'");
                }
                d_gates[i].middleRows(first * T, count * T) = as_mat(found->second, count * T, H * gates[i].channels);
            }
        });
        timing.layer += seconds_since(layer_started);

        for (std::size_t i = 0; i < gates.size(); ++i) {
            const Range range = gates[i].spec.range;
            const S scale = S(gates[i].scale);
            const Mat<S> slope =
                c.gate_pre[i].unaryExpr([range, scale](S a) { return scale * squash_gate_slope<S>(range, a); });
            dx += gates[i].projection.backward(c.x, d_gates[i].cwiseProduct(slope));
        }

        const Mat<S> dq = l2_normalise_backward<S>(c.q_act, d_q, K);
        const Mat<S> dk = l2_normalise_backward<S>(c.k_act, d_k, K);
        dx += wq.backward(c.x, conv_q.backward(c.q_proj, activation_backward(Activation::silu, c.q_conv, dq), T));
        dx += wk.backward(c.x, conv_k.backward(c.k_proj, activation_backward(Activation::silu, c.k_conv, dk), T));
        dx += wv.backward(c.x, conv_v.backward(c.v_proj, activation_backward(Activation::silu, c.v_conv, dv), T));
        timing.mixer += seconds_since(started);
        return dx;
    }

    Linear<S> wq, wk, wv, wz, wo;
    ShortConv<S> conv_q, conv_k, conv_v;
    GatedRMSNorm<S> norm;
    std::vector<GateHead> gates;
    /// Tokens between the states that the reverse pass saves; it changes memory and time, not results.
    Index checkpoint_every = 16;
    /// Threads over parts of the batch in the layer's forward and reverse passes. Each sequence is
    /// computed alone, so the results are bitwise the same for every thread count.
    int threads = 1;

private:
    using Clock = std::chrono::steady_clock;
    static double seconds_since(Clock::time_point start) {
        return std::chrono::duration<double>(Clock::now() - start).count();
    }

    struct Cache {
        Mat<S> x, q_proj, k_proj, v_proj, q_conv, k_conv, v_conv, q_act, k_act, q, k, v;
        std::vector<Mat<S>> gate_pre, gate_values;
        Mat<S> o, z, normed;
        Index batch = 0, tokens = 0;
    };

    /// The input tensors of one layer call; `inputs` views the tensors beside it, so a LayerCall
    /// is filled in place and never copied.
    struct LayerCall {
        LayerCall() = default;
        LayerCall(const LayerCall&) = delete;
        LayerCall& operator=(const LayerCall&) = delete;
        Tensor<S> q, k, v;
        std::vector<Tensor<S>> gate_tensors;
        Inputs<S> inputs;
    };

    static Index gate_channels(const GateSpec& spec, const LayerDims& dims) {
        if (spec.config.axis == Axis::head) return 1;
        if (spec.channels > 0) return spec.channels;
        return spec.config.axis == Axis::key ? dims.key_features : dims.value;
    }

    static Tensor<S> as_tensor(const Mat<S>& m, Shape shape) {
        return Tensor<S>(std::move(shape), std::vector<S>(m.data(), m.data() + m.size()));
    }
    static Mat<S> as_mat(const Tensor<S>& t, Index rows, Index cols) {
        return Eigen::Map<const Mat<S>>(t.data(), rows, cols);
    }

    /// Runs body(first, count) over up to `threads` consecutive parts of a batch of `batch` sequences.
    template <class Body>
    void for_each_part(Index batch, Body&& body) const {
        const Index parts = std::max<Index>(1, std::min<Index>(threads, batch));
        parallel_for(parts, threads, [&](Index part) {
            const Index first = batch * part / parts, last = batch * (part + 1) / parts;
            body(first, last - first);
        });
    }

    /// Fills `call` with the inputs of sequences first .. first + count - 1.
    void fill_layer_call(const Cache& c, Index first, Index count, LayerCall& call) const {
        const LayerDims& dims = layer_->dims();
        const Index B = count, T = c.tokens, H = dims.heads;
        const auto rows = [&](const Mat<S>& m) { return Mat<S>(m.middleRows(first * T, count * T)); };
        call.q = as_tensor(rows(c.q), {B, T, H, dims.key});
        call.k = as_tensor(rows(c.k), {B, T, H, dims.key});
        call.v = as_tensor(rows(c.v), {B, T, H, dims.value});
        call.gate_tensors.reserve(gates.size());
        for (std::size_t i = 0; i < gates.size(); ++i) {
            Shape shape{B, T, H};
            if (gates[i].spec.config.axis != Axis::head) shape.push_back(gates[i].channels);
            call.gate_tensors.push_back(as_tensor(rows(c.gate_values[i]), shape));
        }
        call.inputs.q = call.q.view();
        call.inputs.k = call.k.view();
        call.inputs.v = call.v.view();
        for (std::size_t i = 0; i < gates.size(); ++i) call.inputs.gates.emplace(gates[i].spec.name, call.gate_tensors[i].view());
    }

    std::shared_ptr<const AnyLayer> layer_;
    Cache cache_;
};

/// A mixer that is only a causal depthwise short convolution with a bias, y = ShortConv(x), as the
/// first layer of Zoology's hybrid models (which use BaseConv there: this short convolution
/// multiplied by a linear projection of x).
template <class S>
struct ShortConvMixer {
    ShortConv<S> conv;

    ShortConvMixer(Index model_dim, Index kernel, std::mt19937_64& rng)
        : conv(normal_matrix<S>(rng, model_dim, kernel, 1.0 / std::sqrt(static_cast<double>(kernel))), true) {}

    std::vector<Param<S>*> params() { return {&conv.weight, &conv.bias}; }

    Mat<S> forward(const Mat<S>& x, Index /*batch*/, Index tokens) {
        x_ = x;
        tokens_ = tokens;
        return conv.forward(x, tokens);
    }

    Mat<S> backward(const Mat<S>& dy) { return conv.backward(x_, dy, tokens_); }

private:
    Mat<S> x_;
    Index tokens_ = 0;
};

}  // namespace miras::nn
