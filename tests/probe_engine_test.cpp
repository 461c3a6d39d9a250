// Reads from copies of a saved state equal reads recomputed from the start of the sequence, for
// matrix, least-squares, implicit-step and kv-cache memories, with one head and with two. This pins
// the save, copy and load of states that every probe but the stream relies on.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "recall/probe_engine.hpp"

namespace {

using namespace miras;
using namespace miras::tasks;
namespace probe = miras::tasks::detail;

LayerOptions options(Index heads, ReadTiming read) {
    LayerOptions o;
    o.heads = heads;
    o.key_dim = 6;
    o.value_dim = 5;
    o.query_scale = 2.0;
    o.read = read;
    return o;
}

struct EngineCase {
    std::string name;
    ProbedLayer (*make)(Index heads);
};

template <class L>
ProbedLayer probed(L layer, ProbeGates gates) {
    return {"layer", std::make_shared<ErasedLayer<L>>(std::move(layer)), std::move(gates)};
}

class SnapshotReads : public ::testing::TestWithParam<std::tuple<EngineCase, Index>> {};

TEST_P(SnapshotReads, EqualRecomputedStreams) {
    const auto& [engine_case, heads] = GetParam();
    const ProbedLayer layer = engine_case.make(heads);
    const Index K = layer.layer->dims().key, V = layer.layer->dims().value, T = 7, Q = 3;

    probe::ProbeRandom random(11);
    std::vector<probe::Trial> trials;
    for (Index i = 0; i < 2 * heads; ++i) {
        trials.push_back({probe::random_keys(random, T, K, KeyKind::sphere),
                          probe::random_values(random, T, V, ValueKind::unit, 0).rows,
                          probe::random_keys(random, Q, K, KeyKind::sphere)});
    }
    const auto snapshot = probe::write_then_query(layer, trials);

    // The same reads, each as the last token of a stream that repeats the writes.
    for (Index j = 0; j < Q; ++j) {
        std::vector<probe::Trial> streams;
        for (const auto& trial : trials) {
            probe::Trial stream{Mat<double>::Zero(T + 1, K), Mat<double>::Zero(T + 1, V), Mat<double>::Zero(T + 1, K)};
            stream.write_keys.topRows(T) = trial.write_keys;
            stream.write_values.topRows(T) = trial.write_values;
            stream.queries.row(T) = trial.queries.row(j);
            streams.push_back(std::move(stream));
        }
        std::vector<bool> reads(static_cast<std::size_t>(T + 1), false);
        reads.back() = true;
        const auto recomputed = probe::read_in_stream(layer, streams, reads);
        for (std::size_t i = 0; i < trials.size(); ++i) {
            const double error = (snapshot[i].row(j) - recomputed[i].row(0)).cwiseAbs().maxCoeff();
            EXPECT_LE(error, 1e-13) << "trial " << i << ", query " << j;
            EXPECT_GT(snapshot[i].row(j).norm(), 1e-3) << "trial " << i << ", query " << j;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(
    Layers, SnapshotReads,
    ::testing::Combine(
        ::testing::Values(
            EngineCase{"GatedDeltaNet",
                       [](Index h) {
                           return probed(presets::gated_deltanet(options(h, ReadTiming::after_write)),
                                         {{"g", -0.1}, {"eta", 0.7}});
                       }},
            EngineCase{"MesaNet",
                       [](Index h) {
                           return probed(presets::mesanet(options(h, ReadTiming::after_write), {0.5}),
                                         {{"g", -0.05}, {"beta", 0.8}});
                       }},
            EngineCase{"Longhorn",
                       [](Index h) {
                           return probed(presets::longhorn(options(h, ReadTiming::after_write)), {{"eta", 0.9}});
                       }},
            EngineCase{"SoftmaxAttention",
                       [](Index h) {
                           return probed(presets::softmax_attention(options(h, ReadTiming::before_write)), {});
                       }},
            EngineCase{"SlidingWindow",
                       [](Index h) {
                           return probed(presets::sliding_window_attention(options(h, ReadTiming::before_write), 4), {});
                       }}),
        ::testing::Values(Index{1}, Index{2})),
    [](const ::testing::TestParamInfo<std::tuple<EngineCase, Index>>& info) {
        return std::get<0>(info.param).name + "Heads" + std::to_string(std::get<1>(info.param));
    });

TEST(ProbeRandom, DrawsAreReproducible) {
    probe::ProbeRandom a(3), b(3);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(a.normal(), b.normal()) << "draw " << i;
}

TEST(ProbeRandom, NormalsHaveUnitVariance) {
    probe::ProbeRandom random(5);
    double sum = 0.0, squares = 0.0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
        const double x = random.normal();
        sum += x;
        squares += x * x;
    }
    // Standard errors: 1/sqrt(n) = 0.0022 for the mean and sqrt(2/n) = 0.0032 for the variance.
    EXPECT_NEAR(sum / n, 0.0, 0.01);
    EXPECT_NEAR(squares / n, 1.0, 0.015);
}

TEST(ProbeRandom, PermutationContainsEveryIndexOnce) {
    probe::ProbeRandom random(9);
    std::vector<Index> order = random.permutation(50);
    std::sort(order.begin(), order.end());
    for (Index i = 0; i < 50; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
}

TEST(RandomKeys, OrthonormalKeysAreOrthonormal) {
    probe::ProbeRandom random(4);
    const Mat<double> keys = probe::random_keys(random, 8, 8, KeyKind::orthonormal);
    EXPECT_LE((keys * keys.transpose() - Mat<double>::Identity(8, 8)).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(RandomKeys, SphereKeysHaveUnitNorm) {
    probe::ProbeRandom random(4);
    const Mat<double> keys = probe::random_keys(random, 20, 5, KeyKind::sphere);
    for (Index i = 0; i < keys.rows(); ++i) EXPECT_NEAR(keys.row(i).norm(), 1.0, 1e-14) << "key " << i;
}

TEST(Tally, ScoresAZeroReadAsWrong) {
    probe::Tally tally;
    const Mat<double> candidates = Mat<double>::Identity(3, 3);
    tally.add(Vec<double>::Zero(3), candidates.row(0).transpose(), candidates, 0);
    EXPECT_EQ(tally.point(0).accuracy, 0.0);
    EXPECT_EQ(tally.point(0).cosine, 0.0);
    EXPECT_NEAR(tally.point(0).mse, 1.0 / 3.0, 1e-15);
}

TEST(Tally, PicksTheCandidateByCosineNotLength) {
    probe::Tally tally;
    Mat<double> candidates(2, 2);
    candidates << 100.0, 0.0,  // a long value in another direction
        0.0, 1.0;
    Vec<double> y(2);
    y << 0.6, 0.8;
    tally.add(y, candidates.row(1).transpose(), candidates, 1);
    EXPECT_EQ(tally.point(0).accuracy, 1.0);
    EXPECT_NEAR(tally.point(0).cosine, 0.8, 1e-15);
}

TEST(Tally, ScaledErrorIsTheErrorAtTheBestGain) {
    probe::Tally tally;
    const Mat<double> candidates = Mat<double>::Identity(2, 2);
    Vec<double> y(2);
    y << 2.0, 0.0;  // twice its value
    tally.add(y, candidates.row(0).transpose(), candidates, 0);
    y << 0.0, 1.0;  // exactly its value
    tally.add(y, candidates.row(1).transpose(), candidates, 1);
    // Squared error at gain c, summed over both reads and both channels: (2c - 1)^2 + (c - 1)^2,
    // smallest at c = 3/5.
    const auto error = [](double c) { return ((2 * c - 1) * (2 * c - 1) + (c - 1) * (c - 1)) / 4.0; };
    const auto point = tally.point(0);
    EXPECT_NEAR(point.gain, 0.6, 1e-15);
    EXPECT_NEAR(point.scaled_mse, error(0.6), 1e-15);
    EXPECT_LT(point.scaled_mse, error(0.59));
    EXPECT_LT(point.scaled_mse, error(0.61));
    EXPECT_NEAR(point.mse, error(1.0), 1e-15);
}

TEST(Tally, ScaledErrorOfAZeroReadIsTheValueEnergy) {
    probe::Tally tally;
    const Mat<double> candidates = Mat<double>::Identity(4, 4);
    tally.add(Vec<double>::Zero(4), candidates.row(2).transpose(), candidates, 2);
    EXPECT_EQ(tally.point(0).gain, 0.0);
    EXPECT_NEAR(tally.point(0).scaled_mse, 0.25, 1e-15);
}

}  // namespace
