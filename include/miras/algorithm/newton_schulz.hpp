// Newton-Schulz orthogonalisation of a matrix (the quintic iteration of Muon, used by Atlas):
// X = G / (||G||_F + 1e-7), transposed when it has more rows than columns; k times
// A = X X^T, B = b A + c A A, X = a X + B X with (a, b, c) = (3.4445, -4.7750, 2.0315).
#pragma once

#include "miras/core/scalar.hpp"

namespace miras {

template <class S>
Mat<S> newton_schulz(const Mat<S>& g, int steps) {
    const S a = S(3.4445), b = S(-4.7750), c = S(2.0315);
    const bool transposed = g.rows() > g.cols();
    Mat<S> x = transposed ? Mat<S>(g.transpose()) : g;
    x /= math::sqrt(x.squaredNorm()) + S(1e-7);
    for (int i = 0; i < steps; ++i) {
        const Mat<S> A = x * x.transpose();
        const Mat<S> B = b * A + c * A * A;
        x = a * x + B * x;
    }
    return transposed ? Mat<S>(x.transpose()) : x;
}

}  // namespace miras
