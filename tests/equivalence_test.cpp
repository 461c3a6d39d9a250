// Equivalences between points of the algebra and the published models they reproduce. Each is
// checked against a reference written here with plain loops, not with the library. The references
// cover quadratic-form linear attention, the RetNet and Mamba2 weightings, the DeltaNet recurrence,
// both decay placements, the Longhorn closed forms, ridge regression over the whole history,
// softmax, sliding-window and forgetting attention, DeltaProduct and reading before the write.
// Every check runs in double (relative error 1e-12) and float (1e-4).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "support.hpp"

namespace {

using namespace miras;
using namespace miras::test;

constexpr Index kB = 2, kT = 7, kH = 2, kK = 3, kV = 4;
constexpr double kScale = 0.6;

LayerOptions options(Index K = kK, Index V = kV, std::optional<double> scale = kScale) {
    LayerOptions o;
    o.heads = kH;
    o.key_dim = K;
    o.value_dim = V;
    o.query_scale = scale;
    return o;
}

/// Element (b, t, h, c) of a [B, T, H, C] tensor and (b, t, h) of a [B, T, H] gate.
double at(const Tensor<double>& x, Index b, Index t, Index h, Index c) {
    return x[((b * x.dim(1) + t) * x.dim(2) + h) * x.dim(3) + c];
}
double at(const Tensor<double>& x, Index b, Index t, Index h) { return x[(b * x.dim(1) + t) * x.dim(2) + h]; }
double& out_at(Tensor<double>& x, Index b, Index t, Index h, Index c) {
    return x[((b * x.dim(1) + t) * x.dim(2) + h) * x.dim(3) + c];
}

double dot_qk(const Tensor<double>& q, Index tq, const Tensor<double>& k, Index tk, Index b, Index h) {
    double total = 0.0;
    for (Index j = 0; j < q.dim(3); ++j) total += at(q, b, tq, h, j) * at(k, b, tk, h, j);
    return total;
}

/// A [V, K] matrix per (b, h), row-major, for the references that keep a state.
using Matrix = std::vector<std::vector<double>>;
Matrix zeros(Index rows, Index cols) { return Matrix(rows, std::vector<double>(cols, 0.0)); }

/// Runs the layer in scalar S on the inputs and returns the output in double.
template <class S, class L>
Tensor<double> run(const L& layer, const TensorMap<double>& in) {
    const TensorMap<S> cast = cast_all<S>(in);
    const Tensor<S> out = layer.forward(as_inputs(cast));
    Tensor<double> result(out.shape());
    for (Index i = 0; i < out.size(); ++i) result[i] = value_of(out[i]);
    return result;
}

template <class S>
double tolerance() {
    return std::is_same_v<S, double> ? 1e-12 : 1e-4;
}

template <class L>
TensorMap<double> inputs_for(const L& layer, std::uint64_t seed, Index B = kB, Index T = kT) {
    return random_inputs(layer.dims(), layer.gates(), B, T, seed);
}

/// o_t = s sum_{u<=t} w(t, u) v_u (k_u . q_t) for a weight w(b, h, t, u) given by the caller.
template <class Weight>
Tensor<double> quadratic_form(const TensorMap<double>& in, double scale, Weight weight) {
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Index B = q.dim(0), T = q.dim(1), H = q.dim(2), V = v.dim(3);
    Tensor<double> o({B, T, H, V});
    for (Index b = 0; b < B; ++b)
        for (Index t = 0; t < T; ++t)
            for (Index h = 0; h < H; ++h)
                for (Index u = 0; u <= t; ++u) {
                    const double a = scale * weight(b, h, t, u) * dot_qk(q, t, k, u, b, h);
                    for (Index c = 0; c < V; ++c) out_at(o, b, t, h, c) += a * at(v, b, u, h, c);
                }
    return o;
}

template <class S>
class Equivalence : public ::testing::Test {};
using Scalars = ::testing::Types<double, float>;
TYPED_TEST_SUITE(Equivalence, Scalars);

// E1: the dot-product bias with one unit gradient step and no retention is linear attention.
TYPED_TEST(Equivalence, DotProductStepIsLinearAttention) {
    const auto layer = presets::linear_attention(options());
    const auto in = inputs_for(layer, 11);
    const auto ref = quadratic_form(in, kScale, [](Index, Index, Index, Index) { return 1.0; });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// E1 with RetNet's fixed per-head decay gamma_h = 1 - 2^(-5-h): weight gamma_h^(t-u).
TYPED_TEST(Equivalence, FixedHeadDecayIsRetNet) {
    const auto layer = presets::retnet(options());
    const auto in = inputs_for(layer, 12);
    const auto ref = quadratic_form(in, kScale, [](Index, Index h, Index t, Index u) {
        const double gamma = 1.0 - std::pow(2.0, -5.0 - static_cast<double>(h));
        return std::pow(gamma, static_cast<double>(t - u));
    });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// E1 with a strong fixed per-head decay, so that a wrong exponent shows.
TYPED_TEST(Equivalence, StrongFixedHeadDecayIsPowerWeighting) {
    const std::vector<double> gammas{0.5, 0.8};
    const presets::DecayedLinearAttention layer(
        options(), {}, {}, DecayRetention{GateConfig::per_head({std::log(gammas[0]), std::log(gammas[1])})},
        presets::unit_step());
    const auto in = inputs_for(layer, 13);
    const auto ref = quadratic_form(in, kScale, [&](Index, Index h, Index t, Index u) {
        return std::pow(gammas[static_cast<std::size_t>(h)], static_cast<double>(t - u));
    });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// E1 with Lightning attention's fixed decay g_h = -(8 / H)(1 - l / L) h, for layer l = 1 of L = 3.
TYPED_TEST(Equivalence, LightningDecayIsPowerWeighting) {
    const auto layer = presets::lightning_attention(options(), 1, 3);
    const auto in = inputs_for(layer, 15);
    const auto ref = quadratic_form(in, kScale, [](Index, Index h, Index t, Index u) {
        const double g = -(8.0 / kH) * (1.0 - 1.0 / 3.0) * static_cast<double>(h);
        return std::exp(g * static_cast<double>(t - u));
    });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// E1 with a per-token, per-key-channel decay (GLA): the weight of channel j is
// prod_{r=u+1}^{t} exp(g_{r,j}), so o_t = s sum_u v_u sum_j q_{t,j} k_{u,j} prod_r exp(g_{r,j}).
TYPED_TEST(Equivalence, KeyChannelDecayIsGla) {
    const auto layer = presets::gla(options());
    const auto in = inputs_for(layer, 16);
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Tensor<double>& g = in.at("g");
    Tensor<double> ref({kB, kT, kH, kV});
    for (Index b = 0; b < kB; ++b)
        for (Index t = 0; t < kT; ++t)
            for (Index h = 0; h < kH; ++h)
                for (Index u = 0; u <= t; ++u) {
                    double a = 0.0;
                    for (Index j = 0; j < kK; ++j) {
                        double product = 1.0;
                        for (Index r = u + 1; r <= t; ++r) product *= std::exp(at(g, b, r, h, j));
                        a += at(q, b, t, h, j) * at(k, b, u, h, j) * product;
                    }
                    for (Index c = 0; c < kV; ++c) out_at(ref, b, t, h, c) += kScale * a * at(v, b, u, h, c);
                }
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// E1 with a per-token scalar decay: Mamba2's weight prod_{r=u+1}^{t} exp(g_r).
TYPED_TEST(Equivalence, TokenScalarDecayIsMamba2) {
    const auto layer = presets::mamba2(options());
    const auto in = inputs_for(layer, 14);
    const Tensor<double>& g = in.at("g");
    const auto ref = quadratic_form(in, kScale, [&](Index b, Index h, Index t, Index u) {
        double product = 1.0;
        for (Index r = u + 1; r <= t; ++r) product *= std::exp(at(g, b, r, h));
        return product;
    });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

/// The gated delta rule in the orientation of flash-linear-attention's recurrent reference: the
/// state S is [K, V], S <- a S; S <- S + beta k (v - S^T k)^T; o = scale S^T q. With
/// decay_after, the decay is applied after the correction term was computed from the old state.
Tensor<double> delta_reference(const TensorMap<double>& in, double scale, const Tensor<double>* g,
                               bool decay_after = false) {
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Tensor<double>& beta = in.at("eta");
    const Index B = q.dim(0), T = q.dim(1), H = q.dim(2), K = q.dim(3), V = v.dim(3);
    Tensor<double> o({B, T, H, V});
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            Matrix S = zeros(K, V);
            for (Index t = 0; t < T; ++t) {
                const double a = g != nullptr ? std::exp(at(*g, b, t, h)) : 1.0;
                if (!decay_after)
                    for (auto& row : S)
                        for (double& x : row) x *= a;
                std::vector<double> error(V);
                for (Index c = 0; c < V; ++c) {
                    double predicted = 0.0;
                    for (Index j = 0; j < K; ++j) predicted += S[j][c] * at(k, b, t, h, j);
                    error[c] = at(v, b, t, h, c) - predicted;
                }
                if (decay_after)
                    for (auto& row : S)
                        for (double& x : row) x *= a;
                for (Index j = 0; j < K; ++j)
                    for (Index c = 0; c < V; ++c) S[j][c] += at(beta, b, t, h) * at(k, b, t, h, j) * error[c];
                for (Index c = 0; c < V; ++c) {
                    double total = 0.0;
                    for (Index j = 0; j < K; ++j) total += S[j][c] * at(q, b, t, h, j);
                    out_at(o, b, t, h, c) = scale * total;
                }
            }
        }
    }
    return o;
}

// E2: the l2 bias with one gradient step of rate beta is DeltaNet.
TYPED_TEST(Equivalence, L2StepIsDeltaNet) {
    const auto layer = presets::deltanet(options());
    const auto in = inputs_for(layer, 21);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), delta_reference(in, kScale, nullptr)), tolerance<TypeParam>());
}

TYPED_TEST(Equivalence, DecayThenGradientIsGatedDeltaNet) {
    const auto layer = presets::gated_deltanet(options());
    const auto in = inputs_for(layer, 22);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), delta_reference(in, kScale, &in.at("g"))),
              tolerance<TypeParam>());
}

