// Every spec file in specs/ passes its checks (one test per file, discovered at run time, so a new
// file adds a test); the spec of each preset builds the same layer as the C++ preset; every
// registered combination is reachable from JSON; the checks fail where they should; and the
// reverse pass of every spec file matches central differences.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>
#include <string>
#include <cmath>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path specs_dir = fs::path(MIRAS_SOURCE_DIR) / "specs";

std::vector<std::string> spec_file_names() {
    std::vector<std::string> names;
    for (const auto& item : fs::directory_iterator(specs_dir)) {
        if (item.path().extension() == ".json" && item.path().filename() != "schema.json") {
            names.push_back(item.path().stem().string());
        }
    }
    std::sort(names.begin(), names.end());
    return names;
}

class SpecFile : public ::testing::TestWithParam<std::string> {};

TEST_P(SpecFile, PassesEveryCheck) {
    const LayerSpec spec = load_spec_file((specs_dir / (GetParam() + ".json")).string());
    EXPECT_EQ(spec.name, GetParam());
    for (const CheckResult& result : run_spec_checks(spec)) {
        EXPECT_NE(result.status, CheckResult::Status::failed) << result.name << ": " << result.detail;
    }
}

INSTANTIATE_TEST_SUITE_P(Specs, SpecFile, ::testing::ValuesIn(spec_file_names()),
                         [](const auto& info) { return info.param; });

TEST(SpecFiles, CoverEveryPreset) {
    const auto names = spec_file_names();
    for (const char* preset : {"linear_attention", "retnet", "lightning_attention", "mamba2", "gla", "hgrn2", "hgrn",
                               "deltanet", "gated_deltanet", "kda", "comba", "deltaproduct", "rwkv7", "longhorn",
                               "mesanet", "softmax_attention", "sliding_window_attention", "ttt_linear", "ttt_mlp",
                               "titans", "moneta", "yaad", "memora", "omeganet", "atlas"}) {
        EXPECT_NE(std::find(names.begin(), names.end(), preset), names.end()) << preset;
    }
}

// ---- the spec of a preset builds the preset ------------------------------------------------

using PresetFactory = std::function<std::unique_ptr<AnyLayer>(LayerOptions)>;

template <class L>
std::unique_ptr<AnyLayer> erase(L layer) {
    return std::make_unique<ErasedLayer<L>>(std::move(layer));
}

struct PresetCase {
    std::string file;
    PresetFactory make;
};

std::vector<PresetCase> preset_cases() {
    using namespace presets;
    return {
        {"linear_attention", [](LayerOptions o) { return erase(linear_attention(o)); }},
        {"retnet", [](LayerOptions o) { return erase(retnet(o)); }},
        {"lightning_attention", [](LayerOptions o) { return erase(lightning_attention(o)); }},
        {"mamba2", [](LayerOptions o) { return erase(mamba2(o)); }},
        {"gla", [](LayerOptions o) { return erase(gla(o)); }},
        {"hgrn2", [](LayerOptions o) { return erase(hgrn2(o)); }},
        {"hgrn", [](LayerOptions o) { return erase(elementwise_linear_rnn(o)); }},
        {"deltanet", [](LayerOptions o) { return erase(deltanet(o)); }},
        {"gated_deltanet", [](LayerOptions o) { return erase(gated_deltanet(o)); }},
        {"kda", [](LayerOptions o) { return erase(kda(o)); }},
        {"comba", [](LayerOptions o) { return erase(comba(o)); }},
        {"deltaproduct", [](LayerOptions o) { return erase(deltaproduct(o, 2)); }},
        {"rwkv7", [](LayerOptions o) { return erase(rwkv7(o)); }},
        {"longhorn", [](LayerOptions o) { return erase(longhorn(o, true)); }},
        {"mesanet", [](LayerOptions o) { return erase(mesanet(o)); }},
        {"softmax_attention", [](LayerOptions o) { return erase(softmax_attention(o)); }},
        {"sliding_window_attention", [](LayerOptions o) { return erase(sliding_window_attention(o, 64)); }},
        // The TTT specs use mini-batches of 4; everything else is the preset's default.
        {"ttt_linear", [](LayerOptions o) { return erase(ttt_linear(o, 4)); }},
        {"ttt_mlp", [](LayerOptions o) { return erase(ttt_mlp(o, 4)); }},
        {"titans", [](LayerOptions o) { return erase(titans(o)); }},
        {"moneta", [](LayerOptions o) { return erase(moneta(o)); }},
        {"yaad", [](LayerOptions o) { return erase(yaad(o)); }},
        {"memora", [](LayerOptions o) { return erase(memora(o)); }},
        {"omeganet", [](LayerOptions o) { return erase(omeganet(o)); }},
        {"atlas", [](LayerOptions o) { return erase(atlas(o)); }},
    };
}

