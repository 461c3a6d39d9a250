// The mixer over a type-erased layer and the MQAR network around it. Every parameter and input
// gradient is checked against central finite differences in double, for gates per head and per
// channel, with and without the short-convolution first block. The batched evaluation is checked
// against mqar_accuracy, and a layer without a reverse pass against its message.
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "miras/nn/mqar_model.hpp"
#include "miras/spec/any_layer.hpp"
#include "gradient_check.hpp"

namespace {

using namespace miras;
using namespace miras::nn;
using M = Mat<double>;

LayerOptions options(Index heads, Index key, Index value) {
    LayerOptions o;
    o.heads = heads;
    o.key_dim = key;
    o.value_dim = value;
    return o;
}

template <class L>
std::shared_ptr<const AnyLayer> erased(L layer) {
    return std::make_shared<ErasedLayer<L>>(std::move(layer));
}

struct MixerCase {
    std::string name;
    std::function<std::shared_ptr<const AnyLayer>()> make;
    std::size_t gate_count;
    std::map<std::string, double> gate_scales{};
};

class SpecMixerGradients : public ::testing::TestWithParam<MixerCase> {};

TEST_P(SpecMixerGradients, MatchCentralDifferences) {
    std::mt19937_64 rng(5);
    SpecMixer<double> mixer(GetParam().make(), 6, 3, rng, GetParam().gate_scales);
    ASSERT_EQ(mixer.gates.size(), GetParam().gate_count);
    test::expect_mixer_gradients_match(mixer, 6, rng);
}

INSTANTIATE_TEST_SUITE_P(
    Layers, SpecMixerGradients,
    ::testing::Values(
        MixerCase{"gated_deltanet", [] { return erased(presets::gated_deltanet(options(2, 3, 3))); }, 2},
        MixerCase{"gated_deltanet_scaled_rate", [] { return erased(presets::gated_deltanet(options(2, 3, 3))); }, 2,
                  {{"eta", 0.3}}},
        MixerCase{"deltanet_wide_values", [] { return erased(presets::deltanet(options(2, 3, 4))); }, 1},
        MixerCase{"kda_key_channels", [] { return erased(presets::kda(options(2, 3, 3))); }, 2},
        MixerCase{"gla_key_channels", [] { return erased(presets::gla(options(1, 3, 2))); }, 1},
        MixerCase{"retnet_fixed_gates", [] { return erased(presets::retnet(options(2, 3, 3))); }, 0}),
    [](const ::testing::TestParamInfo<MixerCase>& info) { return info.param.name; });

TEST(SpecMixer, ThreadCountChangesNoNumber) {
    const auto layer = erased(presets::kda(options(2, 3, 3)));
    std::mt19937_64 rng(3);
    const M x = normal_matrix<double>(rng, 5 * 4, 6, 1.0);
    const M r = normal_matrix<double>(rng, 5 * 4, 6, 1.0);
    std::vector<M> outputs, input_grads, param_grads;
    for (int threads : {1, 2, 3, 7}) {
        std::mt19937_64 init(11);
        SpecMixer<double> mixer(layer, 6, 3, init);
        mixer.threads = threads;
        outputs.push_back(mixer.forward(x, 5, 4));
        input_grads.push_back(mixer.backward(r));
        M all(0, 1);
        for (Param<double>* p : mixer.params()) {
            M grown(all.rows() + p->grad.size(), 1);
            grown << all, Eigen::Map<const M>(p->grad.data(), p->grad.size(), 1);
            all = grown;
        }
        param_grads.push_back(all);
    }
    for (std::size_t i = 1; i < outputs.size(); ++i) {
        EXPECT_EQ(outputs[i], outputs[0]) << "output, run " << i;
        EXPECT_EQ(input_grads[i], input_grads[0]) << "input gradient, run " << i;
        EXPECT_EQ(param_grads[i], param_grads[0]) << "parameter gradients, run " << i;
    }
}

TEST(SpecMixer, GateSquashingsMatchCentralDifferences) {
    for (Range range : {Range::log_gate, Range::nonnegative, Range::positive, Range::any}) {
        for (double a : {-25.0, -2.0, 0.0, 0.7, 25.0}) {
            const double h = 1e-6;
            const double numeric = (squash_gate<double>(range, a + h) - squash_gate<double>(range, a - h)) / (2 * h);
            EXPECT_NEAR(squash_gate_slope<double>(range, a), numeric, 1e-8) << range_description(range) << " at " << a;
            EXPECT_TRUE(in_range(squash_gate<double>(range, a), range)) << range_description(range) << " at " << a;
        }
    }
}

TEST(SpecMixer, GatesOfDeclaredRange) {
    std::mt19937_64 rng(1);
    SpecMixer<double> mixer(erased(presets::kda(options(2, 3, 3))), 6, 3, rng);
    ASSERT_EQ(mixer.gates.size(), 2u);
    EXPECT_EQ(mixer.gates[0].spec.name, "g");
    EXPECT_EQ(mixer.gates[0].channels, 3);
    EXPECT_EQ(mixer.gates[0].projection.out(), 6);
    EXPECT_EQ(mixer.gates[1].spec.name, "eta");
    EXPECT_EQ(mixer.gates[1].channels, 1);
    EXPECT_EQ(mixer.gates[1].projection.out(), 2);
}

TEST(SpecMixer, GateScaleMultipliesTheGate) {
    // With the rate scaled to almost 0 the delta rule never writes: the memory reads 0, and so
    // does the gated norm of it, so the mixer's output vanishes. At scale 1 it does not.
    const auto layer = erased(presets::deltanet(options(2, 3, 3)));
    std::mt19937_64 data(2);
    const M x = normal_matrix<double>(data, 2 * 5, 6, 1.0);
    for (double scale : {1.0, 1e-12}) {
        std::mt19937_64 rng(4);
        SpecMixer<double> mixer(layer, 6, 3, rng, {{"eta", scale}});
        EXPECT_EQ(mixer.gates.at(0).scale, scale);
        const double size = mixer.forward(x, 2, 5).cwiseAbs().maxCoeff();
        if (scale == 1.0) {
            EXPECT_GT(size, 1e-6);
        } else {
            EXPECT_LT(size, 1e-9);
        }
    }
}

TEST(SpecMixer, BadGateScaleNamesTheGate) {
    std::mt19937_64 rng(1);
    const auto gdn = erased(presets::gated_deltanet(options(2, 3, 3)));
    const auto message = [&](const std::map<std::string, double>& scales) {
        try {
            SpecMixer<double> mixer(gdn, 6, 3, rng, scales);
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(message({{"beta", 0.1}}).find("valid are 'g', 'eta'"), std::string::npos) << message({{"beta", 0.1}});
    EXPECT_NE(message({{"g", 0.1}}).find("log-gate"), std::string::npos) << message({{"g", 0.1}});
    EXPECT_NE(message({{"eta", 0.0}}).find("finite value > 0"), std::string::npos) << message({{"eta", 0.0}});
    EXPECT_NE(message({{"eta", std::nan("")}}).find("finite value > 0"), std::string::npos);
}

TEST(SpecMixer, TapeRouteTrainsOtherLayers) {
    // Longhorn (the implicit step) has no hand-written reverse pass: the tape pass gives the
    // mixer's gradients, checked against central differences of the loss sum(r * y).
    const auto layer = erased(presets::longhorn(options(1, 3, 3)));
    EXPECT_EQ(layer->backward_route(), "tape");
    std::mt19937_64 rng(1);
    SpecMixer<double> mixer(layer, 4, 2, rng);
    const M x = normal_matrix<double>(rng, 2 * 3, 4, 1.0);
    const M r = normal_matrix<double>(rng, 2 * 3, 4, 1.0);
    mixer.forward(x, 2, 3);
    const M dx = mixer.backward(r);
    const double h = 1e-6;
    for (Index i = 0; i < x.size(); i += 5) {
        M plus = x, minus = x;
        plus.data()[i] += h;
        minus.data()[i] -= h;
        const double numeric = ((mixer.forward(plus, 2, 3).cwiseProduct(r)).sum() -
                                (mixer.forward(minus, 2, 3).cwiseProduct(r)).sum()) / (2 * h);
        EXPECT_NEAR(dx.data()[i], numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << "dx entry " << i;
    }
}

TEST(SpecMixer, RouteFollowsTheLayer) {
    EXPECT_EQ(erased(presets::gated_deltanet(options(1, 2, 2)))->backward_route(), "hand-written");
    EXPECT_EQ(erased(presets::linear_attention(options(1, 2, 2)))->backward_route(), "hand-written");
    EXPECT_EQ(erased(presets::deltaproduct(options(1, 2, 2), 2))->backward_route(), "tape");
    EXPECT_EQ(erased(presets::comba(options(1, 2, 2)))->backward_route(), "tape");
}

template <class S>
Tensor<S> random_tensor(std::mt19937_64& rng, Shape shape, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    Tensor<S> t(std::move(shape));
    for (Index i = 0; i < t.size(); ++i) t.data()[i] = S(u(rng));
    return t;
}

// AnyLayer::backward from a non-zero initial state equals layer_backward on the concrete layer.
template <class S>
void expect_erased_backward_matches() {
    const auto layer = presets::gated_deltanet(options(2, 3, 3));
    const ErasedLayer<presets::GatedDeltaNet> erased_layer(layer);
    std::mt19937_64 rng(8);
    const Index B = 2, T = 5;
    const Tensor<S> q = random_tensor<S>(rng, {B, T, 2, 3}, -0.5, 0.5), k = random_tensor<S>(rng, {B, T, 2, 3}, -0.5, 0.5);
    const Tensor<S> v = random_tensor<S>(rng, {B, T, 2, 3}, -1, 1), d_o = random_tensor<S>(rng, {B, T, 2, 3}, -1, 1);
    const Tensor<S> g = random_tensor<S>(rng, {B, T, 2}, -0.3, 0), eta = random_tensor<S>(rng, {B, T, 2}, 0, 1);
    const Inputs<S> in{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};

    // The state after one pass over the same tokens is the initial state of the checked call.
    auto typed = layer.template initial_state<S>(B);
    (void)layer.forward(in, typed);
    auto any_state = erased_layer.initial_state(B, std::is_same_v<S, double>);
    (void)erased_layer.forward(in, *any_state);

    const LayerGradients<S> direct = layer_backward(layer, in, &typed, d_o.view(), nullptr, 2);
    const LayerGradients<S> through = erased_layer.backward(in, any_state.get(), d_o.view(), 2);
    for (const auto& [name, expected, actual] :
         {std::tuple{"initial_state", &direct.initial_state, &through.initial_state},
          std::tuple{"q", &direct.q, &through.q}, std::tuple{"k", &direct.k, &through.k},
          std::tuple{"v", &direct.v, &through.v}, std::tuple{"g", &direct.gates.at("g"), &through.gates.at("g")},
          std::tuple{"eta", &direct.gates.at("eta"), &through.gates.at("eta")},
          std::tuple{"output", &direct.output, &through.output}}) {
        ASSERT_EQ(expected->shape(), actual->shape()) << name;
        for (Index i = 0; i < expected->size(); ++i) EXPECT_EQ(expected->data()[i], actual->data()[i]) << name << " " << i;
    }
    double state_norm = 0;
    for (Index i = 0; i < direct.initial_state.size(); ++i) state_norm += std::abs(double(direct.initial_state.data()[i]));
    EXPECT_GT(state_norm, 0) << "the initial state must receive a gradient";
}

TEST(AnyLayerBackward, MatchesLayerBackwardInDouble) { expect_erased_backward_matches<double>(); }
TEST(AnyLayerBackward, MatchesLayerBackwardInFloat) { expect_erased_backward_matches<float>(); }

TEST(AnyLayerBackward, ForeignStateIsRejected) {
    const ErasedLayer<presets::GatedDeltaNet> erased_layer(presets::gated_deltanet(options(1, 2, 2)));
    const auto float_state = erased_layer.initial_state(1, false);
    const Tensor<double> x({1, 1, 1, 2}, 0.5), gate({1, 1, 1}, 0.0);
    const Inputs<double> in{x.view(), x.view(), x.view(), {{"g", gate.view()}, {"eta", gate.view()}}};
    EXPECT_THROW(erased_layer.backward(in, float_state.get(), x.view(), 4), InputError);
}

using SpecNetwork = MqarNetwork<SpecMixer<double>, double>;

SpecNetwork small_network(Index conv_first_kernel) {
    const auto layer = erased(presets::gated_deltanet(options(2, 3, 3)));
    return SpecNetwork(
        20, 6, 2, [&](std::mt19937_64& rng) { return SpecMixer<double>(layer, 6, 3, rng); }, 9, conv_first_kernel);
}

class SpecNetworkGradients : public ::testing::TestWithParam<Index> {};

TEST_P(SpecNetworkGradients, MatchCentralDifferences) {
    tasks::MqarConfig task;
    task.vocab_size = 20;
    task.seq_len = 8;
    task.num_pairs = 2;
    const tasks::MqarData data = tasks::make_mqar(task, 2, 3);
    SpecNetwork model = small_network(GetParam());
    std::mt19937_64 rng(4);
    test::draw_parameters(model, rng, 0.5);
    const auto loss = [&] { return model.evaluate(data, 2).loss; };
    test::expect_parameter_gradients_match(model, [&] { model.loss_and_gradients(data); }, loss);
}

INSTANTIATE_TEST_SUITE_P(ConvFirst, SpecNetworkGradients, ::testing::Values(Index{0}, Index{3}));

TEST(SpecNetwork, EvaluateMatchesMqarAccuracy) {
    tasks::MqarConfig task;
    task.vocab_size = 20;
    task.seq_len = 8;
    task.num_pairs = 2;
    const tasks::MqarData data = tasks::make_mqar(task, 7, 11);
    SpecNetwork model = small_network(3);
    std::mt19937_64 rng(2);
    for (Param<double>* p : model.params()) p->value = normal_matrix<double>(rng, p->value.rows(), p->value.cols(), 0.7);

    const M logits = model.logits(data);
    const double expected = tasks::mqar_accuracy<double>(TensorView<double>(logits.data(), {7, 8, 20}), data.labels);
    const SupervisedRows sup = supervised_rows(data.labels);
    const double expected_loss = softmax_cross_entropy(gather_rows(logits, sup.rows), sup.targets).loss;
    for (Index batch : {Index{1}, Index{3}, Index{7}, Index{10}}) {
        const MqarEvaluation result = model.evaluate(data, batch);
        EXPECT_NEAR(result.accuracy, expected, 1e-12) << "batch " << batch;
        EXPECT_NEAR(result.loss, expected_loss, 1e-10) << "batch " << batch;
    }
}

}  // namespace
