// Malformed specs, one per row: each is rejected with a SpecError that carries the JSON pointer of
// the bad field and a message naming what is wrong and what is valid.
#include <set>

#include <gtest/gtest.h>

#include "miras/spec/spec.hpp"

namespace miras {
namespace {

using nlohmann::json;

// A valid Gated DeltaNet spec that each row edits.
const char* const base_spec = R"({
  "name": "base",
  "memory": {"type": "matrix"},
  "attentional_bias": {"type": "l2"},
  "retention": {"type": "decay", "gate": {"gate": "per_token", "axis": "head"}},
  "algorithm": {"type": "gd", "rate": {"gate": "per_token"}},
  "dims": {"heads": 2, "key": 8, "value": 8}
})";

/// An edit: set the value at `pointer` to the JSON `value`, or remove the field when value is empty.
struct Edit {
    std::string pointer;
    std::string value;
};

struct BadSpec {
    std::string label;
    std::vector<Edit> edits;  // applied to base_spec, unless `text` is set
    std::string text;         // the whole document, for cases the JSON value cannot express
    std::string pointer;
    std::string fragment;
};

std::string document(const BadSpec& c) {
    if (c.edits.empty()) return c.text;
    json spec = json::parse(base_spec);
    for (const Edit& edit : c.edits) {
        const json::json_pointer at(edit.pointer);
        if (edit.value.empty()) {
            spec[at.parent_pointer()].erase(at.back());
        } else {
            spec[at] = json::parse(edit.value);
        }
    }
    return spec.dump();
}

const std::string kv = R"({"type": "kv_cache"})";
const std::string least_squares = R"({"type": "least_squares"})";