class PresetSpec : public ::testing::TestWithParam<PresetCase> {};

TEST_P(PresetSpec, MatchesTheCppPreset) {
    const LayerSpec spec = load_spec_file((specs_dir / (GetParam().file + ".json")).string());
    const auto from_spec = build_layer(spec);
    const LayerDims& dims = from_spec->dims();
    LayerOptions options;
    options.heads = dims.heads;
    options.key_dim = dims.key;
    options.value_dim = dims.value;
    const auto preset = GetParam().make(options);

    // Long enough (40 tokens) that the sliding window of 64 is not the point; the window's own
    // behaviour is covered by the kv-cache tests.
    const SpecInputs inputs = random_inputs(*preset, 2, 40, 99);
    auto a = from_spec->initial_state(2, true), b = preset->initial_state(2, true);
    const Tensor<double> ours = from_spec->forward(inputs.view(), *a);
    const Tensor<double> reference = preset->forward(inputs.view(), *b);
    ASSERT_EQ(ours.shape(), reference.shape());
    double worst = 0.0;
    for (Index i = 0; i < ours.size(); ++i) worst = std::max(worst, std::abs(ours[i] - reference[i]));
    EXPECT_EQ(worst, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Presets, PresetSpec, ::testing::ValuesIn(preset_cases()),
                         [](const auto& info) { return info.param.file; });

// ---- every registered combination is reachable from JSON -----------------------------------

json minimal_spec(const std::string& key) {
    std::vector<std::string> parts;
    std::stringstream in(key);
    for (std::string part; std::getline(in, part, '/');) parts.push_back(part);
    json spec{{"name", "combination"},
              {"memory", {{"type", parts[0]}}},
              {"attentional_bias", {{"type", parts[1]}}},
              {"retention", {{"type", parts[2]}}},
              {"algorithm", {{"type", parts[3]}}},
              {"dims", {{"heads", 2}, {"key", 4}, {"value", 4}}}};
    if (parts[2] == "decay") spec["retention"]["gate"] = {{"gate", "per_token"}, {"axis", "head"}};
    // The mirror retention has no default kind: spread the four over the combinations.
    const char* const kinds[] = {"lq", "elastic_net", "kl", "sigmoid"};
    if (parts[2] == "mirror") spec["retention"]["kind"] = kinds[key.size() % 4];
    // A rate of 1 is the delta rule's natural step. It overshoots with the l_p, Huber and
    // value-shift biases and the deep algorithms, so those combinations take 0.1.
    const bool linear = (parts[1] == "l2" || parts[1] == "dot_product") && parts[0] != "mlp" &&
                        parts[3] != "minibatch_gd" && parts[3] != "momentum";
    if (!linear && parts[3] != "nonparametric" && parts[3] != "least_squares" && parts[3] != "generalized_delta") {
        spec["algorithm"]["rate"] = {{"value", 0.1}};
    }
    // Momentum 0.9 multiplies the step by up to 10, so momentum takes 0.01.
    if (parts[3] == "momentum") spec["algorithm"]["rate"] = {{"value", 0.01}};
    return spec;
}

TEST(Registry, HoldsTheRegisteredCombinations) {
#if MIRAS_REGISTRY_FULL
    // Counted by hand from the rules in layer/traits.hpp, with 5 biases and 3 retentions (none,
    // decay, mirror). matrix: gd, minibatch_gd and momentum take every bias and retention (3 x 15),
    // implicit every bias without mirror (10), least_squares and generalized_delta l2 without mirror
    // (2 + 2): 59. vector: gd, minibatch_gd, momentum: 45. mlp: minibatch_gd, momentum: 30.
    // kv_cache: l2 x (none, decay) with nonparametric: 2.
    EXPECT_EQ(registered_combinations().size(), 136u);
#else
    // The 18 linear combinations and the 15 listed in default_deep_combinations. The linear ones
    // are 12 with the matrix memory (2 retentions x 6 algorithm and bias pairs), 4 with the vector
    // memory (2 biases x 2 retentions with gd) and 2 with the kv cache.
    EXPECT_EQ(registered_combinations().size(), 33u);
#endif
}

#if !MIRAS_REGISTRY_FULL
TEST(Registry, NamesTheFullBuildForAnUnregisteredCombination) {
    json spec = minimal_spec("mlp/dot_product/none/minibatch_gd");
    try {
        parse_spec(spec);
        FAIL() << "accepted a combination the default build does not register";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.pointer(), "/algorithm/type");
        EXPECT_NE(std::string(e.what()).find("MIRAS_REGISTRY_FULL=ON"), std::string::npos) << e.what();
    }
}
#endif

