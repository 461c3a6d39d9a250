// The memorisation probes against closed forms: the Hebbian crosstalk cosine 1 / sqrt(1 + (N-1)/d),
// exact recall by the delta rule (beta = 1) for orthonormal keys and by least squares up to N = d,
// the recency of the delta rule, the noise factor 1 / sqrt(1 + sigma^2), and softmax attention at
// a high query scale.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "miras/tasks/probes.hpp"

namespace {

using namespace miras;
using namespace miras::tasks;

constexpr Index d = 32;

LayerOptions options(Index heads = 1, double query_scale = 1.0, ReadTiming read = ReadTiming::after_write) {
    LayerOptions o;
    o.heads = heads;
    o.key_dim = d;
    o.value_dim = d;
    o.query_scale = query_scale;
    o.read = read;
    return o;
}

template <class L>
ProbedLayer probed(L layer, ProbeGates gates = {}) {
    return {"layer", std::make_shared<ErasedLayer<L>>(std::move(layer)), std::move(gates)};
}

ProbedLayer hebbian(Index heads = 1) { return probed(presets::linear_attention(options(heads))); }
ProbedLayer delta(ReadTiming read = ReadTiming::after_write) {
    return probed(presets::deltanet(options(1, 1.0, read)), {{"eta", 1.0}});
}
ProbedLayer least_squares(double ridge) {
    return probed(presets::mesanet(options(), {ridge}), {{"g", 0.0}, {"beta", 1.0}});
}
ProbedLayer softmax(double query_scale, ReadTiming read = ReadTiming::before_write) {
    return probed(presets::softmax_attention(options(1, query_scale, read)));
}

ProbeSettings settings(KeyKind keys = KeyKind::sphere, Index min_queries = 512, std::uint64_t seed = 7) {
    ProbeSettings s;
    s.seed = seed;
    s.keys = keys;
    s.min_queries = min_queries;
    return s;
}

double hebbian_cosine(double others) { return 1.0 / std::sqrt(1.0 + others / static_cast<double>(d)); }

// ---- Hebbian crosstalk -------------------------------------------------------------------------

class HebbianCapacity : public ::testing::TestWithParam<Index> {};

TEST_P(HebbianCapacity, CosineFollowsCrosstalkClosedForm) {
    const Index N = GetParam();
    const ProbeCurve curve = run_capacity(hebbian(), {{static_cast<double>(N) / d}}, settings(KeyKind::sphere, 4096));
    // The closed form is first order in the crosstalk; 0.01 covers its error and the sampling error.
    EXPECT_NEAR(curve.points[0].cosine, hebbian_cosine(static_cast<double>(N - 1)), 0.01) << "N = " << N;
}

TEST_P(HebbianCapacity, TwoHeadsFollowTheSameClosedForm) {
    const Index N = GetParam();
    const ProbeCurve curve = run_capacity(hebbian(2), {{static_cast<double>(N) / d}}, settings(KeyKind::sphere, 4096));
    EXPECT_NEAR(curve.points[0].cosine, hebbian_cosine(static_cast<double>(N - 1)), 0.01) << "N = " << N;
}

INSTANTIATE_TEST_SUITE_P(Loads, HebbianCapacity, ::testing::Values(Index{4}, Index{16}, Index{32}, Index{64}, Index{128}));

TEST(HebbianRecency, HasNoPositionalBias) {
    const ProbeCurve curve = run_recency(hebbian(), {2.0, 4}, settings(KeyKind::sphere, 2048));
    for (const auto& point : curve.points) {
        EXPECT_NEAR(point.cosine, hebbian_cosine(2.0 * d - 1.0), 0.015) << "age " << point.x;
    }
}

// ---- exact recall ------------------------------------------------------------------------------

struct ExactCase {
    std::string name;
    ProbedLayer (*make)();
    KeyKind keys;
};

class ExactRecall : public ::testing::TestWithParam<ExactCase> {};

TEST_P(ExactRecall, RetrievesEveryPairUpToNEqualsD) {
    const ProbeCurve curve = run_capacity(GetParam().make(), {{0.25, 0.5, 1.0}}, settings(GetParam().keys));
    for (const auto& point : curve.points) {
        EXPECT_EQ(point.accuracy, 1.0) << "N/d = " << point.x;
        EXPECT_GT(point.cosine, 1.0 - 1e-9) << "N/d = " << point.x;
        EXPECT_LT(point.mse, 1e-12) << "N/d = " << point.x;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ExactRecall,
    ::testing::Values(ExactCase{"DeltaRuleOrthonormalKeys", [] { return delta(); }, KeyKind::orthonormal},
                      ExactCase{"DeltaRuleReadBeforeWrite", [] { return delta(ReadTiming::before_write); },
                                KeyKind::orthonormal},
                      ExactCase{"DeltaProductTwoStepsPerToken",
                                [] { return probed(presets::deltaproduct(options(), 2), {{"g", 0.0}, {"eta", 1.0}}); },
                                KeyKind::orthonormal},
                      ExactCase{"HebbianOrthonormalKeys", [] { return hebbian(); }, KeyKind::orthonormal},
                      ExactCase{"LeastSquaresRandomKeys", [] { return least_squares(1e-12); }, KeyKind::sphere}),
    [](const ::testing::TestParamInfo<ExactCase>& info) { return info.param.name; });

TEST(LeastSquares, LosesExactnessBeyondNEqualsD) {
    const ProbeCurve curve = run_capacity(least_squares(1e-12), {{2.0}}, settings());
    EXPECT_LT(curve.points[0].cosine, 0.9);
}

TEST(DeltaRule, RandomKeysAreNotExactAtNEqualsD) {
    const ProbeCurve curve = run_capacity(delta(), {{1.0}}, settings());
    EXPECT_LT(curve.points[0].cosine, 0.95);
}

TEST(SoftmaxAttention, IsNearExactAtHighQueryScale) {
    const ProbeCurve curve = run_capacity(softmax(100.0), {{0.5, 1.0, 2.0}}, settings());
    for (const auto& point : curve.points) {
        EXPECT_EQ(point.accuracy, 1.0) << "N/d = " << point.x;
        EXPECT_GT(point.cosine, 0.999) << "N/d = " << point.x;
    }
}

TEST(SoftmaxAttention, IsBlurredAtLowQueryScale) {
    const ProbeCurve curve = run_capacity(softmax(1.0), {{1.0}}, settings());
    EXPECT_LT(curve.points[0].cosine, 0.5);
}

// ---- recency -----------------------------------------------------------------------------------

TEST(DeltaRuleRecency, RetrievesTheLatestPairExactly) {
    // One bucket per age: the first point is the pair written last.
    const ProbeCurve curve = run_recency(delta(), {2.0, 2 * d}, settings(KeyKind::sphere, 512));
    EXPECT_EQ(curve.points.front().x, 0.0);
    EXPECT_LT(curve.points.front().mse, 1e-25);
}

TEST(DeltaRuleRecency, ErrorGrowsWithAge) {
    const ProbeCurve curve = run_recency(delta(), {2.0, 4}, settings(KeyKind::sphere, 2048));
    ASSERT_EQ(curve.points.size(), 4u);
    for (std::size_t i = 1; i < curve.points.size(); ++i) {
        EXPECT_GT(curve.points[i].mse, curve.points[i - 1].mse) << "bucket " << i;
        EXPECT_GT(curve.points[i].x, curve.points[i - 1].x) << "bucket " << i;
    }
}

// ---- noise, outliers, overwrite, stream --------------------------------------------------------

TEST(NoiseProbe, ScalesTheSignalByOneOverSqrtOnePlusSigmaSquared) {
    for (auto make : {+[] { return hebbian(); }, +[] { return delta(); }}) {
        const ProbeCurve curve = run_noise(make(), {1.0, {0.25, 0.5, 1.0}}, settings(KeyKind::orthonormal, 4096));
        for (const auto& point : curve.points) {
            EXPECT_NEAR(point.cosine, 1.0 / std::sqrt(1.0 + point.x * point.x), 0.01) << "sigma " << point.x;
        }
    }
}

TEST(OutlierProbe, DeltaRuleKeepsOrthonormalPairsApart) {
    const ProbeCurve curve = run_outliers(delta(), {0.5, {0.1, 0.25}, 10, 100}, settings(KeyKind::orthonormal));
    for (const auto& point : curve.points) EXPECT_GT(point.cosine, 1.0 - 1e-9) << "fraction " << point.x;
}

TEST(OutlierProbe, HebbianCrosstalkGrowsWithTheOutlierScale) {
    // Crosstalk of pair i is sum_j (k_j . k_i) s_j v_j; its expected square is sum_j s_j^2 / d.
    // With m outliers of scale uniform in [10, 100], E[s^2] = (100^3 - 10^3) / (3 * 90) = 3700.
    const Index N = 16, m = 4;
    const ProbeCurve curve = run_outliers(hebbian(), {0.5, {0.25}, 10, 100}, settings(KeyKind::sphere, 4096));
    const double expected = hebbian_cosine(static_cast<double>(N - 1 - m) + static_cast<double>(m) * 3700.0);
    // A cosine is a mean of 1 / sqrt(1 + X) over a crosstalk X whose spread is wide here.
    EXPECT_NEAR(curve.points[0].cosine, expected, 0.05);
    EXPECT_LT(curve.points[0].cosine, 0.3);
}

TEST(OverwriteProbe, DeltaRuleKeepsTheLatestValue) {
    const ProbeCurve curve = run_overwrite(delta(), {0.5, {1, 2}}, settings(KeyKind::orthonormal));
    for (const auto& point : curve.points) {
        EXPECT_EQ(point.accuracy, 1.0) << "rewrites " << point.x;
        EXPECT_GT(point.cosine, 1.0 - 1e-9) << "rewrites " << point.x;
    }
}

TEST(OverwriteProbe, HebbianSumsEveryVersion) {
    // W k_i = sum of the r + 1 values written at k_i, nearly orthogonal unit vectors.
    const ProbeCurve curve = run_overwrite(hebbian(), {0.5, {1, 3}}, settings(KeyKind::orthonormal, 4096));
    for (const auto& point : curve.points) {
        EXPECT_NEAR(point.cosine, 1.0 / std::sqrt(1.0 + point.x), 0.01) << "rewrites " << point.x;
    }
}

TEST(StreamProbe, HebbianFollowsCrosstalkOfEveryEarlierWrite) {
    // Query j (0-based) follows P pairs, P * D distractors after them and D * (j + 1) before it.
    const Index P = 16;
    const ProbeCurve curve = run_stream(hebbian(), {0.5, {0, 2, 4}}, settings(KeyKind::sphere, 4096));
    for (const auto& point : curve.points) {
        const auto D = static_cast<Index>(point.x);
        double expected = 0.0;
        for (Index j = 0; j < P; ++j) expected += hebbian_cosine(static_cast<double>(P - 1 + P * D + D * (j + 1)));
        EXPECT_NEAR(point.cosine, expected / static_cast<double>(P), 0.01) << "distractors " << D;
    }
}

TEST(StreamProbe, SoftmaxAtHighQueryScaleIgnoresDistractors) {
    const ProbeCurve curve = run_stream(softmax(100.0), {0.5, {0, 4}}, settings());
    for (const auto& point : curve.points) {
        EXPECT_EQ(point.accuracy, 1.0) << "distractors " << point.x;
        EXPECT_GT(point.cosine, 0.999) << "distractors " << point.x;
    }
}

TEST(StreamProbe, ReadTokensWriteNothing) {
    // Without distractors a stream read of the delta rule sees exactly the P pairs; with
    // orthonormal keys it is exact, which a leaking read token would spoil.
    const ProbeCurve curve = run_stream(delta(), {1.0, {0}}, settings(KeyKind::orthonormal));
    EXPECT_GT(curve.points[0].cosine, 1.0 - 1e-9);
}

// ---- gates ------------------------------------------------------------------------------------

/// With orthonormal keys a decayed Hebbian memory reads gamma^age v_i exactly, so the mean squared
/// error per channel is the mean over pairs of (1 - gamma^age)^2 / V.
double decayed_mse(Index N, double gamma) {
    double total = 0.0;
    for (Index age = 0; age < N; ++age) total += std::pow(1.0 - std::pow(gamma, static_cast<double>(age)), 2);
    return total / static_cast<double>(N) / static_cast<double>(d);
}

ProbedLayer decayed(double gamma) { return probed(presets::mamba2(options()), {{"g", std::log(gamma)}}); }

TEST(ProbeGates, DecayScalesEachPairByItsAge) {
    const ProbeCurve curve = run_capacity(decayed(0.9), {{0.5}}, settings(KeyKind::orthonormal));
    EXPECT_NEAR(curve.points[0].mse, decayed_mse(d / 2, 0.9), 1e-12);
}

TEST(ProbeGates, StreamReadTokensNeitherWriteNorDecay) {
    const ProbeCurve curve = run_stream(decayed(0.9), {0.5, {0}}, settings(KeyKind::orthonormal));
    EXPECT_NEAR(curve.points[0].mse, decayed_mse(d / 2, 0.9), 1e-12);
}

// ---- determinism and bad input -----------------------------------------------------------------

TEST(Probes, SameSeedGivesIdenticalNumbers) {
    const ProbeSuite suite = ProbeSuite::standard(true);
    for (Probe probe : all_probes()) {
        const ProbeCurve a = run_probe(probe, delta(), suite, settings(KeyKind::sphere, 64, 3));
        const ProbeCurve b = run_probe(probe, delta(), suite, settings(KeyKind::sphere, 64, 3));
        ASSERT_EQ(a.points.size(), b.points.size()) << probe_name(probe);
        for (std::size_t i = 0; i < a.points.size(); ++i) {
            EXPECT_EQ(a.points[i].mse, b.points[i].mse) << probe_name(probe) << " point " << i;
        }
    }
}

TEST(Probes, AnotherSeedGivesOtherNumbers) {
    const ProbeCurve a = run_capacity(delta(), {{1.0}}, settings(KeyKind::sphere, 64, 3));
    const ProbeCurve b = run_capacity(delta(), {{1.0}}, settings(KeyKind::sphere, 64, 4));
    EXPECT_NE(a.points[0].mse, b.points[0].mse);
}

TEST(Probes, MissingProbeGateIsAConfigError) {
    ProbedLayer layer = delta();
    layer.gates.clear();
    try {
        run_capacity(layer, {{0.5}}, settings());
        FAIL() << "expected ConfigError";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("'eta'"), std::string::npos) << e.what();
    }
}

TEST(Probes, OutOfRangeProbeGateIsAnInputError) {
    ProbedLayer layer = delta();
    layer.gates["eta"] = -1.0;
    EXPECT_THROW(run_capacity(layer, {{0.5}}, settings()), InputError);
}

TEST(Probes, MoreOrthonormalKeysThanDimensionsIsAnInputError) {
    EXPECT_THROW(run_capacity(delta(), {{2.0}}, settings(KeyKind::orthonormal)), InputError);
}

TEST(Probes, UnknownProbeNameIsAnInputError) {
    EXPECT_THROW(probe_from_name("capacty"), InputError);
    EXPECT_EQ(probe_from_name("stream"), Probe::stream);
}

TEST(Probes, NonPositiveLoadIsAnInputError) {
    EXPECT_THROW(run_capacity(delta(), {{0.0}}, settings()), InputError);
    EXPECT_THROW(run_noise(delta(), {0.5, {-0.1}}, settings()), InputError);
    EXPECT_THROW(run_outliers(delta(), {0.5, {1.0}, 10, 100}, settings()), InputError);
    EXPECT_THROW(run_outliers(delta(), {0.5, {0.99}, 10, 100}, settings()), InputError);
}

}  // namespace
