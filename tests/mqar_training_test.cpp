// The Miras mixer and the MQAR model: every parameter and input gradient against central finite
// differences in double, and a short training run on a small MQAR whose loss must fall.
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "miras/nn/mqar_model.hpp"
#include "gradient_check.hpp"

namespace {

using namespace miras;
using namespace miras::nn;
using M = Mat<double>;
using Gdn = presets::GatedDeltaNet;

Gdn gated_deltanet(Index heads, Index head) {
    LayerOptions o;
    o.heads = heads;
    o.key_dim = head;
    o.value_dim = head;
    return presets::gated_deltanet(o);
}

TEST(MirasMixer, GradientsMatchCentralDifferences) {
    std::mt19937_64 rng(5);
    MirasMixer<Gdn, double> mixer(gated_deltanet(2, 3), MixerDims{6, 2, 3, 3}, rng);
    test::expect_mixer_gradients_match(mixer, 6, rng);
}

TEST(MqarModel, GradientsMatchCentralDifferences) {
    tasks::MqarConfig task;
    task.vocab_size = 20;
    task.seq_len = 8;
    task.num_pairs = 2;
    const tasks::MqarData data = tasks::make_mqar(task, 2, 3);
    MqarModel<Gdn, double> model(20, 2, MixerDims{6, 2, 3, 3}, [] { return gated_deltanet(2, 3); }, 9);
    std::mt19937_64 rng(4);
    test::draw_parameters(model, rng, 0.5);
    const auto loss = [&] {
        const M logits = model.logits(data);
        const SupervisedRows sup = supervised_rows(data.labels);
        return softmax_cross_entropy(gather_rows(logits, sup.rows), sup.targets).loss;
    };
    test::expect_parameter_gradients_match(model, [&] { model.loss_and_gradients(data); }, loss);
}

TEST(MqarModel, TrainingLowersTheLoss) {
    MqarTraining run;
    run.task.vocab_size = 64;
    run.task.seq_len = 32;
    run.task.num_pairs = 2;
    run.task.random_filler = false;
    run.batch = 32;
    run.steps = 200;
    run.test_examples = 64;
    run.lr = 3e-3;
    MqarModel<Gdn, double> model(64, 2, MixerDims{32, 2, 16, 4}, [] { return gated_deltanet(2, 16); }, 1);
    const MqarTrainingLog log = train_mqar(model, run);

    double first = 0, last = 0;
    for (Index i = 0; i < 10; ++i) {
        first += log.losses[static_cast<std::size_t>(i)] / 10;
        last += log.losses[log.losses.size() - 1 - static_cast<std::size_t>(i)] / 10;
    }
    RecordProperty("first_loss", std::to_string(first));
    RecordProperty("last_loss", std::to_string(last));
    EXPECT_LT(last, 0.75 * first) << "mean loss of the first 10 steps " << first << ", of the last 10 " << last;
    EXPECT_GT(log.accuracy_after, log.accuracy_before + 0.2);
}

}  // namespace