TEST(Registry, ListsEveryDeepComponent) {
    const auto combinations = registered_combinations();
    for (const char* key : {"mlp/l2/none/minibatch_gd", "mlp/lp/mirror/minibatch_gd", "vector/huber/mirror/minibatch_gd",
                            "matrix/value_shift/decay/minibatch_gd", "mlp/huber/decay/minibatch_gd",
                            "mlp/l2/decay/momentum"}) {
        EXPECT_NE(std::find(combinations.begin(), combinations.end(), key), combinations.end()) << key;
    }
    for (const char* key : {"mlp/l2/none/gd", "mlp/l2/none/implicit", "matrix/l2/mirror/implicit",
                            "matrix/l2/mirror/least_squares", "kv_cache/l2/mirror/nonparametric"}) {
        EXPECT_EQ(std::find(combinations.begin(), combinations.end(), key), combinations.end()) << key;
    }
}

class Combination : public ::testing::TestWithParam<std::string> {};

TEST_P(Combination, BuildsFromJsonWithItsComponents) {
    const auto layer = build_layer(parse_spec(minimal_spec(GetParam())));
    EXPECT_EQ(layer->memory_name() + "/" + layer->bias_name() + "/" + layer->retention_name() + "/" +
                  layer->algorithm_name(),
              GetParam());
}

TEST_P(Combination, PassesTheGenericChecks) {
    CheckOptions options;
    options.horizon = 256;
    for (const CheckResult& result : run_spec_checks(parse_spec(minimal_spec(GetParam())), options)) {
        EXPECT_NE(result.status, CheckResult::Status::failed) << result.name << ": " << result.detail;
    }
}

TEST_P(Combination, ReportsTheStateSizeItSaves) {
    // The saved tensors hold B * H heads' state, and the kv cache one entry per token (no window).
    const auto layer = build_layer(parse_spec(minimal_spec(GetParam())));
    const Index B = 2, T = 5, H = layer->dims().heads;
    const SpecInputs inputs = random_inputs(*layer, B, T, 4);
    auto state = layer->initial_state(B, true);
    layer->forward(inputs.view(), *state);
    Index saved = 0;
    for (const auto& [name, tensor] : layer->save_state(*state)) saved += tensor.size();
    const Index pairs = layer->memory_name() == "kv_cache" ? T : 1;
    EXPECT_EQ(saved, layer->state_size_per_head() * B * H * pairs);
}

INSTANTIATE_TEST_SUITE_P(Registry, Combination, ::testing::ValuesIn(registered_combinations()), [](const auto& info) {
    std::string name = info.param;
    std::replace(name.begin(), name.end(), '/', '_');
    return name;
});

// ---- the checks can fail -------------------------------------------------------------------

class TemporaryDirectory {
public:
    TemporaryDirectory() : path_(fs::temp_directory_path() / ("miras_spec_test_" + std::to_string(std::random_device{}()))) {
        fs::create_directories(path_);
    }
    ~TemporaryDirectory() { fs::remove_all(path_); }
    fs::path write(const std::string& name, const json& content) const {
        std::ofstream(path_ / name) << content.dump(2);
        return path_ / name;
    }

private:
    fs::path path_;
};

const CheckResult& find_check(const std::vector<CheckResult>& results, const std::string& prefix) {
    for (const auto& result : results) {
        if (result.name.rfind(prefix, 0) == 0) return result;
    }
    throw std::runtime_error("no check named " + prefix);
}

TEST(SpecChecks, EquivalenceFailsForDifferentLayers) {
    TemporaryDirectory dir;
    json gated = minimal_spec("matrix/l2/decay/gd");
    json plain = minimal_spec("matrix/l2/none/gd");
    plain["expect"] = {{"equivalent_to", "gated.json"}};
    dir.write("gated.json", gated);
    const auto results = run_spec_checks(load_spec_file(dir.write("plain.json", plain).string()));
    EXPECT_EQ(find_check(results, "equivalent_to").status, CheckResult::Status::failed);
}

TEST(SpecChecks, FinitenessFailsForAnUnstableRate) {
    // eta = 100 with unit keys gives the delta rule the transition I - 100 k k^T, whose eigenvalue
    // -99 overflows float within a few dozen tokens.
    json spec = minimal_spec("matrix/l2/none/gd");
    spec["algorithm"]["rate"] = {{"gate", "per_token"}};
    spec["probe"] = {{"gates", {{"eta", 100.0}}}};
    const auto results = run_spec_checks(parse_spec(spec));
    EXPECT_EQ(find_check(results, "finite").status, CheckResult::Status::failed);
}