presets::GatedDeltaNet placed(Placement placement) {
    return presets::GatedDeltaNet(options(), {}, {}, presets::per_token_decay(Axis::head, placement),
                                  presets::per_token_step());
}

// E3: both placements agree when every g = 0 ...
TYPED_TEST(Equivalence, PlacementsAgreeWithoutDecay) {
    const auto before = placed(Placement::decay_then_gradient);
    const auto after = placed(Placement::gradient_then_decay);
    auto in = inputs_for(before, 31);
    for (double& x : in.at("g").values()) x = 0.0;
    EXPECT_LE(max_rel_diff(run<TypeParam>(before, in), run<TypeParam>(after, in)), tolerance<TypeParam>());
}

// ... and differ when g < 0.
TYPED_TEST(Equivalence, PlacementsDifferWithDecay) {
    const auto before = placed(Placement::decay_then_gradient);
    const auto after = placed(Placement::gradient_then_decay);
    const auto in = inputs_for(before, 32);
    EXPECT_GT(max_rel_diff(run<TypeParam>(before, in), run<TypeParam>(after, in)), 1e-2);
}

// E3: gradient_then_decay is W_t = a W - eta (W k - v) k^T, the gradient at the undecayed state.
TYPED_TEST(Equivalence, GradientThenDecayFormula) {
    const auto layer = placed(Placement::gradient_then_decay);
    const auto in = inputs_for(layer, 33);
    const auto ref = delta_reference(in, kScale, &in.at("g"), /*decay_after=*/true);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

enum class RateAxis { head, value, key };

/// Longhorn's closed-form implicit step, W = W' - diag(e) (W' k - v) u^T with e and u by axis:
/// head or value: e_d = beta_d / (1 + beta_d k.k), u = k; key: e = 1 / (1 + k^T diag(beta) k), u = beta * k.
/// The diagonal variant replaces (W' k) k^T by W' diag(k * k).
Tensor<double> implicit_reference(const TensorMap<double>& in, double scale, RateAxis axis, bool diagonal) {
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Tensor<double>& beta = in.at("eta");
    const Index B = q.dim(0), T = q.dim(1), H = q.dim(2), K = q.dim(3), V = v.dim(3);
    Tensor<double> o({B, T, H, V});
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            Matrix W = zeros(V, K);
            for (Index t = 0; t < T; ++t) {
                const auto rate = [&](Index i) { return beta.rank() == 3 ? at(beta, b, t, h) : at(beta, b, t, h, i); };
                double kk = 0.0, kbk = 0.0;
                for (Index j = 0; j < K; ++j) {
                    kk += at(k, b, t, h, j) * at(k, b, t, h, j);
                    if (axis == RateAxis::key) kbk += rate(j) * at(k, b, t, h, j) * at(k, b, t, h, j);
                }
                const Matrix previous = W;
                for (Index d = 0; d < V; ++d) {
                    const double e = axis == RateAxis::key ? 1.0 / (1.0 + kbk)
                                                           : rate(axis == RateAxis::value ? d : 0) /
                                                                 (1.0 + rate(axis == RateAxis::value ? d : 0) * kk);
                    double predicted = 0.0;
                    for (Index j = 0; j < K; ++j) predicted += previous[d][j] * at(k, b, t, h, j);
                    for (Index j = 0; j < K; ++j) {
                        const double kj = at(k, b, t, h, j);
                        const double u = axis == RateAxis::key ? rate(j) * kj : kj;
                        if (diagonal) {
                            W[d][j] -= e * (previous[d][j] * kj * kj - at(v, b, t, h, d) * kj);
                        } else {
                            W[d][j] -= e * (predicted - at(v, b, t, h, d)) * u;
                        }
                    }
                }
                for (Index d = 0; d < V; ++d) {
                    double total = 0.0;
                    for (Index j = 0; j < K; ++j) total += W[d][j] * at(q, b, t, h, j);
                    out_at(o, b, t, h, d) = scale * total;
                }
            }
        }
    }
    return o;
}

