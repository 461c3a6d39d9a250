// Streaming, snapshots, state files and packed variable-length batches against whole-sequence runs.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "miras/io/state_file.hpp"
#include "miras/miras.hpp"
#include "miras/stream/stream.hpp"

namespace {

using namespace miras;
namespace fs = std::filesystem;

struct Sequence {
    Tensor<double> q, k, v, g, eta;
    Inputs<double> inputs() const {
        return Inputs<double>{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};
    }
};

Sequence random_sequence(Index B, Index T, Index H, Index K, Index V, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    Sequence s{Tensor<double>({B, T, H, K}), Tensor<double>({B, T, H, K}), Tensor<double>({B, T, H, V}),
               Tensor<double>({B, T, H}), Tensor<double>({B, T, H})};
    for (auto& x : s.q.values()) x = normal(rng);
    for (auto& x : s.k.values()) x = normal(rng) / std::sqrt(static_cast<double>(K));
    for (auto& x : s.v.values()) x = normal(rng);
    for (auto& x : s.g.values()) x = -0.3 * uniform(rng);
    for (auto& x : s.eta.values()) x = uniform(rng);
    return s;
}

bool bitwise_equal(const Tensor<double>& a, const Tensor<double>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(double) * static_cast<std::size_t>(a.size())) == 0;
}