TEST(SpecChecks, UpdateDirectionRunsForGradientSteps) {
    for (const char* name : {"deltanet", "gated_deltanet", "comba", "implicit_key_decay", "vector_delta"}) {
        const auto results = run_spec_checks(load_spec_file((specs_dir / (std::string(name) + ".json")).string()));
        EXPECT_EQ(find_check(results, "update_direction").status, CheckResult::Status::ok) << name;
    }
}

TEST(SpecChecks, UpdateDirectionRunsForDeepGradientSteps) {
    for (const char* name : {"ttt_linear", "ttt_mlp", "titans", "yaad", "omeganet", "huber_key_decay", "lp_momentum",
                             "value_shift_minibatch", "gated_mlp_omega", "lp_query_token_mlp"}) {
        const auto results = run_spec_checks(load_spec_file((specs_dir / (std::string(name) + ".json")).string()));
        EXPECT_EQ(find_check(results, "update_direction").status, CheckResult::Status::ok) << name;
    }
}

TEST(SpecChecks, UpdateDirectionSkipsNonlinearSteps) {
    // Newton-Schulz (atlas, newton_schulz_matrix) and the mirror maps (the others).
    for (const char* name : {"atlas", "newton_schulz_matrix", "moneta", "memora", "kl_vector", "elastic_net_mlp",
                             "sigmoid_vector_huber", "lq_matrix_delta"}) {
        const auto result = find_check(run_spec_checks(load_spec_file((specs_dir / (std::string(name) + ".json")).string())),
                                       "update_direction");
        EXPECT_EQ(result.status, CheckResult::Status::skipped) << name;
        EXPECT_FALSE(result.detail.empty()) << name;
    }
}

TEST(SpecChecks, InnerGradientSkipsTheTanhSurrogate) {
    json spec = minimal_spec("matrix/lp/none/gd");
    spec["attentional_bias"]["smoothing"] = "tanh_sign";
    EXPECT_EQ(find_check(run_spec_checks(parse_spec(spec)), "inner_gradient").status, CheckResult::Status::skipped);
}

TEST(SpecChecks, UpdateDirectionSkipsClosedForms) {
    for (const char* name : {"mesanet", "rwkv7", "longhorn", "softmax_attention", "deltaproduct"}) {
        const auto results = run_spec_checks(load_spec_file((specs_dir / (std::string(name) + ".json")).string()));
        EXPECT_EQ(find_check(results, "update_direction").status, CheckResult::Status::skipped) << name;
    }
}

TEST(SpecChecks, HorizonComesFromTheSpec) {
    json spec = minimal_spec("matrix/l2/none/gd");
    spec["expect"] = {{"finite_for_tokens", 123}};
    EXPECT_EQ(find_check(run_spec_checks(parse_spec(spec)), "finite").name, "finite_123_tokens");
}

TEST(SpecProbe, DefaultsEveryPerTokenGate) {
    json spec = minimal_spec("matrix/l2/decay/least_squares");
    spec["algorithm"]["strength"] = {{"gate", "per_token"}};
    const LayerSpec parsed = parse_spec(spec);
    EXPECT_EQ(parsed.probe_gates, (std::map<std::string, double>{{"beta", 1.0}, {"g", 0.0}}));
}

TEST(SpecProbe, TakesTheSpecValues) {
    json spec = minimal_spec("matrix/l2/decay/gd");
    spec["algorithm"]["rate"] = {{"gate", "per_token"}};
    spec["probe"] = {{"gates", {{"eta", 0.5}, {"g", -0.25}}}};
    EXPECT_EQ(parse_spec(spec).probe_gates, (std::map<std::string, double>{{"eta", 0.5}, {"g", -0.25}}));
}

TEST(SpecProbe, LeavesFixedGatesOut) {
    json spec = minimal_spec("matrix/dot_product/none/gd");
    EXPECT_TRUE(parse_spec(spec).probe_gates.empty());
}

// ---- the memorisation probe against closed forms ------------------------------------------

LayerSpec spec_file(const std::string& name) { return load_spec_file((specs_dir / (name + ".json")).string()); }

TEST(MemorisationProbe, DeltaRuleRecallsOnePairExactly) {
    // eta = 1 and ||k|| = 1: W = v k^T, so W k = v.
    const ProbeResult probe = memorisation_probe(spec_file("deltanet"), 1, 3);
    EXPECT_LT(probe.mean_squared_error, 1e-24);
    EXPECT_EQ(probe.accuracy, 1.0);
}

