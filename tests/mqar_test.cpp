// The MQAR generator against Zoology's definition: labels on the query keys, keys and values from
// disjoint halves of the vocabulary, N distinct pairs and N supervised positions. The power-law gap
// distribution is checked by a chi-square test against probabilities computed here from the formula.
// Also: reproducible seeds, disjoint train and test seeds, and the per-sequence accuracy.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/tasks/mqar.hpp"

namespace {

using namespace miras;
using namespace miras::tasks;

MqarConfig config(Index V, Index L, Index N, bool random_filler, Index passes = 1) {
    MqarConfig c;
    c.vocab_size = V;
    c.seq_len = L;
    c.num_pairs = N;
    c.random_filler = random_filler;
    c.passes = passes;
    return c;
}

struct Shape3 {
    Index V, L, N, passes;
    bool random_filler;
};

class MqarShapes : public ::testing::TestWithParam<Shape3> {
protected:
    MqarConfig cfg() const {
        const Shape3 s = GetParam();
        return config(s.V, s.L, s.N, s.random_filler, s.passes);
    }
};

INSTANTIATE_TEST_SUITE_P(Shapes, MqarShapes,
                         ::testing::Values(Shape3{256, 64, 4, 1, false}, Shape3{256, 64, 4, 1, true},
                                           Shape3{8192, 256, 16, 1, true}, Shape3{300, 128, 8, 2, false},
                                           Shape3{100, 16, 4, 1, true}));

TEST_P(MqarShapes, LabelOnQueryKeyIsItsValue) {
    const MqarConfig c = cfg();
    const Index context = 2 * c.num_pairs * c.passes;
    const MqarData d = make_mqar(c, 200, 7);
    for (Index b = 0; b < d.examples; ++b) {
        for (Index t = 0; t < c.seq_len; ++t) {
            if (d.label(b, t) == ignore_label) continue;
            ASSERT_GE(t, context);
            EXPECT_EQ((t - context) % 2, 0) << "query off an even offset at " << t;
            Index pair = -1;
            for (Index j = 0; j < c.num_pairs; ++j) {
                if (d.input(b, 2 * j) == d.input(b, t)) pair = j;
            }
            ASSERT_GE(pair, 0) << "token at a supervised position is no key of the context";
            EXPECT_EQ(d.label(b, t), d.input(b, 2 * pair + 1));
        }
    }
}

TEST_P(MqarShapes, KeysAndValuesComeFromDisjointHalves) {
    const MqarConfig c = cfg();
    const MqarData d = make_mqar(c, 200, 8);
    const Index half = c.vocab_size / 2;
    for (Index b = 0; b < d.examples; ++b) {
        for (Index j = 0; j < c.num_pairs * c.passes; ++j) {
            EXPECT_GE(d.input(b, 2 * j), 1);
            EXPECT_LT(d.input(b, 2 * j), half);
            EXPECT_GE(d.input(b, 2 * j + 1), half);
            EXPECT_LT(d.input(b, 2 * j + 1), c.vocab_size);
        }
    }
}

TEST_P(MqarShapes, DistinctPairsRepeatedPerPass) {
    const MqarConfig c = cfg();
    const MqarData d = make_mqar(c, 200, 9);
    for (Index b = 0; b < d.examples; ++b) {
        std::set<std::int32_t> keys, values;
        for (Index j = 0; j < c.num_pairs; ++j) {
            keys.insert(d.input(b, 2 * j));
            values.insert(d.input(b, 2 * j + 1));
        }
        EXPECT_EQ(static_cast<Index>(keys.size()), c.num_pairs);
        EXPECT_EQ(static_cast<Index>(values.size()), c.num_pairs);
        for (Index t = 2 * c.num_pairs; t < 2 * c.num_pairs * c.passes; ++t) {
            EXPECT_EQ(d.input(b, t), d.input(b, t - 2 * c.num_pairs));
        }
    }
}

TEST_P(MqarShapes, ExactlyNSupervisedPositions) {
    const MqarConfig c = cfg();
    const MqarData d = make_mqar(c, 200, 10);
    for (Index b = 0; b < d.examples; ++b) {
        std::set<std::int32_t> labelled;
        Index count = 0;
        for (Index t = 0; t < c.seq_len; ++t) {
            if (d.label(b, t) != ignore_label) {
                ++count;
                labelled.insert(d.label(b, t));
            }
        }
        EXPECT_EQ(count, c.num_pairs);
        EXPECT_EQ(static_cast<Index>(labelled.size()), c.num_pairs);
    }
}

TEST_P(MqarShapes, SeedDeterminesData) {
    const MqarConfig c = cfg();
    const MqarData a = make_mqar(c, 50, 11), again = make_mqar(c, 50, 11), other = make_mqar(c, 50, 12);
    EXPECT_EQ(a.inputs, again.inputs);
    EXPECT_EQ(a.labels, again.labels);
    EXPECT_NE(a.inputs, other.inputs);
}

TEST(Mqar, ZeroFillerWithoutRandomFiller) {
    const MqarConfig c = config(256, 64, 4, false);
    const MqarData d = make_mqar(c, 100, 3);
    for (Index b = 0; b < d.examples; ++b) {
        for (Index t = 2 * c.num_pairs; t < c.seq_len; ++t) {
            if (d.label(b, t) == ignore_label) EXPECT_EQ(d.input(b, t), 0) << "at " << t;
        }
    }
}

TEST(Mqar, RandomFillerSpansTheWholeVocabulary) {
    const MqarConfig c = config(64, 32, 2, true);
    const MqarData d = make_mqar(c, 2000, 4);
    std::set<std::int32_t> seen;
    for (Index b = 0; b < d.examples; ++b) {
        for (Index t = 2 * c.num_pairs; t < c.seq_len; ++t) {
            if (d.label(b, t) == ignore_label) seen.insert(d.input(b, t));
        }
    }
    EXPECT_EQ(static_cast<Index>(seen.size()), c.vocab_size);
}

TEST(Mqar, DocstringLayoutWithoutRandomFiller) {
    // The shape of Zoology's docstring example (N = 2, L = 16) with V = 20, since V > L is required.
    const MqarData d = make_mqar(config(20, 16, 2, false), 1, 5);
    EXPECT_EQ(d.inputs.size(), 16u);
    for (Index t = 4; t < 16; t += 2) {
        if (d.label(0, t) == ignore_label) EXPECT_EQ(d.input(0, t), 0);
    }
    for (Index t = 5; t < 16; t += 2) EXPECT_EQ(d.label(0, t), ignore_label) << "odd offset " << t;
}

// Chi-square statistic of observed counts against probabilities, bins with expectation < 5 merged.
struct ChiSquare {
    double statistic = 0;
    Index dof = 0;
};

ChiSquare chi_square(const std::vector<double>& counts, const std::vector<double>& p, double n) {
    ChiSquare out;
    double obs = 0, expect = 0;
    Index bins = 0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        obs += counts[i];
        expect += n * p[i];
        if (expect >= 5 || i + 1 == p.size()) {
            out.statistic += (obs - expect) * (obs - expect) / expect;
            ++bins;
            obs = expect = 0;
        }
    }
    out.dof = bins - 1;
    return out;
}

