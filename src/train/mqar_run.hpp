// `miras train SPEC --task mqar`: trains the MQAR network around a layer built from a spec, once per
// learning rate, with evaluations on a held-out test set. A later call resumes the checkpoints
// exactly. The results folder gets CSV, JSON, a gnuplot script and a plot.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "miras/spec/any_layer.hpp"

namespace miras::train {

/// Everything that determines the numbers of a run. Two runs with equal settings and spec give the
/// same results bit for bit on the same build and machine.
struct MqarSettings {
    std::string group = "default";  ///< "default" or "zoology": where the unset values came from.

    // The task (tasks::MqarConfig).
    Index vocab_size = 256;
    Index seq_len = 64;
    Index num_pairs = 4;
    bool random_filler = false;
    double power_a = 0.01;

    // The data and the schedule.
    Index train_examples = 16384;
    Index test_examples = 512;
    Index batch = 64;
    Index epochs = 8;
    /// Optimiser steps per learning rate; 0 means epochs * ceil(train_examples / batch).
    Index steps = 0;
    std::vector<double> learning_rates{1e-2};
    double weight_decay = 0.1;
    Index warmup = 0;  ///< Steps of linear warmup (per-step schedule only).
    /// Cosine schedule stepped once per epoch (Zoology) instead of once per step.
    bool schedule_per_epoch = false;
    /// Steps between evaluations; 0 means once per epoch.
    Index eval_every = 0;
    /// Training stops at the first evaluation with test accuracy >= this value (above 1: never).
    double stop_accuracy = 0.99;

    // The model.
    Index model_dim = 64;
    Index layers = 2;
    bool conv_first = false;   ///< The first of `layers` blocks is a short convolution.
    Index conv_first_kernel = 3;
    Index conv_kernel = 4;     ///< Taps of the short convolutions on q, k and v.
    Index backward_checkpoint = 16;  ///< Tokens between the states the reverse pass saves.
    /// Scales of squashed gates by name (nn::SpecMixer), such as {"eta", 0.01} for the maximum inner
    /// learning rate of an MLP memory; a gate not named has scale 1.
    std::map<std::string, double> gate_scales;

    std::uint64_t seed = 123;
    bool use_double = false;

    /// Steps of one epoch, ceil(train_examples / batch).
    Index steps_per_epoch() const { return (train_examples + batch - 1) / batch; }
    /// Optimiser steps per learning rate.
    Index total_steps() const { return steps > 0 ? steps : epochs * steps_per_epoch(); }
    Index eval_interval() const { return eval_every > 0 ? eval_every : steps_per_epoch(); }

    /// Raises ConfigError naming the first invalid value, its option and what is valid.
    void check() const;
    nlohmann::json to_json() const;
};

/// The settings of a group ("default" or "zoology"); raises ConfigError for another name.
MqarSettings settings_group(const std::string& name);

/// Options of a run's folder and progress output. None of them changes the numbers.
struct RunControl {
    std::filesystem::path out;
    bool resume = false;
    bool force = false;
    /// Steps after which this call saves a checkpoint and returns (0: run to the end).
    Index stop_after = 0;
    /// Steps between checkpoints (0: at every evaluation). One is also written when a learning
    /// rate finishes or stop_after is reached.
    Index checkpoint_every = 0;
    bool progress = false;  ///< Progress lines on the progress stream.
    bool live_progress = false;  ///< One line rewritten in place (for a terminal).
    bool plots = true;
    /// Threads over parts of each batch in the layer's passes; the results do not depend on it.
    int threads = 1;
};

/// One evaluation on the test set.
struct EvalRow {
    Index step = 0;
    double epoch = 0;          ///< Steps done / steps per epoch.
    double learning_rate = 0;  ///< Rate of the last step before the evaluation.
    double train_loss = 0;     ///< Mean training loss of the steps since the previous evaluation.
    double test_loss = 0;
    double test_accuracy = 0;
};

/// The training of one learning rate.
struct LrRun {
    double lr = 0;
    std::vector<EvalRow> evals;
    Index steps_done = 0;
    bool finished = false;
    bool early_stopped = false;
    bool diverged = false;  ///< A loss or gradient stopped being finite.
    std::string diverged_message;
    double seconds = 0;     ///< Wall time of the training steps, summed over resumed calls.
    double train_tokens = 0;
    /// Of `seconds`: the time inside the layers' forward and reverse passes (the memory updates and
    /// reads), and inside the spec mixers as a whole (the layers, projections, convolutions, gates
    /// and norms). The rest is the embedding, the head, the loss and the optimiser.
    double layer_seconds = 0;
    double mixer_seconds = 0;

    double best_accuracy() const;
    Index best_step() const;
};

struct TrainReport {
    std::vector<LrRun> runs;
    bool complete = false;  ///< False when stop_after ended the call early.
    std::filesystem::path folder;
    /// Index into runs of the learning rate with the highest best accuracy (the first on ties).
    std::size_t best() const;
};

/// Trains the network around `layer` (built from the spec `spec_json`) on MQAR for every learning
/// rate of `settings`, writing checkpoints and, once every rate has finished, the results into
/// control.out. Raises InputError or ConfigError for bad settings, a layer without a reverse pass,
/// an output folder that contains a run (unless resume or force) and a checkpoint that does not
/// match the settings.
TrainReport train_mqar(const std::shared_ptr<const AnyLayer>& layer, const nlohmann::json& spec_json,
                       const MqarSettings& settings, const RunControl& control, std::ostream& progress);

}  // namespace miras::train
