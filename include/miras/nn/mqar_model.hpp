// A small language model for MQAR: embedding, blocks h <- h + Mixer(RMSNorm(h)), a final RMSNorm
// and the head tied to the embedding, evaluated at the supervised positions only, trained with the
// cross-entropy, AdamW and a cosine schedule (the recipe of Zoology without its MLP state mixer).
// The mixer is a template parameter: MirasMixer over a concrete layer type, or SpecMixer over a
// layer built from a JSON spec.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "miras/nn/adamw.hpp"
#include "miras/nn/cosine_schedule.hpp"
#include "miras/nn/cross_entropy.hpp"
#include "miras/nn/embedding.hpp"
#include "miras/nn/miras_mixer.hpp"
#include "miras/nn/spec_mixer.hpp"
#include "miras/nn/rms_norm.hpp"
#include "miras/tasks/mqar.hpp"

namespace miras::nn {

/// Test loss and accuracy of a model on a data set.
struct MqarEvaluation {
    double loss = 0;      ///< Mean cross-entropy over the supervised positions.
    double accuracy = 0;  ///< Zoology's accuracy (tasks::mqar_accuracy).
};

/// Embedding, optionally a first block whose mixer is a short convolution, blocks
/// h <- h + Mixer(RMSNorm(h)), a final RMSNorm and the tied head.
/// \tparam Mixer a module with params(), forward(x, batch, tokens) and backward(dy), such as
///               MirasMixer or SpecMixer.
/// \tparam S     float or double.
template <class Mixer, class S>
class MqarNetwork {
public:
    using scalar_type = S;

    /// `make_mixer(rng)` returns the mixer of each block. With `conv_first_kernel` > 0 a
    /// ShortConvMixer of that kernel comes before the `blocks` mixer blocks.
    template <class MakeMixer>
    MqarNetwork(Index vocab, Index model_dim, Index blocks, MakeMixer make_mixer, std::uint64_t seed,
                Index conv_first_kernel = 0)
        : rng_(seed) {
        embedding = Embedding<S>(normal_matrix<S>(rng_, vocab, model_dim, 0.02));
        if (conv_first_kernel > 0) {
            conv_norm = RMSNorm<S>(model_dim);
            conv_first.emplace(model_dim, conv_first_kernel, rng_);
        }
        for (Index i = 0; i < blocks; ++i) {
            norms.emplace_back(model_dim);
            mixers.push_back(make_mixer(rng_));
        }
        final_norm = RMSNorm<S>(model_dim);
    }

    std::vector<Param<S>*> params() {
        std::vector<Param<S>*> list{&embedding.table, &final_norm.gamma};
        if (conv_first) {
            list.push_back(&conv_norm.gamma);
            for (Param<S>* p : conv_first->params()) list.push_back(p);
        }
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

    /// Returns the loss and Zoology's accuracy on `data`, evaluating `batch` sequences at a time and
    /// the head at the supervised positions only. Ties go to the first maximum, as mqar_accuracy.
    MqarEvaluation evaluate(const tasks::MqarData& data, Index batch) {
        if (batch < 1) throw ConfigError("evaluate: batch = " + std::to_string(batch) + " must be at least 1");
        const Index L = data.seq_len;
        double loss_sum = 0, accuracy_sum = 0;
        Index supervised_total = 0;
        for (Index first = 0; first < data.examples; first += batch) {
            const Index count = std::min(batch, data.examples - first);
            const tasks::MqarData part = slice(data, first, count);
            const Mat<S> n = final_norm.forward(hidden(part));
            const SupervisedRows sup = supervised_rows(part.labels);
            if (sup.rows.empty()) continue;
            const Mat<S> logits = embedding.head(gather_rows(n, sup.rows));
            const CrossEntropy<S> ce = softmax_cross_entropy(logits, sup.targets);
            loss_sum += ce.loss * static_cast<double>(sup.rows.size());
            supervised_total += static_cast<Index>(sup.rows.size());

            std::vector<Index> correct(static_cast<std::size_t>(count), 0), total(static_cast<std::size_t>(count), 0);
            for (std::size_t r = 0; r < sup.rows.size(); ++r) {
                Index best = 0;
                logits.row(static_cast<Index>(r)).maxCoeff(&best);
                const std::size_t sequence = static_cast<std::size_t>(sup.rows[r] / L);
                ++total[sequence];
                if (best == sup.targets[r]) ++correct[sequence];
            }
            for (std::size_t b = 0; b < total.size(); ++b) {
                if (total[b] == 0) {
                    throw InputError("evaluate: sequence " + std::to_string(first + static_cast<Index>(b)) +
                                     " has no supervised position");
                }
                accuracy_sum += static_cast<double>(correct[b]) / static_cast<double>(total[b]);
            }
        }
        if (supervised_total == 0) throw InputError("evaluate: the data have no supervised position");
        return {loss_sum / static_cast<double>(supervised_total), accuracy_sum / static_cast<double>(data.examples)};
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
        if (conv_first) dh += conv_norm.backward(conv_input_, conv_first->backward(dh));
        embedding.backward(data.inputs, dh);
        return ce.loss;
    }

    Embedding<S> embedding;
    RMSNorm<S> conv_norm;
    std::optional<ShortConvMixer<S>> conv_first;
    std::vector<RMSNorm<S>> norms;
    std::vector<Mixer> mixers;
    RMSNorm<S> final_norm;

private:
    static tasks::MqarData slice(const tasks::MqarData& data, Index first, Index count) {
        const auto begin = static_cast<std::ptrdiff_t>(first * data.seq_len);
        const auto end = static_cast<std::ptrdiff_t>((first + count) * data.seq_len);
        return {count, data.seq_len, std::vector<std::int32_t>(data.inputs.begin() + begin, data.inputs.begin() + end),
                std::vector<std::int32_t>(data.labels.begin() + begin, data.labels.begin() + end)};
    }

    Mat<S> hidden(const tasks::MqarData& data) {
        Mat<S> h = embedding.forward(data.inputs);
        if (conv_first) {
            conv_input_ = h;
            h += conv_first->forward(conv_norm.forward(h), data.examples, data.seq_len);
        }
        block_inputs_.clear();
        for (std::size_t i = 0; i < mixers.size(); ++i) {
            block_inputs_.push_back(h);
            h += mixers[i].forward(norms[i].forward(h), data.examples, data.seq_len);
        }
        return h;
    }

    std::mt19937_64 rng_;
    Mat<S> conv_input_;
    std::vector<Mat<S>> block_inputs_;
};

/// The MQAR model over MirasMixer blocks of a concrete layer type.
template <class L, class S>
class MqarModel : public MqarNetwork<MirasMixer<L, S>, S> {
public:
    /// `make_layer()` returns the layer of each block.
    template <class MakeLayer>
    MqarModel(Index vocab, Index blocks, MixerDims dims, MakeLayer make_layer, std::uint64_t seed)
        : MqarNetwork<MirasMixer<L, S>, S>(
              vocab, dims.model, blocks,
              [&](std::mt19937_64& rng) { return MirasMixer<L, S>(make_layer(), dims, rng); }, seed) {}
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
template <class Model>
MqarTrainingLog train_mqar(Model& model, const MqarTraining& run) {
    using S = typename Model::scalar_type;
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
