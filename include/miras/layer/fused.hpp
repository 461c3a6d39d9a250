// Fused token loop for the chunkable layers (see chunked.hpp): one pass over each row of W per
// token instead of separate passes for the decay, the prediction, the write and the read.
// For row i of W with decay a = exp(g), rate eta, key k and query s q:
//   decay_then_gradient  r_i = a (W_i . k),  W_i <- a W_i - eta dl/dy_i k
//   gradient_then_decay  r_i = W_i . k,      W_i <- a W_i - eta dl/dy_i k
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
    Vec<S> q(K);

    for (Index t = 0; t < T; ++t) {
        const Index row = (b * T + t) * H + h;
        const VecMap<S> k(inputs.k.data() + row * K, K);
        const S* v = inputs.v.data() + row * V;
        q = VecMap<S>(inputs.q.data() + row * K, K) * scale;
        S* o = output.data() + row * V;
        const S a = math::exp(layer.retention().log_decay(retention_gates, b, t, h)[0]);
        const S eta = algorithm_gates.eta.at(b, t, h)[0];
        const S prediction_scale = gradient_first ? S(1) : a;

        for (Index i = 0; i < V; ++i) {
            auto w = W.row(i);
            S gradient = -v[i];
            if constexpr (delta) gradient += prediction_scale * w.dot(k.transpose());
            w = a * w - (eta * gradient) * k.transpose();
            o[i] = w.dot(q.transpose());
        }
    }
}

}  // namespace miras::detail