presets::Longhorn implicit_layer(Axis axis, bool diagonal = false) {
    return presets::Longhorn(options(), {}, {}, {}, ImplicitStep{GateConfig::input(axis), diagonal});
}

// E4: the implicit l2 step is Longhorn's closed form, for a rate per head, per value, per key channel.
TYPED_TEST(Equivalence, ImplicitStepPerHeadIsLonghorn) {
    const auto layer = implicit_layer(Axis::head);
    const auto in = inputs_for(layer, 41);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), implicit_reference(in, kScale, RateAxis::head, false)),
              tolerance<TypeParam>());
}

TYPED_TEST(Equivalence, ImplicitStepPerValueIsLonghorn) {
    const auto layer = presets::longhorn(options(), /*diagonal=*/false);
    const auto in = inputs_for(layer, 42);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), implicit_reference(in, kScale, RateAxis::value, false)),
              tolerance<TypeParam>());
}

TYPED_TEST(Equivalence, ImplicitStepPerKeyIsMetricClosedForm) {
    const auto layer = implicit_layer(Axis::key);
    const auto in = inputs_for(layer, 43);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), implicit_reference(in, kScale, RateAxis::key, false)),
              tolerance<TypeParam>());
}

TYPED_TEST(Equivalence, DiagonalImplicitStepMatchesItsLoop) {
    const auto layer = presets::longhorn(options(), /*diagonal=*/true);
    const auto in = inputs_for(layer, 44);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), implicit_reference(in, kScale, RateAxis::value, true)),
              tolerance<TypeParam>());
}

