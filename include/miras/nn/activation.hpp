// Element-wise activations of the outer model (silu, gelu with erf, and the others of
// miras/memory/activation.hpp) with their backward pass dx = dy * sigma'(x).
#pragma once

#include "miras/memory/activation.hpp"
#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
Mat<S> activation_forward(Activation a, const Mat<S>& x) {
    return x.unaryExpr([a](S z) { return activate<S>(a, z); });
}

/// Returns dy * sigma'(x) for the input `x` of activation_forward.
template <class S>
Mat<S> activation_backward(Activation a, const Mat<S>& x, const Mat<S>& dy) {
    expect_same_shape(x, dy, "activation backward");
    return x.unaryExpr([a](S z) { return activate_derivative<S>(a, z); }).cwiseProduct(dy);
}

}  // namespace miras::nn