double max_difference(const Tensor<double>& a, const Tensor<double>& b) {
    double worst = 0.0;
    for (Index i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
    return worst;
}

LayerOptions options() { return LayerOptions{.heads = 2, .key_dim = 6, .value_dim = 5, .chunk_size = 16}; }

class StreamBlocks : public ::testing::TestWithParam<Index> {};

TEST_P(StreamBlocks, EqualWholeSequence) {
    const Index block = GetParam();
    const auto layer = presets::gated_deltanet(options());
    const Index B = 2, T = 50;
    const Sequence s = random_sequence(B, T, 2, 6, 5, 3);
    const Tensor<double> whole = layer.forward(s.inputs());

    Stream<presets::GatedDeltaNet, double> stream(layer, B);
    std::vector<Tensor<double>> storage;
    Tensor<double> streamed({B, T, 2, 5});
    for (Index first = 0; first < T; first += block) {
        const Index count = std::min(block, T - first);
        const Tensor<double> o = stream.feed(slice_tokens(s.inputs(), first, count, storage));
        for (Index b = 0; b < B; ++b) {
            std::copy(o.data() + b * count * 10, o.data() + (b + 1) * count * 10, streamed.data() + (b * T + first) * 10);
        }
    }
    EXPECT_EQ(stream.position(), T);
    EXPECT_LE(max_difference(whole, streamed), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Blocks, StreamBlocks, ::testing::Values(1, 7, 50));

TEST(Stream, SnapshotEqualsRecomputation) {
    const auto layer = presets::deltanet(options());
    const Sequence s = random_sequence(1, 30, 2, 6, 5, 4);
    std::vector<Tensor<double>> storage;
    Stream<presets::DeltaNet, double> stream(layer, 1);
    stream.feed(slice_tokens(s.inputs(), 0, 12, storage));
    const auto snapshot = stream.snapshot();
    const Tensor<double> after = stream.feed(slice_tokens(s.inputs(), 12, 18, storage));

    stream.reset();
    EXPECT_EQ(stream.position(), 0);
    stream.restore(snapshot);
    EXPECT_EQ(stream.position(), 12);
    const Tensor<double> again = stream.feed(slice_tokens(s.inputs(), 12, 18, storage));
    EXPECT_TRUE(bitwise_equal(after, again));
}

TEST(Stream, ResetZeroesState) {
    const auto layer = presets::deltanet(options());
    const Sequence s = random_sequence(1, 5, 2, 6, 5, 5);
    Stream<presets::DeltaNet, double> stream(layer, 1);
    stream.feed(s.inputs());
    stream.reset();
    const Tensor<double> W = layer.save_state(stream.state()).at("W");
    for (Index i = 0; i < W.size(); ++i) ASSERT_EQ(W[i], 0.0) << "entry " << i;
}

class StateFile : public ::testing::Test {
protected:
    void SetUp() override {
        directory = fs::temp_directory_path() / ("miras_state_test_" + std::to_string(::getpid()));
        fs::create_directories(directory);
    }
    void TearDown() override { fs::remove_all(directory); }
    std::string path(const std::string& name) const { return (directory / name).string(); }
    fs::path directory;
};

TEST_F(StateFile, RoundTripsBitwise) {
    const auto layer = presets::gated_deltanet(options());
    const Sequence s = random_sequence(2, 20, 2, 6, 5, 6);
    auto state = layer.initial_state<double>(2);
    layer.forward(s.inputs(), state);
    io::save_state_file<presets::GatedDeltaNet, double>(path("s.json"), layer, state, 20);

    const auto loaded = io::load_state_file<presets::GatedDeltaNet, double>(path("s.json"), layer);
    EXPECT_EQ(loaded.position, 20);
    EXPECT_TRUE(bitwise_equal(layer.save_state(state).at("W"), layer.save_state(loaded.state).at("W")));
}

TEST_F(StateFile, FloatStateRoundTripsBitwise) {
    const auto layer = presets::deltanet(options());
    auto state = layer.initial_state<float>(1);
    Tensor<float> W({1, 2, 5, 6});
    for (Index i = 0; i < W.size(); ++i) W[i] = 1.0f / static_cast<float>(i + 3);
    state = layer.load_state(std::map<std::string, Tensor<float>>{{"W", W}});
    io::save_state_file<presets::DeltaNet, float>(path("f.json"), layer, state, 0);
    const auto loaded = io::load_state_file<presets::DeltaNet, float>(path("f.json"), layer);
    const Tensor<float> back = layer.save_state(loaded.state).at("W");
    EXPECT_EQ(std::memcmp(back.data(), W.data(), sizeof(float) * static_cast<std::size_t>(W.size())), 0);
}

TEST_F(StateFile, RejectsAnotherLayer) {
    const auto layer = presets::gated_deltanet(options());
    auto state = layer.initial_state<double>(1);
    io::save_state_file<presets::GatedDeltaNet, double>(path("s.json"), layer, state, 0);
    const auto other = presets::deltanet(options());
    try {
        io::load_state_file<presets::DeltaNet, double>(path("s.json"), other);
        FAIL() << "a state of another layer was accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("matrix/l2/decay/gd"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("matrix/l2/none/gd"), std::string::npos) << e.what();
    }
}

TEST_F(StateFile, RejectsAnotherVersion) {
    const auto layer = presets::deltanet(options());
    auto state = layer.initial_state<double>(1);
    io::save_state_file<presets::DeltaNet, double>(path("s.json"), layer, state, 0);
    nlohmann::json j = io::read_json_file(path("s.json"));
    j["version"] = 2;
    std::ofstream(path("v2.json")) << j.dump();
    try {
        io::load_state_file<presets::DeltaNet, double>(path("v2.json"), layer);
        FAIL() << "a state file of version 2 was accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("version 2"), std::string::npos) << e.what();
    }
}

TEST_F(StateFile, RefusesToOverwrite) {
    const auto layer = presets::deltanet(options());
    auto state = layer.initial_state<double>(1);
    io::save_state_file<presets::DeltaNet, double>(path("s.json"), layer, state, 0);
    EXPECT_THROW((io::save_state_file<presets::DeltaNet, double>(path("s.json"), layer, state, 0)), InputError);
    EXPECT_NO_THROW((io::save_state_file<presets::DeltaNet, double>(path("s.json"), layer, state, 0, true)));
    EXPECT_FALSE(fs::exists(path("s.json.tmp")));
}

TEST(PackedBatch, EqualsSeparateRuns) {
    // Chunk size 16 and sequences of 0, 5, 40 and 17 tokens: the 40-token sequence runs chunked with
    // a boundary inside its third chunk, the zero-length one keeps its state.
    const auto layer = presets::gated_deltanet(options());
    const std::vector<Index> lengths = {0, 5, 40, 17};
    std::vector<Index> offsets = {0};
    for (Index n : lengths) offsets.push_back(offsets.back() + n);
    const Index T = offsets.back();
    const Sequence packed = random_sequence(1, T, 2, 6, 5, 8);

    std::mt19937 rng(9);
    std::normal_distribution<double> normal(0.0, 1.0);
    Tensor<double> initial({4, 2, 5, 6});
    for (auto& x : initial.values()) x = normal(rng);
    auto states = layer.load_state(std::map<std::string, Tensor<double>>{{"W", initial}});
    const Tensor<double> o = forward_packed(layer, packed.inputs(), offsets, states);
    const Tensor<double> finals = layer.save_state(states).at("W");

    std::vector<Tensor<double>> storage;
    for (std::size_t i = 0; i < lengths.size(); ++i) {
        Tensor<double> start({1, 2, 5, 6});
        std::copy(initial.data() + i * 60, initial.data() + (i + 1) * 60, start.data());
        auto state = layer.load_state(std::map<std::string, Tensor<double>>{{"W", start}});
        const Index first = offsets[i];
        if (lengths[i] > 0) {
            const Tensor<double> alone = layer.forward(slice_tokens(packed.inputs(), first, lengths[i], storage), state);
            for (Index j = 0; j < alone.size(); ++j) {
                ASSERT_NEAR(alone[j], o[first * 10 + j], 1e-12) << "sequence " << i << " entry " << j;
            }
        }
        const Tensor<double> final_alone = layer.save_state(state).at("W");
        for (Index j = 0; j < 60; ++j) {
            ASSERT_NEAR(final_alone[j], finals[static_cast<Index>(i) * 60 + j], 1e-12) << "state of sequence " << i;
        }
    }
}

TEST(PackedBatch, RejectsBadOffsets) {
    const auto layer = presets::deltanet(options());
    const Sequence packed = random_sequence(1, 10, 2, 6, 5, 10);
    auto states = layer.initial_state<double>(2);
    EXPECT_THROW(forward_packed(layer, packed.inputs(), {0, 6, 4}, states), InputError);
    EXPECT_THROW(forward_packed(layer, packed.inputs(), {0, 4, 9}, states), InputError);
    EXPECT_THROW(forward_packed(layer, packed.inputs(), {0, 10}, states), InputError);
}

}  // namespace