// E4, second route for the key-channel metric: every written state W is the minimiser of
// 1/2 ||W k - v||^2 + 1/2 ||W - W'||^2_{diag(1/beta)}, so the gradient
// (W k - v) k^T + (W - W') diag(1/beta) vanishes at it.
TYPED_TEST(Equivalence, PerKeyStepMinimisesProximalObjective) {
    using S = TypeParam;
    const auto layer = implicit_layer(Axis::key);
    const Index T = 5;
    const auto in = inputs_for(layer, 45, 1, T);
    auto state = layer.template initial_state<S>(1);
    double worst = 0.0;
    for (Index t = 0; t < T; ++t) {
        const TensorMap<S> token = cast_all<S>(token_slice(in, T, t, t + 1));
        const Tensor<S> before = layer.save_state(state).at("W");
        layer.forward(as_inputs(token), state);
        const Tensor<S> after = layer.save_state(state).at("W");
        for (Index h = 0; h < kH; ++h) {
            for (Index d = 0; d < kV; ++d) {
                double predicted = 0.0;
                for (Index j = 0; j < kK; ++j) predicted += value_of(after[(h * kV + d) * kK + j]) * at(in.at("k"), 0, t, h, j);
                const double error = predicted - at(in.at("v"), 0, t, h, d);
                for (Index j = 0; j < kK; ++j) {
                    const Index i = (h * kV + d) * kK + j;
                    const double gradient = error * at(in.at("k"), 0, t, h, j) +
                                            (value_of(after[i]) - value_of(before[i])) / at(in.at("eta"), 0, t, h, j);
                    worst = std::max(worst, std::abs(gradient));
                }
            }
        }
    }
    EXPECT_LE(worst, (std::is_same_v<S, double> ? 1e-12 : 1e-5));
}