std::vector<BadSpec> bad_specs() {
    return {
        // unknown and misspelt names
        {"UnknownMemory", {{"/memory/type", R"("tensor")"}}, "", "/memory/type", "unknown value 'tensor'"},
        {"MisspeltMemory", {{"/memory/type", R"("matirx")"}}, "", "/memory/type", "did you mean 'matrix'?"},
        {"MisspeltBias", {{"/attentional_bias/type", R"("dot_prodcut")"}}, "", "/attentional_bias/type", "did you mean 'dot_product'?"},
        {"MisspeltRetention", {{"/retention/type", R"("decya")"}}, "", "/retention/type", "did you mean 'decay'?"},
        {"MisspeltAlgorithm", {{"/algorithm/type", R"("least_square")"}}, "", "/algorithm/type", "did you mean 'least_squares'?"},
        {"UnknownAlgorithmListsChoices", {{"/algorithm/type", R"("adam")"}}, "", "/algorithm/type", "'gd', 'implicit'"},
        {"MisspeltFeatureMap", {{"/memory/feature_map", R"({"type": "elu_plus_1"})"}}, "", "/memory/feature_map/type", "did you mean 'elu_plus_one'?"},
        {"MisspeltSection", {{"/dimz", R"({})"}}, "", "/dimz", "did you mean 'dims'?"},
        {"MisspeltPlacement", {{"/retention/placement", R"("gradient_than_decay")"}}, "", "/retention/placement", "did you mean 'gradient_then_decay'?"},
        {"MisspeltGateAxis", {{"/retention/gate/axis", R"("kye")"}}, "", "/retention/gate/axis", "did you mean 'key'?"},
        {"MisspeltSolver", {{"/algorithm", R"({"type": "least_squares", "solver": "conjugate_gradients"})"}}, "", "/algorithm/solver", "did you mean 'conjugate_gradient'?"},
        {"ReadTimingWithoutNearName", {{"/execution", R"({"read": "later"})"}}, "", "/execution/read", "valid values are 'after_write' or 'before_write'"},
        {"UnknownFieldOfAlgorithm", {{"/algorithm/diagonal", "true"}}, "", "/algorithm/diagonal", "unknown field 'diagonal' in algorithm.type 'gd'"},
        {"WindowOnMatrixMemory", {{"/memory/window", "4"}}, "", "/memory/window", "unknown field 'window'"},
        // missing fields and wrong JSON types
        {"MissingName", {{"/name", ""}}, "", "/name", "missing required field 'name'"},
        {"NameNotAString", {{"/name", "7"}}, "", "/name", "valid is a non-empty string"},
        {"NameWithSpace", {{"/name", R"("my layer")"}}, "", "/name", "letters, digits"},
        {"MissingMemory", {{"/memory", ""}}, "", "/memory", "missing required section 'memory'"},
        {"MemoryNotAnObject", {{"/memory", R"("matrix")"}}, "", "/memory", "must be an object"},
        {"MissingType", {{"/memory", "{}"}}, "", "/memory/type", "missing required field 'type'"},
        {"TypeNotAString", {{"/algorithm/type", "3"}}, "", "/algorithm/type", "expected a string"},
        {"MissingDims", {{"/dims", ""}}, "", "/dims", "missing required section 'dims'"},
        {"MissingDecayGate", {{"/retention/gate", ""}}, "", "/retention/gate", "missing required gate"},
        {"DescriptionNotAString", {{"/description", "[1]"}}, "", "/description", "expected a string"},
        {"KeyAsString", {{"/dims/key", R"("8")"}}, "", "/dims/key", "found a string"},
        {"ValueNotAnInteger", {{"/dims/value", "2.5"}}, "", "/dims/value", "an integer from 1"},
        {"SeparateReadKeyNotBool", {{"/algorithm/separate_read_key", R"("yes")"}}, "", "/algorithm/separate_read_key", "valid is true or false"},
        {"RootIsAnArray", {}, "[1, 2]", "", "a spec is a JSON object"},
        // out of range
        {"ZeroHeads", {{"/dims/heads", "0"}}, "", "/dims/heads", "out of range"},
        {"HugeKey", {{"/dims/key", "1000000000000"}}, "", "/dims/key", "out of range"},
        {"NegativeValueDim", {{"/dims/value", "-8"}}, "", "/dims/value", "out of range"},
        {"StateTooLarge", {{"/dims", R"({"heads": 65536, "key": 1024, "value": 1024})"}}, "", "/dims", "more than the limit of 2^30"},
        {"DegreeZero", {{"/memory/feature_map", R"({"type": "polynomial", "degree": 0})"}}, "", "/memory/feature_map/degree", "out of range"},
        {"DegreeSeven", {{"/memory/feature_map", R"({"type": "polynomial", "degree": 7})"}}, "", "/memory/feature_map/degree", "from 1 to 6"},
        {"TooManyFeatures", {{"/memory/feature_map", R"({"type": "polynomial", "degree": 6})"}, {"/dims/key", "4096"}}, "", "/memory/feature_map/degree", "more than 2^31 - 1"},
        {"CoefficientCount", {{"/memory/feature_map", R"({"type": "polynomial", "degree": 2, "coefficients": [1, 1]})"}}, "", "/memory/feature_map/coefficients", "degree + 1 = 3"},
        {"NegativeCoefficient", {{"/memory/feature_map", R"({"type": "polynomial", "coefficients": [1, -1, 0.5]})"}}, "", "/memory/feature_map/coefficients/1", "finite value >= 0"},
        {"NegativeWindow", {{"/memory", R"({"type": "kv_cache", "window": -1})"}, {"/algorithm", R"({"type": "nonparametric"})"}}, "", "/memory/window", "out of range"},
        {"ZeroCgIterations", {{"/algorithm", R"({"type": "least_squares", "cg_iterations": 0})"}}, "", "/algorithm/cg_iterations", "out of range"},
        {"CgIterationsAsString", {{"/algorithm", R"({"type": "least_squares", "cg_iterations": "many"})"}}, "", "/algorithm/cg_iterations", "found a string"},
        {"ZeroStepsPerToken", {{"/execution", R"({"steps_per_token": 0})"}}, "", "/execution/steps_per_token", "out of range"},
        {"NegativeQueryScale", {{"/execution", R"({"query_scale": -1})"}}, "", "/execution/query_scale", "a finite value > 0"},
        {"FiniteForZeroTokens", {{"/expect", R"({"finite_for_tokens": 0})"}}, "", "/expect/finite_for_tokens", "out of range"},
        // gates
        {"PositiveLogGate", {{"/retention/gate", R"({"value": 0.5})"}}, "", "/retention/gate/value", "log-gate g <= 0"},
        {"NegativeRate", {{"/algorithm/rate", R"({"value": -1})"}}, "", "/algorithm/rate/value", "a finite value >= 0"},
        {"TwoGateForms", {{"/retention/gate", R"({"gate": "per_token", "value": -0.1})"}}, "", "/retention/gate", "exactly one of"},
        {"WrongValueCount", {{"/retention/gate", R"({"values": [-0.1, -0.2, -0.3], "axis": "head"})"}}, "", "/retention/gate/values", "found 3 values"},
        {"EmptyValues", {{"/retention/gate", R"({"values": []})"}}, "", "/retention/gate/values", "non-empty array"},
        {"ValueNotANumber", {{"/retention/gate", R"({"values": [-0.1, "x"]})"}}, "", "/retention/gate/values/1", "found a string"},
        {"PerTokenRidge", {{"/algorithm", R"({"type": "least_squares", "ridge": {"gate": "per_token"}})"}}, "", "/algorithm/ridge/gate", "must be fixed"},
        {"ZeroRidge", {{"/algorithm", R"({"type": "least_squares", "ridge": {"value": 0}})"}}, "", "/algorithm/ridge/value", "a finite value > 0"},
        {"StrengthPerKey", {{"/algorithm", R"({"type": "least_squares", "strength": {"gate": "per_token", "axis": "key"}})"}}, "", "/algorithm/strength/axis", "per head"},
        // incompatible combinations, naming both fields
        {"KvCacheWithGradientStep", {{"/memory", kv}}, "", "/algorithm/type", "memory.type 'kv_cache'"},
        {"NonparametricWithMatrix", {{"/algorithm", R"({"type": "nonparametric"})"}}, "", "/algorithm/type", "needs memory.type 'kv_cache'"},
        {"LeastSquaresWithDotProduct", {{"/algorithm", least_squares}, {"/attentional_bias/type", R"("dot_product")"}}, "", "/algorithm/type", "attentional_bias.type 'dot_product'"},
        {"ImplicitWithVector", {{"/algorithm", R"({"type": "implicit"})"}, {"/memory/type", R"("vector")"}}, "", "/algorithm/type", "memory.type 'vector'"},
        {"LeastSquaresWithKeyDecay", {{"/algorithm", least_squares}, {"/retention/gate/axis", R"("key")"}}, "", "/retention/gate/axis", "algorithm.type 'least_squares'"},
        {"KvCacheWithKeyDecay", {{"/memory", kv}, {"/algorithm", R"({"type": "nonparametric"})"}, {"/retention/gate/axis", R"("key")"}}, "", "/retention/gate/axis", "memory.type 'kv_cache'"},
        {"VectorWithUnequalDims", {{"/memory/type", R"("vector")"}, {"/dims/value", "4"}}, "", "/dims/value", "must equal the key feature dimension (8)"},
        // deep components: memory, biases, retention and algorithms
        {"LpPBelowOne", {{"/attentional_bias", R"({"type": "lp", "p": 0.5})"}}, "", "/attentional_bias/p", "valid is a finite p >= 1"},
        {"MisspeltLpSmoothing", {{"/attentional_bias", R"({"type": "lp", "smoothing": "tanh_sing"})"}}, "", "/attentional_bias/smoothing", "did you mean 'tanh_sign'?"},
        {"UnknownFieldOfLp", {{"/attentional_bias", R"({"type": "lp", "kind": "mixture"})"}}, "", "/attentional_bias/kind", "unknown field 'kind' in attentional_bias.type 'lp'"},
        {"NegativeHuberDelta", {{"/attentional_bias", R"({"type": "huber", "delta": {"value": -0.5}})"}}, "", "/attentional_bias/delta/value", "a finite value > 0"},
        {"HuberDeltaPerKey", {{"/attentional_bias", R"({"type": "huber", "delta": {"gate": "per_token", "axis": "key"}})"}}, "", "/attentional_bias/delta/axis", "one value per head"},
        {"MisspeltHuberKind", {{"/attentional_bias", R"({"type": "huber", "kind": "mixtrue"})"}}, "", "/attentional_bias/kind", "did you mean 'mixture'?"},
        {"NegativeValueShiftRadius", {{"/attentional_bias", R"({"type": "value_shift", "radius": -0.1})"}}, "", "/attentional_bias/radius", "a finite value >= 0"},
        {"SubtractKeyUnequalDims", {{"/attentional_bias", R"({"type": "l2", "subtract_key": true})"}, {"/dims/value", "4"}}, "", "/attentional_bias/subtract_key", "dims.key (8)"},
        {"MirrorWithoutKind", {{"/retention", R"({"type": "mirror"})"}}, "", "/retention/kind", "missing required field 'kind'"},
        {"MisspeltMirrorKind", {{"/retention", R"({"type": "mirror", "kind": "elastic_nte"})"}}, "", "/retention/kind", "did you mean 'elastic_net'?"},
        {"MirrorQAtOne", {{"/retention", R"({"type": "mirror", "kind": "lq", "q": 1})"}}, "", "/retention/q", "valid is q > 1 except 3"},
        {"MirrorQAtThree", {{"/retention", R"({"type": "mirror", "kind": "lq", "q": 3})"}}, "", "/retention/q", "except 3"},
        {"QOnKlRetention", {{"/retention", R"({"type": "mirror", "kind": "kl", "q": 4})"}}, "", "/retention/q", "unknown field 'q' in retention.kind 'kl'"},
        {"MirrorGateOutOfRange", {{"/retention", R"({"type": "mirror", "kind": "kl", "gate": {"value": 0.2}})"}}, "", "/retention/gate/value", "log-gate g <= 0"},
        {"MirrorWithPairsPerToken", {{"/retention", R"({"type": "mirror", "kind": "kl"})"}, {"/execution", R"({"steps_per_token": 2})"}}, "", "/execution/steps_per_token", "valid is 1"},
        {"ZeroMinibatchSize", {{"/algorithm", R"({"type": "minibatch_gd", "minibatch_size": 0})"}}, "", "/algorithm/minibatch_size", "out of range"},
        {"MisspeltRateForm", {{"/algorithm", R"({"type": "minibatch_gd", "rate_form": "factord"})"}}, "", "/algorithm/rate_form", "did you mean 'factored'?"},
        {"FactoredRateWithDecay", {{"/algorithm", R"({"type": "minibatch_gd", "rate_form": "factored"})"}}, "", "/algorithm/rate_form", "takes no retention"},
        {"TokenFactorCount", {{"/retention", R"({"type": "none"})"}, {"/algorithm", R"({"type": "minibatch_gd", "minibatch_size": 4, "rate_form": "factored", "token_factor": [1, 0.5]})"}}, "", "/algorithm/token_factor", "minibatch_size = 4"},
        {"MinibatchRatePerKey", {{"/algorithm", R"({"type": "minibatch_gd", "rate": {"gate": "per_token", "axis": "key"}})"}}, "", "/algorithm/rate/axis", "one value per head"},
        {"PositiveMomentumLogGate", {{"/algorithm", R"({"type": "momentum", "momentum": {"value": 0.5}})"}}, "", "/algorithm/momentum/value", "log-gate g <= 0"},
        {"NegativeNewtonSchulzSteps", {{"/algorithm", R"({"type": "momentum", "newton_schulz_steps": -1})"}}, "", "/algorithm/newton_schulz_steps", "out of range"},
        {"ZeroOmegaWindow", {{"/algorithm", R"({"type": "momentum", "window": 0})"}}, "", "/algorithm/window", "out of range"},
        {"NegativeClipNorm", {{"/algorithm", R"({"type": "momentum", "clip_norm": -1})"}}, "", "/algorithm/clip_norm", "a finite value >= 0"},
        {"UnknownActivation", {{"/memory", R"({"type": "mlp", "activation": "gelu_tahn"})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/activation", "did you mean 'gelu_tanh'?"},
        {"MlpDepthZero", {{"/memory", R"({"type": "mlp", "depth": 0})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/depth", "out of range"},
        {"MlpZeroExpansion", {{"/memory", R"({"type": "mlp", "expansion": 0})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/expansion", "a finite value > 0"},
        {"MlpResidualUnequalDims", {{"/memory", R"({"type": "mlp"})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}, {"/dims/value", "4"}}, "", "/memory/residual", "must equal the key feature dimension (8)"},
        {"GatedMlpWithBiases", {{"/memory", R"({"type": "mlp", "gated": true, "biases": true})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/biases", "has no biases"},
        {"NormWeightWithoutAffine", {{"/memory", R"({"type": "mlp", "norm": "plain", "norm_weight": [1]})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/norm_weight", "valid is memory.norm 'affine'"},
        {"NormWeightCount", {{"/memory", R"({"type": "mlp", "norm": "affine", "norm_weight": [1, 2, 3]})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/norm_weight", "1, V = 8"},
        {"ReadAddsBranchWithoutNorm", {{"/memory", R"({"type": "mlp", "read_adds_branch": true})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/read_adds_branch", "needs a LayerNorm"},
        {"UnknownMlpInitField", {{"/memory", R"({"type": "mlp", "init": {"sd": 0.1}})"}, {"/algorithm", R"({"type": "minibatch_gd"})"}}, "", "/memory/init/sd", "did you mean 'std'?"},
        {"MlpWithImplicit", {{"/memory", R"({"type": "mlp"})"}, {"/algorithm", R"({"type": "implicit"})"}}, "", "/algorithm/type", "memory.type 'mlp'"},
        {"MlpWithGradientStep", {{"/memory", R"({"type": "mlp"})"}}, "", "/algorithm/type", "valid is algorithm.type 'minibatch_gd' or 'momentum'"},
        {"MirrorWithLeastSquares", {{"/retention", R"({"type": "mirror", "kind": "kl"})"}, {"/algorithm", least_squares}}, "", "/algorithm/type", "the mirror retention maps the memory back"},
        {"HuberWithGeneralizedDelta", {{"/attentional_bias", R"({"type": "huber"})"}, {"/algorithm", R"({"type": "generalized_delta"})"}}, "", "/algorithm/type", "attentional_bias.type 'huber'"},
        // probe and expect
        {"ProbeGateUnknown", {{"/probe", R"({"gates": {"beta": 1}})"}}, "", "/probe/gates/beta", "not a per-token gate"},
        {"ProbeGateMisspelt", {{"/probe", R"({"gates": {"eat": 1}})"}}, "", "/probe/gates/eat", "did you mean 'eta'?"},
        {"ProbeGateOutOfRange", {{"/probe", R"({"gates": {"g": 0.1}})"}}, "", "/probe/gates/g", "log-gate g <= 0"},
        {"ToleranceWithoutEquivalence", {{"/expect", R"({"tolerance": 1e-6})"}}, "", "/expect/tolerance", "needs expect.equivalent_to"},
        {"EquivalentToNumber", {{"/expect", R"({"equivalent_to": 3})"}}, "", "/expect/equivalent_to", "path of another spec file"},
        {"ProbeAccuracyAboveOne", {{"/expect", R"({"probe": {"min_accuracy": 1.5}})"}}, "", "/expect/probe/min_accuracy", "valid is 0 to 1"},
        {"ProbePairsZero", {{"/expect", R"({"probe": {"pairs": 0}})"}}, "", "/expect/probe/pairs", "out of range"},
        {"ProbeNegativeError", {{"/expect", R"({"probe": {"max_error": -1}})"}}, "", "/expect/probe/max_error", ">= 0"},
        // documents that are not valid specs at all
        {"DuplicateTopLevelKey", {}, R"({"name": "a", "name": "b"})", "/name", "duplicate key 'name'"},
        {"DuplicateNestedKey", {}, R"({"dims": {"heads": 1, "key": 2, "heads": 3}})", "/dims/heads", "duplicate key 'heads'"},
        {"DuplicateKeyInArray", {}, R"({"x": [1, {"a": 1, "a": 2}]})", "/x/1/a", "duplicate key 'a'"},
        {"EmptyDocument", {}, " \n\t ", "", "the spec is empty"},
        {"NotJson", {}, "memory: matrix\n", "", "not valid JSON"},
        {"TruncatedJson", {}, R"({"name": "a", "memory": {)", "", "not valid JSON"},
        {"NumberTooLarge", {}, R"({"name": "a", "dims": {"heads": 1e999}})", "", "number overflow"},
        {"DeepArrays", {}, std::string(10000, '[') + std::string(10000, ']'), "", "nesting deeper than 32 levels"},
        {"DeepObjects", {}, [] {
             std::string text;
             for (int i = 0; i < 5000; ++i) text += "{\"a\":";
             return text + "1" + std::string(5000, '}');
         }(), "", "nesting deeper than 32 levels"},
    };
}

class SpecErrors : public ::testing::TestWithParam<BadSpec> {};

TEST_P(SpecErrors, NamesTheFieldAndWhatIsValid) {
    const BadSpec& c = GetParam();
    const std::string text = document(c);
    try {
        parse_spec_text(text, "<test>");
        FAIL() << "accepted: " << text.substr(0, 200);
    } catch (const SpecError& e) {
        EXPECT_EQ(e.pointer(), c.pointer) << e.what();
        EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(Table, SpecErrors, ::testing::ValuesIn(bad_specs()),
                         [](const auto& info) { return info.param.label; });

TEST(SpecErrors, TableHasFortyDistinctCases) {
    std::set<std::string> labels;
    for (const auto& c : bad_specs()) labels.insert(c.label);
    EXPECT_GE(labels.size(), 40u);
    EXPECT_EQ(labels.size(), bad_specs().size());
}

TEST(SpecErrors, BaseSpecIsValid) {
    EXPECT_EQ(parse_spec_text(base_spec, "<test>").name, "base");
}

TEST(SpecErrors, DeepValueBuiltInMemoryNamesItsPointer) {
    json deep = 1;
    for (int i = 0; i < 40; ++i) deep = json::array({deep});
    json spec = json::parse(base_spec);
    spec["expect"] = {{"probe", deep}};
    std::string expected = "/expect/probe";
    for (int depth = 3; depth <= spec_max_depth; ++depth) expected += "/0";
    try {
        parse_spec(spec);
        FAIL() << "accepted a spec nested 42 levels deep";
    } catch (const SpecError& e) {
        EXPECT_EQ(e.pointer(), expected) << e.what();
    }
}

TEST(SpecErrors, MissingFileIsASpecError) {
    EXPECT_THROW(load_spec_file("/nonexistent/miras/spec.json"), SpecError);
}

TEST(SpecErrors, EditDistanceCountsEdits) {
    EXPECT_EQ(edit_distance("matirx", "matrix"), 2u);
    EXPECT_EQ(edit_distance("", "gd"), 2u);
    EXPECT_EQ(edit_distance("decay", "decay"), 0u);
    EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace miras
