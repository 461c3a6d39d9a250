// Eigen aliases used by every component, and scalar helpers that work for float, double and Dual.
#pragma once

#include <cmath>

#include <Eigen/Core>

#include "miras/core/dual.hpp"
#include "miras/core/tensor.hpp"

namespace miras {

template <class S> using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
/// Row-major matrix: a memory W [V, K] keeps each value row contiguous over the key axis.
template <class S> using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S> using VecMap = Eigen::Map<const Vec<S>>;

/// Scalar math that finds std:: functions for built-in types and miras:: ones for Dual by ADL.
namespace math {
template <class S> S exp(const S& x) { using std::exp; return exp(x); }
template <class S> S log(const S& x) { using std::log; return log(x); }
template <class S> S sqrt(const S& x) { using std::sqrt; return sqrt(x); }
template <class S> S abs(const S& x) { using std::abs; return abs(x); }
template <class S> S tanh(const S& x) { using std::tanh; return tanh(x); }
template <class S> S erf(const S& x) { using std::erf; return erf(x); }
template <class S> bool isfinite(const S& x) { using std::isfinite; return isfinite(x); }
template <class S> S sigmoid(const S& x) { return S(1) / (S(1) + exp(-x)); }
}  // namespace math

/// Name of a scalar type, for messages and test names.
template <class S> constexpr const char* scalar_name() {
    if constexpr (std::is_same_v<S, float>) return "float";
    else if constexpr (std::is_same_v<S, double>) return "double";
    else return "dual";
}

}  // namespace miras
