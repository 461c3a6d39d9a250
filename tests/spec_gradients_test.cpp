// The reverse pass of every spec file in specs/, one test per file discovered at run time.
// AnyLayer::backward in double is compared with central differences of AnyLayer::forward for the
// loss sum(R * o), at sampled entries of q, k, v and every per-token gate.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras {
namespace {

namespace fs = std::filesystem;

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