// The 0.999 quantile of chi-square with k degrees of freedom (Wilson-Hilferty).
double chi_square_quantile_999(Index k) {
    const double z = 3.090, kd = static_cast<double>(k);
    const double h = 1 - 2 / (9 * kd) + z * std::sqrt(2 / (9 * kd));
    return kd * h * h * h;
}

TEST(Mqar, GapsFollowThePowerLaw) {
    const MqarConfig c = config(256, 64, 4, true);
    const Index slots = (c.seq_len - 2 * c.num_pairs) / 2, n = 20000;
    const MqarData d = make_mqar(c, n, 21);

    // Single-draw weights i^(a-1), i = gap + 1, and the marginal of the second draw without replacement.
    std::vector<double> p1(static_cast<std::size_t>(slots)), p2(static_cast<std::size_t>(slots), 0.0);
    double total = 0;
    for (Index i = 0; i < slots; ++i) total += p1[static_cast<std::size_t>(i)] = std::pow(i + 1.0, c.power_a - 1);
    for (double& x : p1) x /= total;
    for (std::size_t j = 0; j < p1.size(); ++j) {
        for (std::size_t i = 0; i < p1.size(); ++i) {
            if (i != j) p2[j] += p1[i] * p1[j] / (1 - p1[i]);
        }
    }

    // Pair j of the context is the j-th draw. Its query is the position labelled with its value.
    std::vector<double> first(static_cast<std::size_t>(slots), 0.0), second(first);
    for (Index b = 0; b < n; ++b) {
        for (Index t = 2 * c.num_pairs; t < c.seq_len; ++t) {
            const Index gap = (t - 2 * c.num_pairs) / 2;
            if (d.label(b, t) == d.input(b, 1)) first[static_cast<std::size_t>(gap)] += 1;
            if (d.label(b, t) == d.input(b, 3)) second[static_cast<std::size_t>(gap)] += 1;
        }
    }
    const ChiSquare a = chi_square(first, p1, static_cast<double>(n));
    const ChiSquare b = chi_square(second, p2, static_cast<double>(n));
    EXPECT_LT(a.statistic, chi_square_quantile_999(a.dof)) << "first draw, dof " << a.dof;
    EXPECT_LT(b.statistic, chi_square_quantile_999(b.dof)) << "second draw, dof " << b.dof;

    // The test has power: the first-draw counts are far from the second-draw law and from uniform.
    const ChiSquare wrong = chi_square(first, p2, static_cast<double>(n));
    EXPECT_GT(wrong.statistic, chi_square_quantile_999(wrong.dof));
    const std::vector<double> uniform(static_cast<std::size_t>(slots), 1.0 / static_cast<double>(slots));
    const ChiSquare flat = chi_square(first, uniform, static_cast<double>(n));
    EXPECT_GT(flat.statistic, chi_square_quantile_999(flat.dof));
}