/// Solves A x = r by Gaussian elimination with partial pivoting (A is n x n, consumed).
std::vector<double> solve(Matrix A, std::vector<double> r) {
    const std::size_t n = r.size();
    for (std::size_t col = 0; col < n; ++col) {
        std::size_t pivot = col;
        for (std::size_t row = col + 1; row < n; ++row)
            if (std::abs(A[row][col]) > std::abs(A[pivot][col])) pivot = row;
        std::swap(A[col], A[pivot]);
        std::swap(r[col], r[pivot]);
        for (std::size_t row = col + 1; row < n; ++row) {
            const double f = A[row][col] / A[col][col];
            for (std::size_t j = col; j < n; ++j) A[row][j] -= f * A[col][j];
            r[row] -= f * r[col];
        }
    }
    std::vector<double> x(n);
    for (std::size_t i = n; i-- > 0;) {
        double total = r[i];
        for (std::size_t j = i + 1; j < n; ++j) total -= A[i][j] * x[j];
        x[i] = total / A[i][i];
    }
    return x;
}

/// E9 reference: at every token, W* = (sum_i w_i beta_i v_i k_i^T)(sum_i w_i beta_i k_i k_i^T + Lambda)^{-1}
/// over the whole history with w_i = prod_{r=i+1}^{t} exp(g_r), and o_t = W* q_t.
Tensor<double> ridge_reference(const TensorMap<double>& in, const std::vector<double>& lambda) {
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Tensor<double>& g = in.at("g");
    const Tensor<double>& beta = in.at("beta");
    const Index B = q.dim(0), T = q.dim(1), H = q.dim(2), K = q.dim(3), V = v.dim(3);
    Tensor<double> o({B, T, H, V});
    for (Index b = 0; b < B; ++b) {
        for (Index h = 0; h < H; ++h) {
            for (Index t = 0; t < T; ++t) {
                Matrix A = zeros(K, K), C = zeros(V, K);
                for (Index i = 0; i <= t; ++i) {
                    double w = at(beta, b, i, h);
                    for (Index r = i + 1; r <= t; ++r) w *= std::exp(at(g, b, r, h));
                    for (Index j = 0; j < K; ++j) {
                        for (Index l = 0; l < K; ++l) A[j][l] += w * at(k, b, i, h, j) * at(k, b, i, h, l);
                        for (Index d = 0; d < V; ++d) C[d][j] += w * at(v, b, i, h, d) * at(k, b, i, h, j);
                    }
                }
                for (Index j = 0; j < K; ++j) A[j][j] += lambda[static_cast<std::size_t>(h * K + j)];
                // o = C A^{-1} q: solve A z = q (A is symmetric), then o = C z.
                std::vector<double> query(K);
                for (Index j = 0; j < K; ++j) query[j] = at(q, b, t, h, j);
                const std::vector<double> z = solve(A, query);
                for (Index d = 0; d < V; ++d) {
                    double total = 0.0;
                    for (Index j = 0; j < K; ++j) total += C[d][j] * z[j];
                    out_at(o, b, t, h, d) = total;
                }
            }
        }
    }
    return o;
}