TEST(MemorisationProbe, MesaNetHalvesOnePair) {
    // beta = 1, lambda = 1: W = v k^T and H = k k^T, so the read is v k^T (k k^T + I)^{-1} k = v / 2
    // and ||v / 2 - v||^2 = 1/4.
    const ProbeResult probe = memorisation_probe(spec_file("mesanet"), 1, 3);
    EXPECT_NEAR(probe.mean_squared_error, 0.25, 1e-12);
}

TEST(MemorisationProbe, CountsEveryWrittenPair) {
    // DeltaProduct writes two pairs per token.
    EXPECT_EQ(memorisation_probe(spec_file("deltaproduct"), 3, 3).pairs, 6);
}

TEST(SpecChecks, ProbeFailsAboveItsErrorThreshold) {
    LayerSpec spec = spec_file("mesanet");
    spec.expect = {{"probe", {{"pairs", 1}, {"max_error", 0.2}}}};
    EXPECT_EQ(find_check(run_spec_checks(spec), "probe").status, CheckResult::Status::failed);
}

TEST(SpecChecks, ProbePassesBelowItsErrorThreshold) {
    LayerSpec spec = spec_file("mesanet");
    spec.expect = {{"probe", {{"pairs", 1}, {"max_error", 0.3}}}};
    EXPECT_EQ(find_check(run_spec_checks(spec), "probe").status, CheckResult::Status::ok);
}

// ---- the reverse pass of every spec file -------------------------------------------------
// AnyLayer::backward in double is compared with central differences of AnyLayer::forward for the
// loss sum(R * o), at sampled entries of q, k, v and every per-token gate.

/// sum(R * o) for the layer run from its initial state.
double weighted_output(const AnyLayer& layer, const SpecInputs& inputs, const Tensor<double>& weights) {
    auto state = layer.initial_state(inputs.q.dim(0), true);
    const Tensor<double> output = layer.forward(inputs.view(), *state);
    double total = 0.0;
    for (Index i = 0; i < output.size(); ++i) total += output[i] * weights[i];
    return total;
}

/// Returns the input tensor of that name: q, k, v or a per-token gate.
Tensor<double>& input_named(SpecInputs& inputs, const std::string& name) {
    if (name == "q") return inputs.q;
    if (name == "k") return inputs.k;
    if (name == "v") return inputs.v;
    return inputs.gates.at(name);
}

class SpecGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(SpecGradients, MatchCentralDifferences) {
    const LayerSpec spec = load_spec_file((specs_dir / (GetParam() + ".json")).string());
    const auto layer = build_layer(spec);
    const Index B = 1, T = 5;
    const SpecInputs inputs = random_inputs(*layer, B, T, 7);

    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0.0, 1.0);
    Tensor<double> weights({B, T, layer->dims().heads, layer->dims().value});
    for (Index i = 0; i < weights.size(); ++i) weights[i] = normal(rng);

    // Checkpoints every 2 tokens, so that the pass crosses segment boundaries.
    const LayerGradients<double> gradients = layer->backward(inputs.view(), nullptr, weights.view(), 2);

    // The tensors to check: q, k, v and every per-token gate, each with its gradient.
    std::vector<std::pair<std::string, const Tensor<double>*>> checked{
        {"q", &gradients.q}, {"k", &gradients.k}, {"v", &gradients.v}};
    for (const auto& [name, tensor] : gradients.gates) checked.emplace_back(name, &tensor);
    ASSERT_EQ(gradients.gates.size(), inputs.gates.size()) << "one gradient per per-token gate";

    const double h = 1e-6;
    for (const auto& [name, gradient] : checked) {
        SpecInputs moved = inputs;
        Tensor<double>& x = input_named(moved, name);
        ASSERT_EQ(gradient->shape(), x.shape()) << name;
        // Three entries spread over the tensor.
        for (Index i : {Index(0), x.size() / 2, x.size() - 1}) {
            const double saved = x[i];
            x[i] = saved + h;
            const double plus = weighted_output(*layer, moved, weights);
            x[i] = saved - h;
            const double minus = weighted_output(*layer, moved, weights);
            x[i] = saved;
            const double numeric = (plus - minus) / (2.0 * h);
            EXPECT_NEAR((*gradient)[i], numeric, 1e-5 * std::max(1.0, std::abs(numeric)))
                << GetParam() << ": d/d" << name << " entry " << i << " (route " << layer->backward_route() << ")";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Specs, SpecGradients, ::testing::ValuesIn(spec_file_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace miras
