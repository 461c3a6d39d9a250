// Fused token loop for the chunkable layers (see chunked.hpp): one pass over each row of W per
// token instead of separate passes for the decay, the prediction, the write and the read.
// For row i of W with decay a = exp(g) (a number, or a vector over the key channels), rate eta,
// key k, read key p (k, or the separate read key of Comba) and query s q:
//   decay_then_gradient  r_i = (a W_i) . p,  W_i <- a W_i - eta dl/dy_i k
//   gradient_then_decay  r_i = W_i . p,      W_i <- a W_i - eta dl/dy_i k
//   o_i = W_i . (s q)
// with dl/dy_i = r_i - v_i for the l2 bias and -v_i for the dot product. The rows are independent,
// so this is exactly the token loop of Layer, reordered.
#pragma once

#include <type_traits>

#include "miras/layer/chunked.hpp"

namespace miras::detail {

template <class S, class L, class RetentionBound, class AlgorithmBound>
void forward_head_fused(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                        const AlgorithmBound& algorithm_gates, Index b, Index h, Index T, Mat<S>& W,
                        Tensor<S>& output) {
    constexpr bool delta = std::is_same_v<typename L::bias_type, L2Bias>;
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const S scale = S(layer.query_scale());
    const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;
    const bool read_key = delta && layer.algorithm().separate_read_key;
    // DeltaProduct writes `steps` pairs per token; the decay acts at the first, the read after the last.
    const Index steps = layer.dims().steps_per_token, pairs = T * steps;
    Vec<S> q(K), decay(K);

    for (Index step = 0; step < pairs; ++step) {
        const Index t = step / steps, pair = step % steps;
        const Index row = (b * pairs + step) * H + h;
        const VecMap<S> k(inputs.k.data() + row * K, K);
        // The key the prediction reads: p for Comba, else k.
        const VecMap<S> p(read_key ? algorithm_gates.p.at(b, step, h).data : inputs.k.data() + row * K, K);
        const S* v = inputs.v.data() + row * V;
        const bool reads = pair == steps - 1;
        if (reads) q = VecMap<S>(inputs.q.data() + ((b * T + t) * H + h) * K, K) * scale;
        S* o = output.data() + ((b * T + t) * H + h) * V;
        const GateValues<S> g = layer.retention().log_decay(retention_gates, b, t, h);
        const S eta = algorithm_gates.eta.at(b, step, h)[0];

        if (pair != 0 || g.scalar()) {
            const S a = pair == 0 ? math::exp(g[0]) : S(1);
            const S prediction_scale = gradient_first ? S(1) : a;
            for (Index i = 0; i < V; ++i) {
                auto w = W.row(i);
                S gradient = -v[i];
                if constexpr (delta) gradient += prediction_scale * w.dot(p.transpose());
                w = a * w - (eta * gradient) * k.transpose();
                if (reads) o[i] = w.dot(q.transpose());
            }
        } else {
            // One decay per key channel: W <- W diag(exp(g)).
            for (Index c = 0; c < K; ++c) decay[c] = math::exp(g[c]);
            for (Index i = 0; i < V; ++i) {
                auto w = W.row(i);
                S gradient = -v[i];
                if constexpr (delta) {
                    if (gradient_first) gradient += w.dot(p.transpose());
                    else gradient += w.cwiseProduct(decay.transpose()).dot(p.transpose());
                }
                w = w.cwiseProduct(decay.transpose()) - (eta * gradient) * k.transpose();
                if (reads) o[i] = w.dot(q.transpose());
            }
        }
    }
}

}  // namespace miras::detail
