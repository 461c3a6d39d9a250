// `miras train SPEC --task mqar`: trains the MQAR network around the layer of a spec file, once per
// learning rate, and writes the results folder (docs/training.md). Exits 1 when --expect-accuracy
// is given and the best accuracy falls short, 2 on bad usage or input.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "commands.hpp"
#include "common/spec_file.hpp"
#include "miras/spec/spec.hpp"
#include "train/mqar_run.hpp"

namespace miras::cli {

namespace {

using train::MqarSettings;

struct TrainArguments {
    std::string spec;
    std::string task;
    bool zoology = false;
    std::string precision;
    std::string out;
    Index heads = 0;
    Index head_dim = 0;
    std::vector<std::string> gate_scales;
    double expect_accuracy = -1;
    bool progress = false;
    train::RunControl control;
    CLI::Option* batch_option = nullptr;
    std::vector<std::function<void(MqarSettings&)>> apply;
};

std::string shown(const std::vector<double>& values) {
    std::ostringstream out;
    for (std::size_t i = 0; i < values.size(); ++i) out << (i > 0 ? "," : "") << values[i];
    return out.str();
}
template <class T>
std::string shown(const T& value) {
    std::ostringstream out;
    out << std::boolalpha << value;
    return out.str();
}

/// Adds an option that sets one field of the settings when given, with the values of both groups
/// in its help text.
template <class T>
CLI::Option* add_setting(CLI::App* command, TrainArguments& arguments, const std::string& flags, T MqarSettings::*field,
                         const std::string& help) {
    static const MqarSettings small = train::settings_group("default");
    static const MqarSettings zoology = train::settings_group("zoology");
    auto value = std::make_shared<T>();
    CLI::Option* option =
        command->add_option(flags, *value, help + " [default: " + shown(small.*field) + "; --zoology: " + shown(zoology.*field) + "]");
    // A later copy of an option replaces an earlier one, so a script can append overrides.
    if constexpr (!std::is_same_v<T, std::vector<double>>) option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    arguments.apply.push_back([option, value, field](MqarSettings& settings) {
        if (option->count() > 0) settings.*field = *value;
    });
    return option;
}

std::string utc_stamp() {
    const std::time_t now = std::time(nullptr);
    std::tm parts{};
    gmtime_r(&now, &parts);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &parts);
    return buffer;
}

/// Parses the --gate-scale entries NAME=VALUE. Without an entry for eta, an mlp memory with a
/// per-token rate eta gets eta = 0.01 * sigmoid(.), the default maximum of titans-pytorch's
/// step-size helper, because at the sigmoid's initial 0.5 a deep memory's inner updates diverge.
std::map<std::string, double> gate_scales(const std::vector<std::string>& entries, const AnyLayer& layer) {
    std::map<std::string, double> scales;
    for (const std::string& entry : entries) {
        const std::size_t equals = entry.find('=');
        double value = 0;
        std::size_t used = 0;
        bool parsed = equals != std::string::npos && equals > 0;
        if (parsed) {
            try {
                value = std::stod(entry.substr(equals + 1), &used);
            } catch (const std::exception&) {
                parsed = false;
            }
            parsed = parsed && used == entry.size() - equals - 1;
        }
        if (!parsed) {
            throw ConfigError("--gate-scale = '" + entry + "' is invalid; valid is NAME=VALUE, such as eta=0.01");
        }
        scales[entry.substr(0, equals)] = value;
    }
    if (scales.count("eta") == 0 && layer.memory_name() == std::string("mlp")) {
        for (const GateSpec& gate : layer.gates()) {
            if (gate.name == "eta" && gate.config.per_token && gate.range == Range::nonnegative) scales["eta"] = 0.01;
        }
    }
    return scales;
}

void print_summary(const train::TrainReport& report, const std::string& name) {
    std::printf("miras train %s --task mqar\n\n", name.c_str());
    std::printf("%-12s %10s %10s %10s %8s %10s  %s\n", "lr", "best acc", "at step", "final acc", "steps", "seconds", "note");
    for (const auto& run : report.runs) {
        const double final_accuracy = run.evals.empty() ? 0.0 : run.evals.back().test_accuracy;
        std::string note = run.early_stopped ? "early stop" : "";
        if (run.diverged) note = "diverged: " + run.diverged_message;
        std::printf("%-12g %10.4f %10lld %10.4f %8lld %10.1f  %s\n", run.lr, run.best_accuracy(),
                    static_cast<long long>(run.best_step()), final_accuracy, static_cast<long long>(run.steps_done),
                    run.seconds, note.c_str());
    }
    const auto& best = report.runs.at(report.best());
    if (best.seconds > 0) {
        std::printf("\ntraining: %.0f tokens/s; of the step time %.1f%% in the layers (memory updates and reads), "
                    "%.1f%% in the mixers' projections, convolutions, gates and norms, %.1f%% in the rest\n",
                    best.train_tokens / best.seconds, 100 * best.layer_seconds / best.seconds,
                    100 * (best.mixer_seconds - best.layer_seconds) / best.seconds,
                    100 * (best.seconds - best.mixer_seconds) / best.seconds);
    }
    std::printf("\nbest: lr %g, test accuracy %.4f at step %lld\nresults: %s\n", best.lr, best.best_accuracy(),
                static_cast<long long>(best.best_step()), report.folder.string().c_str());
}

}  // namespace

