// A small language model for MQAR: embedding, blocks h <- h + Mixer(RMSNorm(h)), a final RMSNorm
// and the head tied to the embedding, evaluated at the supervised positions only, trained with the
// cross-entropy, AdamW and a cosine schedule (the recipe of Zoology without its MLP state mixer).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "miras/nn/adamw.hpp"
#include "miras/nn/cosine_schedule.hpp"
#include "miras/nn/cross_entropy.hpp"
#include "miras/nn/embedding.hpp"
#include "miras/nn/miras_mixer.hpp"
#include "miras/nn/rms_norm.hpp"
#include "miras/tasks/mqar.hpp"

namespace miras::nn {

template <class L, class S>
class MqarModel {
public:
    /// `make_layer()` returns the layer of each block.
    template <class MakeLayer>
    MqarModel(Index vocab, Index blocks, MixerDims dims, MakeLayer make_layer, std::uint64_t seed) : rng_(seed) {
        embedding = Embedding<S>(normal_matrix<S>(rng_, vocab, dims.model, 0.02));
        for (Index i = 0; i < blocks; ++i) {
            norms.emplace_back(dims.model);
            mixers.emplace_back(make_layer(), dims, rng_);
        }
        final_norm = RMSNorm<S>(dims.model);
    }

    std::vector<Param<S>*> params() {
        std::vector<Param<S>*> list{&embedding.table, &final_norm.gamma};
        for (auto& n : norms) list.push_back(&n.gamma);
        for (auto& m : mixers) {
            for (Param<S>* p : m.params()) list.push_back(p);
        }
        return list;
    }

    /// Returns the logits [B * L, V] of every position (for the accuracy).
    Mat<S> logits(const tasks::MqarData& data) {
        return embedding.head(final_norm.forward(hidden(data)));
    }

    /// Runs forward and backward on a batch and returns the mean cross-entropy over its
    /// supervised positions; the gradients are added into the parameters.
    double loss_and_gradients(const tasks::MqarData& data) {
        const Mat<S> h = hidden(data);
        const Mat<S> n = final_norm.forward(h);
        const SupervisedRows sup = supervised_rows(data.labels);
        const Mat<S> picked = gather_rows(n, sup.rows);
        const CrossEntropy<S> ce = softmax_cross_entropy(embedding.head(picked), sup.targets);

        Mat<S> dn = Mat<S>::Zero(n.rows(), n.cols());
        scatter_add_rows(dn, sup.rows, embedding.head_backward(picked, ce.dlogits));
        Mat<S> dh = final_norm.backward(h, dn);
        for (std::size_t i = mixers.size(); i-- > 0;) {
            // h_out = h_in + Mixer(RMSNorm(h_in)).
            const Mat<S> d_mixer_in = mixers[i].backward(dh);
            dh += norms[i].backward(block_inputs_[i], d_mixer_in);
        }
        embedding.backward(data.inputs, dh);
        return ce.loss;
    }

    Embedding<S> embedding;
    std::vector<RMSNorm<S>> norms;
    std::vector<MirasMixer<L, S>> mixers;
    RMSNorm<S> final_norm;

private:
    Mat<S> hidden(const tasks::MqarData& data) {
        Mat<S> h = embedding.forward(data.inputs);
        block_inputs_.clear();
        for (std::size_t i = 0; i < mixers.size(); ++i) {
            block_inputs_.push_back(h);
            h += mixers[i].forward(norms[i].forward(h), data.examples, data.seq_len);
        }
        return h;
    }

    std::mt19937_64 rng_;
    std::vector<Mat<S>> block_inputs_;
};

/// Settings of one MQAR training run.
struct MqarTraining {
    tasks::MqarConfig task;
    Index batch = 32;
    Index steps = 200;
    Index test_examples = 256;
    double lr = 3e-3;
    double weight_decay = 0.1;
    Index warmup = 10;
    std::uint64_t seed = 123;
};

/// Loss of each step, and the test accuracy before and after training.
struct MqarTrainingLog {
    std::vector<double> losses;
    double accuracy_before = 0;
    double accuracy_after = 0;
};

/// Trains `model` on fresh MQAR batches (train seeds) and measures the accuracy on a test set
/// drawn from the disjoint test seeds.
template <class L, class S>
MqarTrainingLog train_mqar(MqarModel<L, S>& model, const MqarTraining& run) {
    const tasks::MqarData test =
        tasks::make_mqar(run.task, run.test_examples, tasks::mqar_seed(tasks::MqarSplit::test, run.seed, 0));
    auto accuracy = [&] {
        const Mat<S> logits = model.logits(test);
        return tasks::mqar_accuracy<S>(TensorView<S>(logits.data(), {test.examples, test.seq_len, logits.cols()}),
                                       test.labels);
    };

    MqarTrainingLog log;
    log.accuracy_before = accuracy();
    AdamWConfig config;
    config.weight_decay = run.weight_decay;
    AdamW<S> optimiser(model.params(), config);
    const CosineSchedule schedule{run.lr, 0.0, run.warmup, run.steps};
    for (Index step = 0; step < run.steps; ++step) {
        const tasks::MqarData batch =
            tasks::make_mqar(run.task, run.batch, tasks::mqar_seed(tasks::MqarSplit::train, run.seed, step));
        optimiser.zero_grad();
        log.losses.push_back(model.loss_and_gradients(batch));
        optimiser.step(schedule.at(step));
    }
    log.accuracy_after = accuracy();
    return log;
}

}  // namespace miras::nn