// E9: least squares is ridge regression over the whole decayed history (MesaNet).
TYPED_TEST(Equivalence, LeastSquaresIsRidgeRegression) {
    const std::vector<double> lambda{0.3, 0.6, 0.9, 1.2, 0.5, 2.0};  // per head and key channel
    const auto layer = presets::mesanet(options(kK, kV, std::nullopt), lambda);
    const auto in = inputs_for(layer, 91);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ridge_reference(in, lambda)), tolerance<TypeParam>());
}

// E9: conjugate gradient with D iterations is the exact solve (D = K here).
TEST(EquivalenceDouble, ConjugateGradientWithKStepsIsExact) {
    const std::vector<double> lambda{0.3, 0.6, 0.9, 1.2, 0.5, 2.0};
    const auto exact = presets::mesanet(options(kK, kV, std::nullopt), lambda);
    const auto cg = presets::mesanet(options(kK, kV, std::nullopt), lambda, LinearSolver::conjugate_gradient, kK);
    const auto in = inputs_for(exact, 92);
    EXPECT_LE(max_rel_diff(run<double>(cg, in), run<double>(exact, in)), 1e-8);
}

// Conjugate gradient with one iteration is not exact: the check above can fail.
TEST(EquivalenceDouble, ConjugateGradientWithOneStepIsInexact) {
    const std::vector<double> lambda{0.3, 0.6, 0.9, 1.2, 0.5, 2.0};
    const auto exact = presets::mesanet(options(kK, kV, std::nullopt), lambda);
    const auto cg = presets::mesanet(options(kK, kV, std::nullopt), lambda, LinearSolver::conjugate_gradient, 1);
    const auto in = inputs_for(exact, 93);
    EXPECT_GT(max_rel_diff(run<double>(cg, in), run<double>(exact, in)), 1e-6);
}

/// E11 reference: o_t = sum_u softmax_u(scale q_t . k_u + G(t, u)) v_u over u in (t - window, t]
/// (every u <= t when window = 0), with G the sum of the log-gates written after u.
Tensor<double> attention_reference(const TensorMap<double>& in, double scale, Index window, const Tensor<double>* g) {
    const Tensor<double>& q = in.at("q");
    const Tensor<double>& k = in.at("k");
    const Tensor<double>& v = in.at("v");
    const Index B = q.dim(0), T = q.dim(1), H = q.dim(2), V = v.dim(3);
    Tensor<double> o({B, T, H, V});
    for (Index b = 0; b < B; ++b) {
        for (Index t = 0; t < T; ++t) {
            for (Index h = 0; h < H; ++h) {
                const Index first = window > 0 ? std::max<Index>(0, t - window + 1) : 0;
                std::vector<double> scores;
                double top = -INFINITY;
                for (Index u = first; u <= t; ++u) {
                    double s = scale * dot_qk(q, t, k, u, b, h);
                    if (g != nullptr)
                        for (Index r = u + 1; r <= t; ++r) s += at(*g, b, r, h);
                    scores.push_back(s);
                    top = std::max(top, s);
                }
                double total = 0.0;
                for (double& s : scores) total += (s = std::exp(s - top));
                for (Index u = first; u <= t; ++u)
                    for (Index c = 0; c < V; ++c)
                        out_at(o, b, t, h, c) += scores[static_cast<std::size_t>(u - first)] / total * at(v, b, u, h, c);
            }
        }
    }
    return o;
}

// E11: the kv cache read by the Nadaraya-Watson estimator is causal softmax attention.
TYPED_TEST(Equivalence, KvCacheIsSoftmaxAttention) {
    const auto layer = presets::softmax_attention(options());
    const auto in = inputs_for(layer, 111);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), attention_reference(in, kScale, 0, nullptr)),
              tolerance<TypeParam>());
}

TYPED_TEST(Equivalence, WindowedKvCacheIsSlidingWindowAttention) {
    for (Index window : {1, 2, 3, 10}) {
        const auto layer = presets::sliding_window_attention(options(), window);
        const auto in = inputs_for(layer, 112);
        EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), attention_reference(in, kScale, window, nullptr)),
                  tolerance<TypeParam>())
            << "window " << window;
    }
}

