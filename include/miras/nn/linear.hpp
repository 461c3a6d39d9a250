// Linear map Y = X W^T + b with W [out, in] (PyTorch's nn.Linear layout), and its backward pass
// dX = dY W, dW += dY^T X, db += column sums of dY. Used by every projection of the outer model.
#pragma once

#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
struct Linear {
    Param<S> weight;  ///< [out, in]
    Param<S> bias;    ///< [1, out], or empty when the layer has no bias.

    Linear() = default;
    Linear(Mat<S> w, bool with_bias) : weight(std::move(w)) {
        if (with_bias) bias = Param<S>(Mat<S>::Zero(1, weight.value.rows()));
    }

    Index in() const { return weight.value.cols(); }
    Index out() const { return weight.value.rows(); }
    bool has_bias() const { return bias.value.size() > 0; }

    /// Computes Y [N, out] from X [N, in].
    Mat<S> forward(const Mat<S>& x) const {
        expect_cols(x, in(), "Linear input");
        Mat<S> y = x * weight.value.transpose();
        if (has_bias()) y.rowwise() += bias.value.row(0);
        return y;
    }

    /// Accumulates the parameter gradients and returns dX for the input `x` of forward.
    Mat<S> backward(const Mat<S>& x, const Mat<S>& dy) {
        expect_cols(dy, out(), "Linear output gradient");
        weight.grad.noalias() += dy.transpose() * x;
        if (has_bias()) bias.grad.row(0) += dy.colwise().sum();
        return dy * weight.value;
    }
};

}  // namespace miras::nn
