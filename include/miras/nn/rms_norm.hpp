// RMSNorm over the last axis, y = x / sqrt(mean(x^2) + eps) * gamma (Zhang and Sennrich 2019), and
// its backward dx = (dxh - xh * mean(dxh * xh)) / rms with xh = x / rms and dxh = dy * gamma.
// The output norm of Gated DeltaNet, Mamba2 and most Miras layers.
#pragma once

#include <cmath>

#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
struct RMSNorm {
    Param<S> gamma;  ///< [1, d]
    S eps = S(1e-6);

    RMSNorm() = default;
    explicit RMSNorm(Index d, S epsilon = S(1e-6)) : gamma(Mat<S>::Ones(1, d)), eps(epsilon) {}

    Index dim() const { return gamma.value.cols(); }

    /// Returns x / rms(x) per row, before the gain.
    Mat<S> normalise(const Mat<S>& x) const {
        expect_cols(x, dim(), "RMSNorm input");
        Mat<S> xh(x.rows(), x.cols());
        for (Index r = 0; r < x.rows(); ++r) xh.row(r) = x.row(r) / std::sqrt(x.row(r).squaredNorm() / S(dim()) + eps);
        return xh;
    }

    Mat<S> forward(const Mat<S>& x) const {
        Mat<S> y = normalise(x);
        return (y.array().rowwise() * gamma.value.row(0).array()).matrix();
    }

    /// Accumulates dgamma and returns dX for the input `x` of forward.
    Mat<S> backward(const Mat<S>& x, const Mat<S>& dy) {
        expect_same_shape(x, dy, "RMSNorm backward");
        Mat<S> dx(x.rows(), x.cols());
        for (Index r = 0; r < x.rows(); ++r) {
            const S inv = S(1) / std::sqrt(x.row(r).squaredNorm() / S(dim()) + eps);
            const auto xh = (x.row(r).array() * inv).eval();
            gamma.grad.row(0).array() += dy.row(r).array() * xh;
            const auto dxh = (dy.row(r).array() * gamma.value.row(0).array()).eval();
            dx.row(r) = ((dxh - xh * (dxh * xh).mean()) * inv).matrix();
        }
        return dx;
    }
};

}  // namespace miras::nn
