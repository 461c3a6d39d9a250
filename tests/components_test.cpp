// The hand-written first-order derivatives of every component against central finite differences.
// The suites cover the feature maps with the polynomial kernel identity, the matrix and vector
// memories (input vjp, parameter gradient, decay vjp) and the attentional biases (gradient in the
// prediction and in the value). Everything runs in double.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/bias/dot_product.hpp"
#include "miras/bias/l2.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/memory/vector.hpp"
#include "support.hpp"

namespace {

using namespace miras;
using miras::test::Random;

using VecD = Vec<double>;
using MatD = Mat<double>;

constexpr double kStep = 1e-6;
constexpr double kTolerance = 1e-8;

/// Central differences of f along every entry of x (any Eigen vector or matrix).
template <class X>
X numeric_gradient(const std::function<double(const X&)>& f, const X& x) {
    X gradient = X::Zero(x.rows(), x.cols());
    for (Index i = 0; i < x.size(); ++i) {
        X plus = x, minus = x;
        plus.data()[i] += kStep;
        minus.data()[i] -= kStep;
        gradient.data()[i] = (f(plus) - f(minus)) / (2.0 * kStep);
    }
    return gradient;
}

template <class X>
double max_abs_diff(const X& a, const X& b) {
    return (a - b).cwiseAbs().maxCoeff();
}

/// Random values in [-1, 1] kept at least 0.1 away from 0, where elu + 1 has its kink.
VecD random_vector(Random& random, Index n) {
    VecD x(n);
    for (Index i = 0; i < n; ++i) {
        const double magnitude = random.uniform(0.1, 1.0);
        x[i] = random.uniform(0.0, 1.0) < 0.5 ? -magnitude : magnitude;
    }
    return x;
}

MatD random_matrix(Random& random, Index rows, Index cols) {
    MatD m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = random.uniform(-1.0, 1.0);
    return m;
}

struct FeatureCase {
    std::string name;
    FeatureMap map;
};

void PrintTo(const FeatureCase& c, std::ostream* out) { *out << c.name; }

class FeatureMapDerivative : public ::testing::TestWithParam<FeatureCase> {};

constexpr Index kKeyDim = 3;

TEST_P(FeatureMapDerivative, VjpMatchesFiniteDifference) {
    const FeatureMap& map = GetParam().map;
    Random random(1);
    const VecD x = random_vector(random, kKeyDim);
    const VecD dout = random_vector(random, map.output_dim(kKeyDim));
    VecD dx;
    map.vjp(x.data(), kKeyDim, dout, dx);
    const auto f = [&](const VecD& at) {
        VecD phi;
        map.apply(at.data(), kKeyDim, phi);
        return dout.dot(phi);
    };
    EXPECT_LE(max_abs_diff(dx, numeric_gradient<VecD>(f, x)), kTolerance);
}

/// The polynomial maps, which also have coefficients and a kernel identity.
class PolynomialMap : public FeatureMapDerivative {};

TEST_P(PolynomialMap, CoefficientGradientMatchesFiniteDifference) {
    const FeatureMap& map = GetParam().map;
    Random random(2);
    const VecD x = random_vector(random, kKeyDim);
    const VecD dout = random_vector(random, map.output_dim(kKeyDim));
    VecD dx, da;
    map.vjp(x.data(), kKeyDim, dout, dx, &da);
    VecD coefficients = Eigen::Map<const VecD>(map.coefficients.data(), static_cast<Index>(map.coefficients.size()));
    const auto f = [&](const VecD& a) {
        FeatureMap moved = map;
        moved.coefficients.assign(a.data(), a.data() + a.size());
        VecD phi;
        moved.apply(x.data(), kKeyDim, phi);
        return dout.dot(phi);
    };
    ASSERT_EQ(da.size(), coefficients.size());
    EXPECT_LE(max_abs_diff(da, numeric_gradient<VecD>(f, coefficients)), kTolerance);
}

// phi(q) . phi(k) = sum_i a_i (q . k)^i, the truncated Taylor kernel.
TEST_P(PolynomialMap, KernelIdentity) {
    const FeatureMap& map = GetParam().map;
    Random random(3);
    const VecD q = random_vector(random, kKeyDim), k = random_vector(random, kKeyDim);
    VecD phi_q, phi_k;
    map.apply(q.data(), kKeyDim, phi_q);
    map.apply(k.data(), kKeyDim, phi_k);
    double kernel = 0.0;
    for (int i = 0; i <= map.degree(); ++i) kernel += map.coefficients[static_cast<std::size_t>(i)] * std::pow(q.dot(k), i);
    EXPECT_NEAR(phi_q.dot(phi_k), kernel, 1e-13);
    Index dim = 0;
    for (int i = 0; i <= map.degree(); ++i) dim += static_cast<Index>(std::pow(kKeyDim, i));
    EXPECT_EQ(map.output_dim(kKeyDim), dim);
}

std::string case_name(const ::testing::TestParamInfo<FeatureCase>& info) { return info.param.name; }

const std::vector<FeatureCase> kPolynomialMaps{
    {"polynomial2", FeatureMap::polynomial(2)},
    {"polynomial3", FeatureMap::polynomial(3)},
    {"polynomial3_custom", FeatureMap{FeatureKind::polynomial, {0.5, 1.2, 0.7, 0.3}}},
};

INSTANTIATE_TEST_SUITE_P(Maps, FeatureMapDerivative,
                         ::testing::Values(FeatureCase{"identity", FeatureMap::identity()},
                                           FeatureCase{"elu_plus_one", FeatureMap::elu_plus_one()}, kPolynomialMaps[0],
                                           kPolynomialMaps[1], kPolynomialMaps[2]),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Maps, PolynomialMap, ::testing::ValuesIn(kPolynomialMaps), case_name);

/// Parameter sizes of a memory: W [V, D] for the matrix, and w [1, V] with D = V for the vector.
template <class M>
struct MemorySizes;
template <>
struct MemorySizes<MatrixMemory> {
    static constexpr Index rows = 4, cols = 3, features = 3, value = 4;
};
template <>
struct MemorySizes<VectorMemory> {
    static constexpr Index rows = 1, cols = 4, features = 4, value = 4;
};

template <class M>
class MemoryDerivative : public ::testing::Test {
protected:
    using Sizes = MemorySizes<M>;
    M memory;
    Random random{4};
    MatD W = random_matrix(random, Sizes::rows, Sizes::cols);
    VecD x = random_vector(random, Sizes::features);
    VecD dy = random_vector(random, Sizes::value);

