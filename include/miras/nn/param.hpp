// Trainable parameters of the outer model: a value and the gradient accumulated into it. Matrices
// are row-major Eigen matrices whose rows are tokens (B * T rows for a batch of sequences).
#pragma once

#include <string>

#include <Eigen/Dense>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"
#include "miras/core/tensor.hpp"

namespace miras::nn {

// Matrices are miras::Mat<S>, the row-major Eigen matrix of the core.

/// A parameter tensor and its gradient, of the same shape.
template <class S>
struct Param {
    Mat<S> value;
    Mat<S> grad;

    Param() = default;
    explicit Param(Mat<S> v) : value(std::move(v)), grad(Mat<S>::Zero(value.rows(), value.cols())) {}
    void zero_grad() { grad.setZero(value.rows(), value.cols()); }
};

/// Raises InputError unless `x` has `cols` columns; `what` names the module and the argument.
template <class S>
void expect_cols(const Mat<S>& x, Index cols, const std::string& what) {
    if (x.cols() != cols) {
        throw InputError(what + " has " + std::to_string(x.cols()) + " columns, expected " + std::to_string(cols));
    }
}

/// Raises InputError unless `a` and `b` have the same shape.
template <class S>
void expect_same_shape(const Mat<S>& a, const Mat<S>& b, const std::string& what) {
    if (a.rows() != b.rows() || a.cols() != b.cols()) {
        throw InputError(what + ": shapes [" + std::to_string(a.rows()) + ", " + std::to_string(a.cols()) +
                         "] and [" + std::to_string(b.rows()) + ", " + std::to_string(b.cols()) + "] differ");
    }
}

}  // namespace miras::nn
