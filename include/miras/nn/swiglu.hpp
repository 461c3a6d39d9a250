// SwiGLU MLP (Shazeer 2020), y = W2 (silu(W1 x) * (W3 x)), with W1, W3 [h, d] and W2 [d, h] and no
// biases, as in the Llama-style blocks of Gated DeltaNet and the Miras models.
#pragma once

#include "miras/memory/activation.hpp"
#include "miras/nn/linear.hpp"

namespace miras::nn {

template <class S>
struct SwiGLU {
    Linear<S> gate;  ///< W1
    Linear<S> up;    ///< W3
    Linear<S> down;  ///< W2

    SwiGLU() = default;
    SwiGLU(Mat<S> w1, Mat<S> w3, Mat<S> w2) : gate(std::move(w1), false), up(std::move(w3), false), down(std::move(w2), false) {}

    Mat<S> forward(const Mat<S>& x) const {
        const Mat<S> a = gate.forward(x), b = up.forward(x);
        return down.forward(a.unaryExpr([](S v) { return activate<S>(Activation::silu, v); }).cwiseProduct(b));
    }

    /// Accumulates the gradients of W1, W3, W2 and returns dX for the input `x` of forward.
    Mat<S> backward(const Mat<S>& x, const Mat<S>& dy) {
        const Mat<S> a = gate.forward(x), b = up.forward(x);
        const Mat<S> silu_a = a.unaryExpr([](S v) { return activate<S>(Activation::silu, v); });
        const Mat<S> dhidden = down.backward(silu_a.cwiseProduct(b), dy);
        const Mat<S> da = dhidden.cwiseProduct(b).cwiseProduct(
            a.unaryExpr([](S v) { return activate_derivative<S>(Activation::silu, v); }));
        const Mat<S> db = dhidden.cwiseProduct(silu_a);
        return gate.backward(x, da) + up.backward(x, db);
    }
};

}  // namespace miras::nn
