// L2 normalisation of each group of `width` columns, y = x / sqrt(|x|^2 + eps) as in
// flash-linear-attention's l2norm, with backward dx = (dy - y (y . dy)) / sqrt(|x|^2 + eps).
// Applied per head to q and k in DeltaNet, Gated DeltaNet and the Miras layers.
#pragma once

#include <cmath>

#include "miras/nn/param.hpp"

namespace miras::nn {

namespace detail {
inline void check_groups(Index cols, Index width) {
    if (width <= 0 || cols % width != 0) {
        throw InputError("l2_normalise: " + std::to_string(cols) + " columns do not split into groups of " +
                         std::to_string(width));
    }
}
}  // namespace detail

template <class S>
Mat<S> l2_normalise(const Mat<S>& x, Index width, S eps = S(1e-6)) {
    detail::check_groups(x.cols(), width);
    Mat<S> y(x.rows(), x.cols());
    for (Index r = 0; r < x.rows(); ++r) {
        for (Index g = 0; g < x.cols(); g += width) {
            const S inv = S(1) / std::sqrt(x.row(r).segment(g, width).squaredNorm() + eps);
            y.row(r).segment(g, width) = x.row(r).segment(g, width) * inv;
        }
    }
    return y;
}

/// Returns dX for the input `x` of l2_normalise.
template <class S>
Mat<S> l2_normalise_backward(const Mat<S>& x, const Mat<S>& dy, Index width, S eps = S(1e-6)) {
    detail::check_groups(x.cols(), width);
    expect_same_shape(x, dy, "l2_normalise backward");
    Mat<S> dx(x.rows(), x.cols());
    for (Index r = 0; r < x.rows(); ++r) {
        for (Index g = 0; g < x.cols(); g += width) {
            const S inv = S(1) / std::sqrt(x.row(r).segment(g, width).squaredNorm() + eps);
            const auto y = (x.row(r).segment(g, width) * inv).eval();
            const auto d = dy.row(r).segment(g, width);
            dx.row(r).segment(g, width) = (d - y * y.dot(d)) * inv;
        }
    }
    return dx;
}

}  // namespace miras::nn
