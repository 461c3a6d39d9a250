// Fault kinds of docs/reliability.md that other suites leave open, each over every preset it applies
// to. Covered here: unnormalised keys and large values, a million tokens under decay, extreme
// log-gates in the chunked form, more than 65,536 tokens in one call, bitwise batch invariance and
// stream reset. The last suite compares the parser's state count with the state a layer saves.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <gtest/gtest.h>

#include "miras/layer/presets_deep.hpp"
#include "miras/spec/spec.hpp"
#include "miras/stream/stream.hpp"
#include "support.hpp"

namespace miras::test {
namespace {

/// A preset with what the tests need beyond the Model interface: a stream reset check, which
/// needs the concrete layer type.
struct Subject {
    Preset preset;
    /// Feeds `first` to a stream, resets it, and checks the state against the layer's initial
    /// state and the outputs on `second` against a new stream's, bit for bit.
    std::function<void(const LayerOptions&, const TensorMap<double>&, const TensorMap<double>&)> reset_check;
};

template <class L>
void check_reset(const L& layer, const TensorMap<double>& first, const TensorMap<double>& second) {
    const Index B = first.at("q").dim(0);
    Stream<L, double> stream(layer, B);
    stream.feed(as_inputs(first));
    stream.reset();
    EXPECT_EQ(stream.position(), 0);
    const auto reset_state = layer.save_state(stream.state());
    const auto initial = layer.save_state(layer.template initial_state<double>(B));
    ASSERT_EQ(reset_state.size(), initial.size());
    for (const auto& [name, tensor] : initial) {
        const Tensor<double>& after = reset_state.at(name);
        ASSERT_EQ(after.shape(), tensor.shape()) << name;
        for (Index i = 0; i < tensor.size(); ++i) ASSERT_EQ(after[i], tensor[i]) << name << " entry " << i;
    }
    Stream<L, double> fresh(layer, B);
    const Tensor<double> expected = fresh.feed(as_inputs(second));
    const Tensor<double> got = stream.feed(as_inputs(second));
    ASSERT_EQ(got.shape(), expected.shape());
    for (Index i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "output " << i;
}

template <class Make>
Subject subject(std::string name, Make make, Index steps = 1, bool keys_from_gate = false, bool needs_square = false) {
    Subject s;
    s.preset = {name, [make](LayerOptions o) { return model(make(o)); }, steps, keys_from_gate, needs_square};
    s.reset_check = [make](const LayerOptions& o, const TensorMap<double>& a, const TensorMap<double>& b) {
        check_reset(make(o), a, b);
    };
    return s;
}

/// Lists every preset of presets.hpp and presets_deep.hpp.
std::vector<Subject> subjects() {
    using namespace presets;
    return {
        subject("linear_attention", [](LayerOptions o) { return linear_attention(o); }),
        subject("retnet", [](LayerOptions o) { return retnet(o); }),
        subject("lightning", [](LayerOptions o) { return lightning_attention(o, 1, 3); }),
        subject("mamba2", [](LayerOptions o) { return mamba2(o); }),
        subject("gla", [](LayerOptions o) { return gla(o); }),
        subject("hgrn2", [](LayerOptions o) { return hgrn2(o); }, 1, true),
        subject("elementwise_rnn", [](LayerOptions o) { return elementwise_linear_rnn(o); }, 1, false, true),
        subject("deltanet", [](LayerOptions o) { return deltanet(o); }),
        subject("gated_deltanet", [](LayerOptions o) { return gated_deltanet(o); }),
        subject("kda", [](LayerOptions o) { return kda(o); }),
        subject("comba", [](LayerOptions o) { return comba(o); }),
        subject("deltaproduct", [](LayerOptions o) { return deltaproduct(o, 3); }, 3),
        subject("rwkv7", [](LayerOptions o) { return rwkv7(o); }),
        subject("longhorn_full", [](LayerOptions o) { return longhorn(o, false); }),
        subject("longhorn_diagonal", [](LayerOptions o) { return longhorn(o, true); }),
        subject("mesanet_exact", [](LayerOptions o) { return mesanet(o, {0.7}); }),
        subject("mesanet_cg", [](LayerOptions o) { return mesanet(o, {1.0}, LinearSolver::conjugate_gradient, 4); }),
        subject("softmax_attention", [](LayerOptions o) { return softmax_attention(o); }),
        subject("sliding_window", [](LayerOptions o) { return sliding_window_attention(o, 3); }),
        subject("ttt_linear", [](LayerOptions o) { return ttt_linear(o, 4); }),
        subject("ttt_mlp", [](LayerOptions o) { return ttt_mlp(o, 4); }),
        subject("titans", [](LayerOptions o) { return titans(o, 2, 3); }),
        subject("moneta", [](LayerOptions o) { return moneta(o); }),
        subject("yaad", [](LayerOptions o) { return yaad(o); }),
        subject("memora", [](LayerOptions o) { return memora(o); }),
        subject("omeganet", [](LayerOptions o) { return omeganet(o, 3); }),
        subject("atlas", [](LayerOptions o) { return atlas(o); }),
    };
}

void PrintTo(const Subject& s, std::ostream* out) { *out << s.preset.name; }
std::string subject_name(const ::testing::TestParamInfo<Subject>& info) { return info.param.preset.name; }

LayerOptions options(Index heads, Index dim) {
    LayerOptions o;
    o.heads = heads;
    o.key_dim = dim;
    o.value_dim = dim;
    return o;
}

/// Draws random inputs for a preset, with the keys of gate-derived presets computed from the gate.
TensorMap<double> inputs_for(const Preset& preset, const AnyLayer& layer, Index B, Index T, std::uint64_t seed) {
    TensorMap<double> in = random_inputs(layer.dims(), layer.gates(), B, T, seed);
    finish_inputs(preset, in);
    return in;
}

/// Scales each key vector [b, t, h, :] to Euclidean norm `norm`.
void set_key_norms(Tensor<double>& k, double norm) {
    const Index K = k.dim(3);
    for (Index row = 0; row < k.size() / K; ++row) {
        double sum = 0.0;
        for (Index i = 0; i < K; ++i) sum += k[row * K + i] * k[row * K + i];
        const double scale = sum > 0.0 ? norm / std::sqrt(sum) : 0.0;
        for (Index i = 0; i < K; ++i) k[row * K + i] *= scale;
    }
}

template <class S>
bool all_finite(const Tensor<S>& t) {
    for (Index i = 0; i < t.size(); ++i) {
        if (!std::isfinite(static_cast<double>(t[i]))) return false;
    }
    return true;
}

bool state_finite(const TensorMap<double>& state) {
    for (const auto& [name, tensor] : state) {
        if (!all_finite(tensor)) return false;
    }
    return true;
}

double state_norm(const TensorMap<double>& state) {
    double sum = 0.0;
    for (const auto& [name, tensor] : state) {
        for (Index i = 0; i < tensor.size(); ++i) sum += tensor[i] * tensor[i];
    }
    return std::sqrt(sum);
}

class Reliability : public ::testing::TestWithParam<Subject> {
protected:
    const Preset& preset() const { return GetParam().preset; }
};

// Keys of norm 10 and values up to 1e3 (fault kind 10). The layers do not normalise keys, so a
// delta rule whose step beta * ||k||^2 exceeds 2 diverges. Either the outputs and the state stay
// finite, or the call is refused with a miras::Error that names the non-finite value.
TEST_P(Reliability, UnnormalisedKeysStayFiniteOrAreRefused) {
    const auto model = preset().make(options(2, 4));
    const AnyLayer& layer = model->any();
    TensorMap<double> in = inputs_for(preset(), layer, 1, 200, 31);
    set_key_norms(in.at("k"), 10.0);
    for (double& x : in.at("v").values()) x *= 1e3;
    auto state = layer.initial_state(1, true);
    try {
        const Tensor<double> out = layer.forward(as_inputs(in), *state);
        EXPECT_TRUE(all_finite(out)) << "non-finite output returned without an error";
        EXPECT_TRUE(state_finite(layer.save_state(*state))) << "non-finite state kept without an error";
    } catch (const Error& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("not finite"), std::string::npos) << message;
        EXPECT_NE(message.find("t="), std::string::npos) << message;
    }
}

// Fault kind 4: a batch of three sequences with different initial states equals each sequence
// alone, bit for bit, in double and in float.
TEST_P(Reliability, BatchCompositionIsBitwiseInvariant) {
    const auto model = preset().make(options(2, 3));
    const AnyLayer& layer = model->any();
    const Index B = 3, T = 11;
    auto warm = layer.initial_state(B, true);
    layer.forward(as_inputs(inputs_for(preset(), layer, B, 4, 41)), *warm);
    const TensorMap<double> start = layer.save_state(*warm);
    const TensorMap<double> in = inputs_for(preset(), layer, B, T, 42);

    const Tensor<double> both = model->run(in, &start);
    const TensorMap<float> in_f = cast_all<float>(in), start_f = cast_all<float>(start);
    const Tensor<float> both_f = model->run(in_f, &start_f);
    for (Index b = 0; b < B; ++b) {
        const TensorMap<double> own = batch_slice(start, b, b + 1);
        const Tensor<double> alone = model->run(batch_slice(in, b, b + 1), &own);
        const Tensor<double> part = batch_slice(TensorMap<double>{{"o", both}}, b, b + 1).at("o");
        ASSERT_EQ(part.shape(), alone.shape());
        for (Index i = 0; i < part.size(); ++i) ASSERT_EQ(part[i], alone[i]) << "double, sequence " << b << " entry " << i;

        const TensorMap<float> own_f = batch_slice(start_f, b, b + 1);
        const Tensor<float> alone_f = model->run(batch_slice(in_f, b, b + 1), &own_f);
        const Tensor<float> part_f = batch_slice(TensorMap<float>{{"o", both_f}}, b, b + 1).at("o");
        for (Index i = 0; i < part_f.size(); ++i) ASSERT_EQ(part_f[i], alone_f[i]) << "float, sequence " << b << " entry " << i;
    }
}

// Fault kind 13: resetting a stream gives back the layer's initial state, and the stream then
// behaves exactly like a new one.
TEST_P(Reliability, StreamResetEqualsFreshStream) {
    const LayerOptions o = options(2, 3);
    const auto model = preset().make(o);
    const AnyLayer& layer = model->any();
    GetParam().reset_check(o, inputs_for(preset(), layer, 2, 7, 51), inputs_for(preset(), layer, 2, 5, 52));
}

// Fault kind 7 in the chunked form: log-gates of -50 or -1e4 on every token, or runs of -1e4 and 0,
// keep the outputs finite. The default execution (chunked wherever the layer has a chunked form,
// here 150 tokens in chunks of 16) agrees with the reference execution.
TEST_P(Reliability, ExtremeLogGatesAgreeAcrossExecutions) {
    LayerOptions o = options(2, 3);
    o.chunk_size = 16;
    const auto model = preset().make(o);
    LayerOptions ro = o;
    ro.execution = Execution::reference;
    const auto reference = preset().make(ro);
    const AnyLayer& layer = model->any();
    bool gated = false;
    for (const GateSpec& spec : layer.gates()) gated = gated || (spec.name == "g" && spec.config.per_token);
    if (!gated) GTEST_SKIP() << "no per-token log-gate";
    const Index T = 150;
    const std::vector<std::pair<std::string, std::function<double(Index)>>> patterns{
        {"-50 on every token", [](Index) { return -50.0; }},
        {"-1e4 on every token", [](Index) { return -1e4; }},
        {"-1e4 and 0 in runs of 7 entries", [](Index i) { return (i / 7) % 2 == 0 ? -1e4 : 0.0; }},
    };
    for (const auto& [label, pattern] : patterns) {
        TensorMap<double> in = random_inputs(layer.dims(), layer.gates(), 1, T, 61);
        auto& gate = in.at("g").values();
        for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = pattern(static_cast<Index>(i));
        finish_inputs(preset(), in);
        const Tensor<double> out = model->run(in);
        const Tensor<double> expected = reference->run(in);
        EXPECT_TRUE(all_finite(out)) << label;
        EXPECT_LE(max_rel_diff(out, expected), 1e-10) << label;
    }
}

// Fault kind 12: one call over 70,000 tokens (more than 2^16) equals the same tokens fed in pieces
// split at 65,536 and at odd positions, and stays finite. The unbounded softmax cache is left
// out: 70,000 tokens of it cost T^2 reads.
TEST_P(Reliability, MoreThan65536TokensInOneCall) {
    if (preset().name == "softmax_attention") GTEST_SKIP() << "quadratic in T";
    const auto model = preset().make(options(1, 2));
    const AnyLayer& layer = model->any();
    const Index T = 70000;
    const TensorMap<double> in = inputs_for(preset(), layer, 1, T, 71);
    auto whole_state = layer.initial_state(1, true);
    const Tensor<double> whole = layer.forward(as_inputs(in), *whole_state);
    ASSERT_TRUE(all_finite(whole));

    auto split_state = layer.initial_state(1, true);
    std::vector<double> joined;
    const std::vector<std::pair<Index, Index>> pieces{{0, 65536}, {65536, 65537}, {65537, 68001}, {68001, T}};
    for (const auto& [begin, end] : pieces) {
        const Tensor<double> part = layer.forward(as_inputs(token_slice(in, T, begin, end)), *split_state);
        joined.insert(joined.end(), part.values().begin(), part.values().end());
    }
    EXPECT_LE(max_rel_diff(Tensor<double>(whole.shape(), joined), whole), 1e-9);
    const auto a = layer.save_state(*whole_state), b = layer.save_state(*split_state);
    for (const auto& [name, tensor] : a) EXPECT_LE(max_rel_diff(b.at(name), tensor), 1e-9) << name;
}

INSTANTIATE_TEST_SUITE_P(Presets, Reliability, ::testing::ValuesIn(subjects()), subject_name);

// Fault kind 11/12: a million tokens in float under a per-token decay, one head of size 2, keys of
// unit norm. The state stays finite and below the closed-form bound of a contraction by at most
// a = exp(max g) per token plus a write of at most r ||v|| ||k||: ||S|| <= r max||v|| / (1 - a).
class MillionTokens : public ::testing::TestWithParam<Subject> {};

TEST_P(MillionTokens, StateStaysFiniteAndBounded) {
    const Preset& preset = GetParam().preset;
    const auto model = preset.make(options(1, 2));
    const AnyLayer& layer = model->any();
    const Index block = 1 << 16, total = 1000000;
    auto state = layer.initial_state(1, false);
    double bound = 0.0;
    for (Index begin = 0, seed = 81; begin < total; begin += block, ++seed) {
        const Index T = std::min(block, total - begin);
        TensorMap<double> in = random_inputs(layer.dims(), layer.gates(), 1, T, static_cast<std::uint64_t>(seed));
        set_key_norms(in.at("k"), 1.0);
        double rate = 1.0, max_g = -std::numeric_limits<double>::infinity(), max_v = 0.0;
        for (const GateSpec& spec : layer.gates()) {
            if (!spec.config.per_token) continue;
            for (double x : in.at(spec.name).values()) {
                if (spec.name == "g") max_g = std::max(max_g, x);
                else rate = std::max(rate, x);
            }
        }
        const auto& v = in.at("v");
        for (Index row = 0; row < v.size() / 2; ++row) max_v = std::max(max_v, std::hypot(v[2 * row], v[2 * row + 1]));
        bound = std::max(bound, rate * max_v / (1.0 - std::exp(max_g)));
        const TensorMap<float> in_f = cast_all<float>(in);
        const Tensor<float> out = layer.forward(as_inputs(in_f), *state);
        ASSERT_TRUE(all_finite(out)) << "tokens " << begin << " to " << begin + T;
        const double norm = state_norm(layer.save_state(*state));
        ASSERT_TRUE(std::isfinite(norm)) << "after " << begin + T << " tokens";
        ASSERT_LE(norm, bound * (1.0 + 1e-3)) << "after " << begin + T << " tokens";
    }
}

std::vector<Subject> decayed_subjects() {
    std::vector<Subject> chosen;
    for (Subject& s : subjects()) {
        const std::string& name = s.preset.name;
        if (name == "mamba2" || name == "gla" || name == "gated_deltanet" || name == "kda") chosen.push_back(s);
    }
    return chosen;
}

INSTANTIATE_TEST_SUITE_P(Decayed, MillionTokens, ::testing::ValuesIn(decayed_subjects()), subject_name);

// Fault kind 14 at the spec level. The parser limits state_size_per_head * heads (times the window
// of a windowed cache); that count equals the scalars a layer built from the spec saves once its
// window is full.
class SpecStateSize : public ::testing::TestWithParam<std::string> {};

TEST_P(SpecStateSize, ParserCountEqualsSavedScalars) {
    std::ifstream file(std::filesystem::path(MIRAS_SOURCE_DIR) / "specs" / GetParam());
    std::stringstream text;
    text << file.rdbuf();
    const LayerSpec spec = parse_spec_text(text.str(), GetParam());
    const auto layer = build_layer(spec);
    const nlohmann::json& memory = spec.json.at("memory");
    const Index window = memory.contains("window") ? memory.at("window").get<Index>() : 0;
    double counted = static_cast<double>(layer->state_size_per_head()) * static_cast<double>(layer->dims().heads);
    if (window > 0) counted *= static_cast<double>(window);
    // Enough tokens to fill a window: the cache's, or the Omega window of pairs an algorithm keeps
    // (its state is counted full). A growing cache (window 0) is counted per cached token.
    const nlohmann::json& algorithm = spec.json.at("algorithm");
    const Index pair_window = algorithm.contains("window") ? algorithm.at("window").get<Index>() : 0;
    const Index T = (window > 0 || pair_window > 0) ? std::max(window, pair_window) + 3 : 1;
    const TensorMap<double> in = random_inputs(layer->dims(), layer->gates(), 1, T, 91);
    auto state = layer->initial_state(1, true);
    layer->forward(as_inputs(in), *state);
    double saved = 0.0;
    for (const auto& [name, tensor] : layer->save_state(*state)) saved += static_cast<double>(tensor.size());
    EXPECT_EQ(saved, counted);
}

std::vector<std::string> spec_files() {
    std::vector<std::string> names;
    for (const auto& item : std::filesystem::directory_iterator(std::filesystem::path(MIRAS_SOURCE_DIR) / "specs")) {
        const std::string name = item.path().filename().string();
        if (item.path().extension() == ".json" && name != "schema.json") names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

INSTANTIATE_TEST_SUITE_P(Specs, SpecStateSize, ::testing::ValuesIn(spec_files()), [](const auto& info) {
    std::string name = info.param.substr(0, info.param.size() - 5);
    return name;
});

}  // namespace
}  // namespace miras::test