TEST(Mqar, GapWeightsMatchTheFormula) {
    const std::vector<double> p = mqar_gap_weights(28, 0.01);
    double total = 0;
    for (Index i = 1; i <= 28; ++i) total += std::pow(static_cast<double>(i), -0.99);
    EXPECT_NEAR(p[0], 1 / total, 1e-15);
    EXPECT_NEAR(p[27], std::pow(28.0, -0.99) / total, 1e-15);
    EXPECT_NEAR(p[0], 0.251, 5e-4);  // single-draw P(gap = 0) for L = 64, N = 4
}

struct BadConfig {
    const char* name;
    MqarConfig config;
    const char* names;
};

class MqarBadConfig : public ::testing::TestWithParam<BadConfig> {};

INSTANTIATE_TEST_SUITE_P(Preconditions, MqarBadConfig,
                         ::testing::Values(BadConfig{"OddLength", config(256, 63, 4, true), "seq_len = 63"},
                                           BadConfig{"VocabNotAboveLength", config(64, 64, 4, true), "vocab_size = 64"},
                                           BadConfig{"TooManyPairs", config(256, 64, 17, true), "2 * num_pairs"},
                                           BadConfig{"NoPairs", config(256, 64, 0, true), "num_pairs = 0"},
                                           BadConfig{"NoPasses", config(256, 64, 4, true, 0), "passes = 0"},
                                           BadConfig{"PassesTooLong", config(256, 64, 8, true, 4), "2 * num_pairs"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_P(MqarBadConfig, RaisesConfigErrorNamingTheValue) {
    try {
        make_mqar(GetParam().config, 1, 1);
        FAIL() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find(GetParam().names), std::string::npos) << e.what();
    }
}

TEST(Mqar, NonPositivePowerIsRejected) {
    MqarConfig c = config(256, 64, 4, true);
    c.power_a = 0;
    EXPECT_THROW(make_mqar(c, 1, 1), ConfigError);
}

TEST(MqarSeeds, TrainAndTestSeedsLieInDisjointRanges) {
    std::set<std::uint64_t> train, test;
    for (Index s = 0; s < 1000; ++s) {
        train.insert(mqar_seed(MqarSplit::train, 123, s));
        test.insert(mqar_seed(MqarSplit::test, 123, s));
    }
    EXPECT_LT(*train.rbegin(), 1ull << 31);
    EXPECT_GE(*test.begin(), 1ull << 31);
    EXPECT_LT(*test.rbegin(), 1ull << 32);
    EXPECT_EQ(train.size(), 1000u) << "segment seeds repeat";
}

// logits [B, L, V] filled with zeros and a chosen argmax per position.
Tensor<double> logits_with(Index B, Index L, Index V, const std::vector<std::array<Index, 3>>& peaks) {
    Tensor<double> out({B, L, V}, 0.0);
    for (const auto& p : peaks) out[(p[0] * L + p[1]) * V + p[2]] = 1.0;
    return out;
}

TEST(MqarAccuracy, AveragesPerSequenceNotOverPositions) {
    // Sequence 0: two supervised positions, one right. Sequence 1: one, right. Per sequence: 0.75;
    // pooled over positions it would be 2/3.
    const Index L = 4, V = 8;
    std::vector<std::int32_t> labels(8, ignore_label);
    labels[1] = 5;
    labels[3] = 6;
    labels[L + 2] = 7;
    const Tensor<double> logits = logits_with(2, L, V, {{0, 1, 5}, {0, 3, 2}, {1, 2, 7}});
    EXPECT_DOUBLE_EQ(mqar_accuracy<double>(logits, labels), 0.75);
}

TEST(MqarAccuracy, ArgmaxOverWholeVocabulary) {
    const Index L = 1, V = 8;
    std::vector<std::int32_t> labels{6};
    // The largest logit is on a key token (1), not a value: wrong.
    EXPECT_DOUBLE_EQ(mqar_accuracy<double>(logits_with(1, L, V, {{0, 0, 1}}), labels), 0.0);
    // All logits equal: the first index (0) wins the tie, so label 6 is missed and label 0 hit.
    EXPECT_DOUBLE_EQ(mqar_accuracy<double>(Tensor<double>({1, 1, V}, 0.0), labels), 0.0);
    EXPECT_DOUBLE_EQ(mqar_accuracy<double>(Tensor<double>({1, 1, V}, 0.0), {0}), 1.0);
}

TEST(MqarAccuracy, RejectsBadLabelsAndShapes) {
    const Tensor<double> logits({1, 2, 4}, 0.0);
    EXPECT_THROW(mqar_accuracy<double>(logits, {4, ignore_label}), InputError);
    EXPECT_THROW(mqar_accuracy<double>(logits, {-1, ignore_label}), InputError);
    EXPECT_THROW(mqar_accuracy<double>(logits, {ignore_label, ignore_label}), InputError);
    EXPECT_THROW(mqar_accuracy<double>(logits, {1}), InputError);
}

}  // namespace