TYPED_TEST(Equivalence, DecayedKvCacheIsForgettingAttention) {
    const Layer<KVCacheMemory, L2Bias, DecayRetention, NonParametric> layer(options(), {}, {},
                                                                          presets::per_token_decay(Axis::head));
    const auto in = inputs_for(layer, 113);
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), attention_reference(in, kScale, 0, &in.at("g"))),
              tolerance<TypeParam>());
}

// DeltaProduct with n steps per token is n consecutive Gated DeltaNet tokens: the decay of token t
// acts once, before its first pair, so in the expanded sequence the first of each group of n
// carries g_t and the other n - 1 carry g = 0 (no decay); the output of token t is the read after
// the last pair of its group, so only that position needs the query q_t.
TYPED_TEST(Equivalence, DeltaProductIsExpandedGatedDeltaNet) {
    const Index n = 3;
    const auto product = presets::deltaproduct(options(), n);
    const auto gated = presets::gated_deltanet(options());
    const auto in = inputs_for(product, 121);
    TensorMap<double> expanded{{"k", in.at("k")}, {"v", in.at("v")}, {"eta", in.at("eta")}};
    Tensor<double> q({kB, kT * n, kH, kK}), g({kB, kT * n, kH});
    for (Index b = 0; b < kB; ++b)
        for (Index t = 0; t < kT; ++t)
            for (Index h = 0; h < kH; ++h) {
                g[(b * kT * n + t * n) * kH + h] = at(in.at("g"), b, t, h);
                for (Index j = 0; j < kK; ++j) out_at(q, b, t * n + n - 1, h, j) = at(in.at("q"), b, t, h, j);
            }
    expanded["q"] = q;
    expanded["g"] = g;
    const Tensor<double> long_out = run<TypeParam>(gated, expanded);
    Tensor<double> picked({kB, kT, kH, kV});
    for (Index b = 0; b < kB; ++b)
        for (Index t = 0; t < kT; ++t)
            for (Index h = 0; h < kH; ++h)
                for (Index c = 0; c < kV; ++c) out_at(picked, b, t, h, c) = at(long_out, b, t * n + n - 1, h, c);
    EXPECT_LE(max_rel_diff(run<TypeParam>(product, in), picked), tolerance<TypeParam>());
}

// Reading before the write: linear attention then sums over u < t only.
TYPED_TEST(Equivalence, ReadBeforeWriteExcludesCurrentToken) {
    LayerOptions o = options();
    o.read = ReadTiming::before_write;
    const auto layer = presets::linear_attention(o);
    const auto in = inputs_for(layer, 131);
    const auto ref = quadratic_form(in, kScale, [](Index, Index, Index t, Index u) { return u < t ? 1.0 : 0.0; });
    EXPECT_LE(max_rel_diff(run<TypeParam>(layer, in), ref), tolerance<TypeParam>());
}

// Reading before the write on Gated DeltaNet: o_t = scale W_{t-1} q_t, with W_{t-1} the state a
// call over the first t tokens leaves behind.
TYPED_TEST(Equivalence, ReadBeforeWriteUsesPreviousState) {
    using S = TypeParam;
    LayerOptions o = options();
    o.read = ReadTiming::before_write;
    const auto layer = presets::gated_deltanet(o);
    const auto writer = presets::gated_deltanet(options());
    const auto in = inputs_for(layer, 132, 1);
    Tensor<double> ref({1, kT, kH, kV});
    for (Index t = 0; t < kT; ++t) {
        auto state = writer.template initial_state<S>(1);
        if (t > 0) writer.forward(as_inputs(cast_all<S>(token_slice(in, kT, 0, t))), state);
        const Tensor<S> W = writer.save_state(state).at("W");
        for (Index h = 0; h < kH; ++h)
            for (Index d = 0; d < kV; ++d) {
                double total = 0.0;
                for (Index j = 0; j < kK; ++j) total += value_of(W[(h * kV + d) * kK + j]) * at(in.at("q"), 0, t, h, j);
                out_at(ref, 0, t, h, d) = kScale * total;
            }
    }
    EXPECT_LE(max_rel_diff(run<S>(layer, in), ref), tolerance<S>());
}

}  // namespace
