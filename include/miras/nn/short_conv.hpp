// Causal depthwise convolution over time, y[t, c] = b[c] + sum_j w[c, j] x[t - K + 1 + j, c], with
// zeros before the start of each sequence. The short convolution of Mamba, DeltaNet and Gated
// DeltaNet (kernel 4) and of Zoology's BaseConv (kernel 3).
#pragma once

#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
struct ShortConv {
    Param<S> weight;  ///< w [C, K]; column K - 1 multiplies the current token.
    Param<S> bias;    ///< [1, C], or empty.

    ShortConv() = default;
    ShortConv(Mat<S> w, bool with_bias) : weight(std::move(w)) {
        if (with_bias) bias = Param<S>(Mat<S>::Zero(1, weight.value.rows()));
    }

    Index channels() const { return weight.value.rows(); }
    Index kernel() const { return weight.value.cols(); }
    bool has_bias() const { return bias.value.size() > 0; }

    /// Convolves X [B * T, C], sequences of T consecutive rows each.
    Mat<S> forward(const Mat<S>& x, Index tokens) const {
        check(x, tokens);
        Mat<S> y = Mat<S>::Zero(x.rows(), x.cols());
        const Index K = kernel();
        for (Index start = 0; start < x.rows(); start += tokens) {
            for (Index t = 0; t < tokens; ++t) {
                for (Index j = 0; j < K; ++j) {
                    const Index s = t - K + 1 + j;
                    if (s < 0) continue;
                    y.row(start + t) += weight.value.col(j).transpose().cwiseProduct(x.row(start + s));
                }
                if (has_bias()) y.row(start + t) += bias.value.row(0);
            }
        }
        return y;
    }

    /// Accumulates dw and db and returns dX for the input `x` of forward.
    Mat<S> backward(const Mat<S>& x, const Mat<S>& dy, Index tokens) {
        check(x, tokens);
        expect_same_shape(x, dy, "ShortConv backward");
        Mat<S> dx = Mat<S>::Zero(x.rows(), x.cols());
        const Index K = kernel();
        for (Index start = 0; start < x.rows(); start += tokens) {
            for (Index t = 0; t < tokens; ++t) {
                for (Index j = 0; j < K; ++j) {
                    const Index s = t - K + 1 + j;
                    if (s < 0) continue;
                    weight.grad.col(j) += dy.row(start + t).cwiseProduct(x.row(start + s)).transpose();
                    dx.row(start + s) += weight.value.col(j).transpose().cwiseProduct(dy.row(start + t));
                }
                if (has_bias()) bias.grad.row(0) += dy.row(start + t);
            }
        }
        return dx;
    }

private:
    void check(const Mat<S>& x, Index tokens) const {
        expect_cols(x, channels(), "ShortConv input");
        if (tokens <= 0 || x.rows() % tokens != 0) {
            throw InputError("ShortConv: " + std::to_string(x.rows()) + " rows are not a whole number of sequences of " +
                             std::to_string(tokens) + " tokens");
        }
    }
};

}  // namespace miras::nn