Action add_train_command(CLI::App& app) {
    auto arguments = std::make_shared<TrainArguments>();
    TrainArguments& a = *arguments;
    CLI::App* command = app.add_subcommand(
        "train", "Train a small model around the layer of a spec on a synthetic task (MQAR) and report the test "
                 "accuracy per learning rate (docs/training.md)");
    command->add_option("spec", a.spec, "Spec file of the layer; it needs a reverse pass (docs/training.md)")
        ->required()
        ->check(CLI::ExistingFile);
    command->add_option("--task", a.task, "Task to train on")->required()->check(CLI::IsMember({"mqar"}));
    command->add_flag("--zoology", a.zoology,
                      "Start from Zoology's MQAR settings (V 8192, L 64, 4 pairs, 100000 train and 3000 test "
                      "sequences, batch 512, 64 epochs, four learning rates, cosine per epoch) instead of the small default");

    add_setting(command, a, "--vocab-size", &MqarSettings::vocab_size, "Vocabulary size V");
    add_setting(command, a, "--seq-len", &MqarSettings::seq_len, "Sequence length L (even)");
    add_setting(command, a, "--pairs", &MqarSettings::num_pairs, "Key-value pairs N per sequence");
    add_setting(command, a, "--random-filler", &MqarSettings::random_filler,
                "Fill the gaps with random tokens instead of 0 (true or false)");
    add_setting(command, a, "--train-examples", &MqarSettings::train_examples, "Training sequences (one epoch)");
    add_setting(command, a, "--test-examples", &MqarSettings::test_examples, "Test sequences of each evaluation");
    a.batch_option = add_setting(command, a, "--batch", &MqarSettings::batch,
                                 "Sequences per optimiser step and per evaluation batch (--zoology: 256 at L >= 256, "
                                 "128 at L >= 512)");
    add_setting(command, a, "--epochs", &MqarSettings::epochs, "Passes over the training sequences");
    add_setting(command, a, "--steps", &MqarSettings::steps, "Optimiser steps per learning rate; 0: epochs decide");
    add_setting(command, a, "--lr", &MqarSettings::learning_rates,
                "Peak learning rate; a comma-separated list runs a sweep and reports the best")
        ->delimiter(',');
    add_setting(command, a, "--weight-decay", &MqarSettings::weight_decay, "AdamW weight decay");
    add_setting(command, a, "--warmup", &MqarSettings::warmup, "Steps of linear warmup before the cosine decay");
    command
        ->add_option_function<std::string>(
            "--schedule",
            [&a](const std::string& unit) {
                a.apply.push_back([unit](MqarSettings& s) { s.schedule_per_epoch = unit == "epoch"; });
            },
            "Step the cosine schedule per step or per epoch [default: step; --zoology: epoch]")
        ->check(CLI::IsMember({"step", "epoch"}));
    add_setting(command, a, "--eval-every", &MqarSettings::eval_every, "Steps between evaluations; 0: once per epoch");
    add_setting(command, a, "--stop-accuracy", &MqarSettings::stop_accuracy,
                "Stop a learning rate at the first evaluation with test accuracy >= this (above 1: never)");
    add_setting(command, a, "--d-model", &MqarSettings::model_dim, "Model width d");
    add_setting(command, a, "--layers", &MqarSettings::layers, "Blocks, the short-convolution block included");
    command->add_flag_function(
        "--conv-first",
        [&a](std::int64_t) { a.apply.push_back([](MqarSettings& s) { s.conv_first = true; }); },
        "Make the first block a causal depthwise short convolution (Zoology's hybrid models)");
    add_setting(command, a, "--conv-first-kernel", &MqarSettings::conv_first_kernel, "Taps of the --conv-first convolution");
    add_setting(command, a, "--conv-kernel", &MqarSettings::conv_kernel, "Taps of the short convolutions on q, k and v");
    add_setting(command, a, "--backward-checkpoint", &MqarSettings::backward_checkpoint,
                "Tokens between the states the reverse pass saves (memory against recomputation; same results)");
    add_setting(command, a, "--seed", &MqarSettings::seed, "Seed of the data, the initial weights and the shuffling");
    command->add_option("--precision", a.precision, "Scalar type of the parameters and the layer [default: float32]")
        ->check(CLI::IsMember({"float32", "float64", "float", "double"}));
    command->add_option("--heads", a.heads, "Rebuild the spec with this many heads [default: the spec's own]");
    command->add_option("--head-dim", a.head_dim,
                        "Rebuild the spec with this key and value dimension [default: the spec's own]");
    command->add_option("--gate-scale", a.gate_scales,
                        "NAME=VALUE: multiply the squashed per-token gate NAME by VALUE, as the maximum inner learning "
                        "rate of titans-pytorch; repeatable [default: eta=0.01 for an mlp memory with a per-token "
                        "rate eta, none otherwise]")
        ->delimiter(',');

    command->add_option("--out", a.out,
                        "Results folder [default: results/train-NAME-YYYYmmdd-HHMMSS-seedN]; one that holds a run is "
                        "rejected unless --resume or --force");
    CLI::Option* resume = command->add_flag("--resume", a.control.resume,
                                            "Continue the run in --out from its checkpoints; the options must equal the run's");
    command->add_flag("--force", a.control.force, "Replace the run in --out")->excludes(resume);
    command->add_option("--checkpoint-every", a.control.checkpoint_every,
                        "Steps between checkpoints [default: 0, at every evaluation]");
    command->add_option("--stop-after", a.control.stop_after,
                        "Save a checkpoint and exit after this many steps of this call (0: run to the end); "
                        "--resume continues");
    command->add_option("--threads", a.control.threads,
                        "Threads over parts of each batch in the layer's passes; the results do not depend on it "
                        "[default: 1]");
    command->add_flag("--progress", a.progress, "Print a progress line per evaluation on stderr even when it is not a terminal");
    command->add_flag("--no-plots", [&a](std::int64_t) { a.control.plots = false; }, "Do not run gnuplot");
    command->add_option("--expect-accuracy", a.expect_accuracy,
                        "Exit with status 1 unless the best test accuracy reaches this value");

    return [arguments]() {
        TrainArguments& a = *arguments;
        MqarSettings settings = train::settings_group(a.zoology ? "zoology" : "default");
        for (const auto& apply : a.apply) apply(settings);
        if (!a.precision.empty()) settings.use_double = a.precision == "float64" || a.precision == "double";
        // Zoology's batch size falls with the sequence length.
        if (a.zoology && a.batch_option->count() == 0 && settings.seq_len >= 256) {
            settings.batch = settings.seq_len >= 512 ? 128 : 256;
        }

        LayerSpec spec;
        try {
            spec = load_spec_file(a.spec);
        } catch (const SpecError& e) {
            std::cerr << "error: " << a.spec << ": " << e.what() << "\n";
            return exit_bad_input;
        }
        if (a.heads != 0 || a.head_dim != 0) {
            if (a.heads < 0 || a.head_dim < 0) {
                throw ConfigError("--heads = " + std::to_string(a.heads) + ", --head-dim = " + std::to_string(a.head_dim) +
                                  " are invalid; valid are positive sizes");
            }
            // The file as written: the filled-in spec.json does not parse again.
            nlohmann::json written = written_spec(a.spec);
            if (a.heads > 0) written["dims"]["heads"] = a.heads;
            if (a.head_dim > 0) {
                written["dims"]["key"] = a.head_dim;
                written["dims"]["value"] = a.head_dim;
            }
            spec = parse_spec(written, a.spec);
        }
        std::shared_ptr<const AnyLayer> layer = build_layer(spec);
        settings.gate_scales = gate_scales(a.gate_scales, *layer);
        if (layer->backward_route() == "tape") {
            std::cerr << "note: " << spec.name << " (" << layer->memory_name() << "/" << layer->bias_name() << "/"
                      << layer->retention_name() << "/" << layer->algorithm_name()
                      << ") trains through the tape reverse pass, about ten times slower than the hand-written "
                         "pass of the linear families\n";
        }

        train::RunControl control = a.control;
        control.out = a.out.empty() ? "results/train-" + spec.name + "-" + utc_stamp() + "-seed" + std::to_string(settings.seed)
                                    : a.out;
        const bool terminal = isatty(STDERR_FILENO) != 0;
        control.progress = a.progress || terminal;
        control.live_progress = terminal;
        const train::TrainReport report = train::train_mqar(layer, spec.json, settings, control, std::cerr);
        if (!report.complete) {
            std::cerr << "stopped after " << control.stop_after << " steps (--stop-after); continue with --resume --out "
                      << control.out.string() << "\n";
            return exit_ok;
        }
        print_summary(report, spec.name);
        if (a.expect_accuracy >= 0 && report.runs.at(report.best()).best_accuracy() < a.expect_accuracy) {
            std::cerr << "check failed: best test accuracy " << report.runs.at(report.best()).best_accuracy() << " < "
                      << a.expect_accuracy << " (--expect-accuracy)\n";
            return exit_check_failed;
        }
        return exit_ok;
    };
}

}  // namespace miras::cli