    double readout(const MatD& at_W, const VecD& at_x) const {
        VecD y;
        memory.predict(at_W, at_x, y);
        return dy.dot(y);
    }
};

using Memories = ::testing::Types<MatrixMemory, VectorMemory>;
TYPED_TEST_SUITE(MemoryDerivative, Memories);

// input_vjp is the gradient of <dy, M(W; x)> with respect to x.
TYPED_TEST(MemoryDerivative, InputVjpMatchesFiniteDifference) {
    VecD dx;
    this->memory.input_vjp(this->W, this->dy, dx);
    const auto f = [&](const VecD& x) { return this->readout(this->W, x); };
    EXPECT_LE(max_abs_diff(dx, numeric_gradient<VecD>(f, this->x)), kTolerance);
}

// add_gradient with coefficient 1 on a zero target is the gradient of <dy, M(W; x)> in W.
TYPED_TEST(MemoryDerivative, ParameterGradientMatchesFiniteDifference) {
    MatD gradient = MatD::Zero(this->W.rows(), this->W.cols());
    this->memory.add_gradient(gradient, 1.0, this->dy, this->x);
    const auto f = [&](const MatD& W) { return this->readout(W, this->x); };
    EXPECT_LE(max_abs_diff(gradient, numeric_gradient<MatD>(f, this->W)), kTolerance);
}

// add_gradient scales by its coefficient and adds to the current target.
TYPED_TEST(MemoryDerivative, AddGradientScalesAndAccumulates) {
    MatD gradient = MatD::Zero(this->W.rows(), this->W.cols());
    this->memory.add_gradient(gradient, 1.0, this->dy, this->x);
    MatD target = this->W;
    this->memory.add_gradient(target, -0.3, this->dy, this->x);
    EXPECT_LE(max_abs_diff(target, MatD(this->W - 0.3 * gradient)), 1e-15);
}

// decay_vjp gives the gradient of <dD, decay(W, g)> in W and in g, for a scalar gate and per channel.
TYPED_TEST(MemoryDerivative, DecayVjpMatchesFiniteDifference) {
    const MatD dD = random_matrix(this->random, this->W.rows(), this->W.cols());
    struct GateCase {
        Axis axis;
        Index count;
    };
    const std::vector<GateCase> gates{{Axis::head, 1}, {Axis::key, this->W.cols()}, {Axis::value, this->W.rows()}};
    for (const GateCase& gate : gates) {
        if (gate.count == 1 && gate.axis != Axis::head) continue;
        VecD g(gate.count);
        for (Index i = 0; i < gate.count; ++i) g[i] = this->random.uniform(-1.0, -0.05);
        const auto decayed = [&](const MatD& W, const VecD& at_g) {
            MatD D = W;
            this->memory.decay(D, GateValues<double>{at_g.data(), at_g.size()}, gate.axis);
            return D.cwiseProduct(dD).sum();
        };
        MatD dW;
        VecD dg;
        this->memory.decay_vjp(this->W, GateValues<double>{g.data(), g.size()}, gate.axis, dD, dW, dg);
        const auto in_W = [&](const MatD& W) { return decayed(W, g); };
        const auto in_g = [&](const VecD& at_g) { return decayed(this->W, at_g); };
        EXPECT_LE(max_abs_diff(dW, numeric_gradient<MatD>(in_W, this->W)), kTolerance) << axis_name(gate.axis);
        EXPECT_LE(max_abs_diff(dg, numeric_gradient<VecD>(in_g, g)), kTolerance) << axis_name(gate.axis);
    }
}

template <class B>
class BiasDerivative : public ::testing::Test {
protected:
    B bias;
    Random random{5};
    VecD y = random_vector(random, 4);
    VecD v = random_vector(random, 4);
};

using Biases = ::testing::Types<DotProductBias, L2Bias>;
TYPED_TEST_SUITE(BiasDerivative, Biases);

TYPED_TEST(BiasDerivative, GradientInPredictionMatchesFiniteDifference) {
    VecD dy;
    this->bias.gradient(this->y, this->v.data(), dy);
    const auto f = [&](const VecD& y) { return this->bias.loss(y, this->v.data()); };
    EXPECT_LE(max_abs_diff(dy, numeric_gradient<VecD>(f, this->y)), kTolerance);
}

TYPED_TEST(BiasDerivative, GradientInValueMatchesFiniteDifference) {
    VecD dv;
    this->bias.value_gradient(this->y, this->v.data(), dv);
    const auto f = [&](const VecD& v) { return this->bias.loss(this->y, v.data()); };
    EXPECT_LE(max_abs_diff(dv, numeric_gradient<VecD>(f, this->v)), kTolerance);
}

// The l2 loss carries the 1/2: l(y, v) = 1/2 ||y - v||^2, and the dot product is l = -<y, v>.
TEST(BiasValue, LossesFollowTheirFormulas) {
    const VecD y = (VecD(3) << 1.0, -2.0, 0.5).finished();
    const VecD v = (VecD(3) << 0.5, 1.0, 2.5).finished();
    EXPECT_DOUBLE_EQ(L2Bias{}.loss(y, v.data()), 0.5 * (0.25 + 9.0 + 4.0));
    EXPECT_DOUBLE_EQ(DotProductBias{}.loss(y, v.data()), -(0.5 - 2.0 + 1.25));
}

}  // namespace
