// Central-difference checks of the gradients of the trainable mixers and networks, in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/nn/mqar_model.hpp"

namespace miras::test {

/// Compares each entry of `analytic` with the central difference of `loss` at the same entry of
/// `param`, within 1e-6 max(1, |difference|).
inline void expect_matches_differences(Mat<double>& param, const Mat<double>& analytic,
                                       const std::function<double()>& loss, const std::string& name) {
    const double h = 1e-6;
    for (Index i = 0; i < param.size(); ++i) {
        const double saved = param.data()[i];
        param.data()[i] = saved + h;
        const double up = loss();
        param.data()[i] = saved - h;
        const double down = loss();
        param.data()[i] = saved;
        const double numeric = (up - down) / (2 * h);
        EXPECT_NEAR(analytic.data()[i], numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << name << " element " << i;
    }
}

/// Draws every parameter of `model` from N(0, scale^2). Larger weights than the default
/// initialisation make every path carry signal.
template <class Model>
void draw_parameters(Model& model, std::mt19937_64& rng, double scale) {
    for (nn::Param<double>* p : model.params()) {
        p->value = nn::normal_matrix<double>(rng, p->value.rows(), p->value.cols(), scale);
    }
}

/// Compares every parameter gradient of `model`, taken by `backward`, with central differences of
/// `loss`.
template <class Model>
void expect_parameter_gradients_match(Model& model, const std::function<void()>& backward,
                                      const std::function<double()>& loss) {
    for (nn::Param<double>* p : model.params()) p->zero_grad();
    backward();
    std::vector<Mat<double>> grads;
    for (nn::Param<double>* p : model.params()) grads.push_back(p->grad);
    std::size_t i = 0;
    for (nn::Param<double>* p : model.params()) {
        expect_matches_differences(p->value, grads[i], loss, "parameter " + std::to_string(i));
        ++i;
    }
}

/// Checks the input and parameter gradients of a mixer of width `width` on 2 sequences of 4
/// tokens, with checkpoints every 3 tokens and weights drawn at scale 0.5. The loss is r . y for
/// a random r.
template <class Mixer>
void expect_mixer_gradients_match(Mixer& mixer, Index width, std::mt19937_64& rng) {
    mixer.checkpoint_every = 3;
    draw_parameters(mixer, rng, 0.5);
    const Index B = 2, T = 4;
    Mat<double> x = nn::normal_matrix<double>(rng, B * T, width, 1.0);
    const Mat<double> r = nn::normal_matrix<double>(rng, B * T, width, 1.0);
    const auto loss = [&] { return r.cwiseProduct(mixer.forward(x, B, T)).sum(); };

    loss();
    Mat<double> dx;
    expect_parameter_gradients_match(mixer, [&] { dx = mixer.backward(r); }, loss);
    expect_matches_differences(x, dx, loss, "x");
}

}  // namespace miras::test
