// Gated output norm, y = RMSNorm(x) * silu(z) per head of `width` channels with one gain gamma
// [1, width] shared by the heads, as the fused gated RMSNorm of flash-linear-attention that closes
// Gated DeltaNet, Mamba2 and KDA. Backward returns dx and dz and accumulates dgamma.
#pragma once

#include "miras/memory/activation.hpp"
#include "miras/nn/param.hpp"
#include "miras/nn/rms_norm.hpp"

namespace miras::nn {

template <class S>
struct GatedRMSNorm {
    RMSNorm<S> norm;  ///< Over one head of `width` channels.

    GatedRMSNorm() = default;
    explicit GatedRMSNorm(Index width, S eps = S(1e-6)) : norm(width, eps) {}

    Index width() const { return norm.dim(); }

    /// Normalises X [N, H * width] per head and multiplies by silu(Z), Z of the same shape.
    Mat<S> forward(const Mat<S>& x, const Mat<S>& z) const {
        expect_same_shape(x, z, "GatedRMSNorm");
        const Mat<S> y = norm.forward(heads(x));
        return rows_back(y, x.rows()).cwiseProduct(z.unaryExpr([](S v) { return activate<S>(Activation::silu, v); }));
    }

    struct Gradients {
        Mat<S> dx;
        Mat<S> dz;
    };

    Gradients backward(const Mat<S>& x, const Mat<S>& z, const Mat<S>& dy) {
        expect_same_shape(x, dy, "GatedRMSNorm backward");
        const Mat<S> normed = rows_back(norm.forward(heads(x)), x.rows());
        const Mat<S> gate = z.unaryExpr([](S v) { return activate<S>(Activation::silu, v); });
        const Mat<S> gate_slope = z.unaryExpr([](S v) { return activate_derivative<S>(Activation::silu, v); });
        Gradients g;
        g.dz = dy.cwiseProduct(normed).cwiseProduct(gate_slope);
        g.dx = rows_back(norm.backward(heads(x), heads(Mat<S>(dy.cwiseProduct(gate)))), x.rows());
        return g;
    }

private:
    // [N, H * width] to [N * H, width] and back; row-major storage makes both a reshape.
    Mat<S> heads(const Mat<S>& x) const {
        if (x.cols() % width() != 0) {
            throw InputError("GatedRMSNorm: " + std::to_string(x.cols()) + " columns are not whole heads of " +
                             std::to_string(width()));
        }
        return Eigen::Map<const Mat<S>>(x.data(), x.rows() * (x.cols() / width()), width());
    }
    Mat<S> rows_back(const Mat<S>& y, Index rows) const {
        return Eigen::Map<const Mat<S>>(y.data(), rows, y.size() / rows);
    }
};

}  // namespace miras::nn
