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

// Compares each entry of `param` with the central difference of `loss`.
void expect_matches_differences(M& param, const M& analytic, const std::function<double()>& loss, const std::string& name) {
    const double h = 1e-6;
    for (Index i = 0; i < param.size(); ++i) {
        const double saved = param.data()[i];
        param.data()[i] = saved + h;
        const double up = loss();
        param.data()[i] = saved - h;
        const double down = loss();
        param.data()[i] = saved;
        const double numeric = (up - down) / (2 * h);
        EXPECT_NEAR(analytic.data()[i], numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << name << " element " << i;
    }
}

TEST(MirasMixer, GradientsMatchCentralDifferences) {
    const MixerDims dims{6, 2, 3, 3};
    std::mt19937_64 rng(5);
    MirasMixer<Gdn, double> mixer(gated_deltanet(2, 3), dims, rng);
    mixer.checkpoint_every = 3;
    // Larger weights than the default initialisation, so that every path carries signal.
    for (Param<double>* p : mixer.params()) p->value = normal_matrix<double>(rng, p->value.rows(), p->value.cols(), 0.5);
    const Index B = 2, T = 4;
    M x = normal_matrix<double>(rng, B * T, 6, 1.0);
    const M r = normal_matrix<double>(rng, B * T, 6, 1.0);

    auto loss = [&] { return r.cwiseProduct(mixer.forward(x, B, T)).sum(); };
    loss();
    for (Param<double>* p : mixer.params()) p->zero_grad();
    const M dx = mixer.backward(r);
    std::vector<M> grads;
    for (Param<double>* p : mixer.params()) grads.push_back(p->grad);

    expect_matches_differences(x, dx, loss, "x");
    std::size_t i = 0;
    for (Param<double>* p : mixer.params()) {
        expect_matches_differences(p->value, grads[i], loss, "parameter " + std::to_string(i));
        ++i;
    }
}

TEST(MqarModel, GradientsMatchCentralDifferences) {
    tasks::MqarConfig task;
    task.vocab_size = 20;
    task.seq_len = 8;
    task.num_pairs = 2;
    const tasks::MqarData data = tasks::make_mqar(task, 2, 3);
    MqarModel<Gdn, double> model(20, 2, MixerDims{6, 2, 3, 3}, [] { return gated_deltanet(2, 3); }, 9);
    std::mt19937_64 rng(4);
    for (Param<double>* p : model.params()) p->value = normal_matrix<double>(rng, p->value.rows(), p->value.cols(), 0.5);

    for (Param<double>* p : model.params()) p->zero_grad();
    model.loss_and_gradients(data);
    std::vector<M> grads;
    for (Param<double>* p : model.params()) grads.push_back(p->grad);

    auto loss = [&] {
        const M logits = model.logits(data);
        const SupervisedRows sup = supervised_rows(data.labels);
        return softmax_cross_entropy(gather_rows(logits, sup.rows), sup.targets).loss;
    };
    std::size_t i = 0;
    for (Param<double>* p : model.params()) {
        expect_matches_differences(p->value, grads[i], loss, "parameter " + std::to_string(i));
        ++i;
    }
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
