// LayerNorm over the last axis, y = (x - mean) / sqrt(var + eps) * gamma + beta (biased variance, as
// PyTorch), and its backward dx = (dxh - mean(dxh) - xh * mean(dxh * xh)) / sqrt(var + eps) with
// dxh = dy * gamma. The pre-norms and final norm of Zoology's blocks.
#pragma once

#include <cmath>

#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
struct LayerNorm {
    Param<S> gamma;  ///< [1, d]
    Param<S> beta;   ///< [1, d]
    S eps = S(1e-5);

    LayerNorm() = default;
    explicit LayerNorm(Index d, S epsilon = S(1e-5))
        : gamma(Mat<S>::Ones(1, d)), beta(Mat<S>::Zero(1, d)), eps(epsilon) {}

    Index dim() const { return gamma.value.cols(); }

    Mat<S> forward(const Mat<S>& x) const {
        expect_cols(x, dim(), "LayerNorm input");
        Mat<S> y(x.rows(), x.cols());
        for (Index r = 0; r < x.rows(); ++r) {
            const S mean = x.row(r).mean();
            const S inv = S(1) / std::sqrt((x.row(r).array() - mean).square().mean() + eps);
            y.row(r) = ((x.row(r).array() - mean) * inv * gamma.value.row(0).array() + beta.value.row(0).array()).matrix();
        }
        return y;
    }

    /// Accumulates dgamma and dbeta and returns dX for the input `x` of forward.
    Mat<S> backward(const Mat<S>& x, const Mat<S>& dy) {
        expect_same_shape(x, dy, "LayerNorm backward");
        Mat<S> dx(x.rows(), x.cols());
        for (Index r = 0; r < x.rows(); ++r) {
            const S mean = x.row(r).mean();
            const S inv = S(1) / std::sqrt((x.row(r).array() - mean).square().mean() + eps);
            const auto xh = ((x.row(r).array() - mean) * inv).eval();
            gamma.grad.row(0).array() += dy.row(r).array() * xh;
            beta.grad.row(0) += dy.row(r);
            const auto dxh = (dy.row(r).array() * gamma.value.row(0).array()).eval();
            dx.row(r) = ((dxh - dxh.mean() - xh * (dxh * xh).mean()) * inv).matrix();
        }
        return dx;
    }
};

}  // namespace miras::nn
