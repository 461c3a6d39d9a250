// Parameters of an MLP memory: trained weight matrices and bias vectors, plus the fixed affine
// parameters of its LayerNorm (set per head at initialisation, never trained, not part of the
// saved state). The parameter arithmetic of param_ops.hpp acts on the trained parts only.
#pragma once

#include <vector>

#include "miras/memory/param_ops.hpp"

namespace miras {

template <class S>
struct MlpParams {
    std::vector<Mat<S>> weights;
    std::vector<Vec<S>> biases;  // empty when the MLP has no biases
    Vec<S> norm_weight, norm_bias;  // empty when the LayerNorm has no affine parameters
};

template <class S, class A>
void params_axpy(MlpParams<S>& y, const A& a, const MlpParams<S>& x) {
    for (std::size_t i = 0; i < y.weights.size(); ++i) y.weights[i] += S(a) * x.weights[i];
    for (std::size_t i = 0; i < y.biases.size(); ++i) y.biases[i] += S(a) * x.biases[i];
}

template <class S, class A>
void params_scale(MlpParams<S>& y, const A& a) {
    for (auto& w : y.weights) w *= S(a);
    for (auto& b : y.biases) b *= S(a);
}

template <class S>
void params_set_zero(MlpParams<S>& y) {
    for (auto& w : y.weights) w.setZero();
    for (auto& b : y.biases) b.setZero();
}

template <class S>
S params_squared_norm(const MlpParams<S>& x) {
    S total = S(0);
    for (const auto& w : x.weights) total += w.squaredNorm();
    for (const auto& b : x.biases) total += b.squaredNorm();
    return total;
}

/// Applies f to every trained weight matrix (biases are left out: the matrix-shaped
/// operations such as Newton-Schulz orthogonalisation act on weight matrices).
template <class S, class F>
void params_for_each(MlpParams<S>& x, F&& f) {
    for (auto& w : x.weights) f(w);
}

/// Applies f to every trained block, weights and biases (for entry-wise maps).
template <class S, class F>
void params_for_each_block(MlpParams<S>& x, F&& f) {
    for (auto& w : x.weights) f(w);
    for (auto& b : x.biases) f(b);
}

}  // namespace miras
