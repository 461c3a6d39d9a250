// The training loop behind `miras train --task mqar`: one network per learning rate, trained on a
// fixed training set shuffled every epoch, evaluated on the test set, checkpointed, and resumed
// from the checkpoint with the same numbers as an uninterrupted run.
#include "mqar_run.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <ostream>
#include <random>
#include <sstream>

#include "checkpoint.hpp"
#include "common/atomic_file.hpp"
#include "miras/nn/adamw.hpp"
#include "miras/nn/cosine_schedule.hpp"
#include "miras/nn/mqar_model.hpp"
#include "train_output.hpp"

namespace miras::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string number(double x) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", x);
    return buffer;
}

void require(bool ok, const std::string& option, const std::string& value, const std::string& valid) {
    if (!ok) throw ConfigError(option + " = " + value + " is invalid; valid is " + valid);
}

}  // namespace

void MqarSettings::check() const {
    require(group == "default" || group == "zoology", "settings group", group, "default or zoology");
    require(vocab_size >= 4, "--vocab-size", std::to_string(vocab_size), "4 or more");
    require(seq_len >= 2 && seq_len % 2 == 0, "--seq-len", std::to_string(seq_len), "an even number >= 2");
    require(num_pairs >= 1, "--pairs", std::to_string(num_pairs), "1 or more");
    require(train_examples >= 1, "--train-examples", std::to_string(train_examples), "1 or more");
    require(test_examples >= 1, "--test-examples", std::to_string(test_examples), "1 or more");
    require(batch >= 1, "--batch", std::to_string(batch), "1 or more");
    require(epochs >= 1, "--epochs", std::to_string(epochs), "1 or more");
    require(steps >= 0, "--steps", std::to_string(steps), "0 (epochs decide) or more");
    require(!learning_rates.empty(), "--lr", "(empty)", "one or more rates > 0");
    for (double lr : learning_rates) require(lr > 0 && std::isfinite(lr), "--lr", number(lr), "a finite rate > 0");
    require(weight_decay >= 0 && std::isfinite(weight_decay), "--weight-decay", number(weight_decay), "a finite value >= 0");
    require(warmup >= 0 && warmup < total_steps(), "--warmup", std::to_string(warmup),
            "0 up to the step count minus one (" + std::to_string(total_steps() - 1) + ")");
    require(!(schedule_per_epoch && warmup > 0), "--warmup", std::to_string(warmup), "0 with --schedule epoch");
    require(eval_every >= 0, "--eval-every", std::to_string(eval_every), "0 (once per epoch) or more");
    require(stop_accuracy >= 0 && !std::isnan(stop_accuracy), "--stop-accuracy", number(stop_accuracy),
            "a value >= 0 (above 1 never stops early)");
    require(model_dim >= 1, "--d-model", std::to_string(model_dim), "1 or more");
    require(layers >= 1, "--layers", std::to_string(layers), "1 or more");
    require(!conv_first || layers >= 2, "--layers", std::to_string(layers), "2 or more with --conv-first");
    require(conv_first_kernel >= 1, "--conv-first-kernel", std::to_string(conv_first_kernel), "1 or more");
    require(conv_kernel >= 1, "--conv-kernel", std::to_string(conv_kernel), "1 or more");
    require(backward_checkpoint >= 1, "--backward-checkpoint", std::to_string(backward_checkpoint), "1 or more");
    for (const auto& [name, scale] : gate_scales) {
        require(std::isfinite(scale) && scale > 0, "--gate-scale", name + "=" + number(scale), "a finite scale > 0");
    }
    tasks::MqarConfig task{vocab_size, seq_len, num_pairs, power_a, random_filler, 1};
    tasks::check_mqar_config(task);
}

json MqarSettings::to_json() const {
    return {{"group", group},
            {"vocab_size", vocab_size},
            {"seq_len", seq_len},
            {"num_pairs", num_pairs},
            {"random_filler", random_filler},
            {"power_a", power_a},
            {"train_examples", train_examples},
            {"test_examples", test_examples},
            {"batch", batch},
            {"epochs", epochs},
            {"steps", total_steps()},
            {"steps_per_epoch", steps_per_epoch()},
            {"learning_rates", learning_rates},
            {"weight_decay", weight_decay},
            {"warmup", warmup},
            {"schedule", schedule_per_epoch ? "epoch" : "step"},
            {"eval_every", eval_interval()},
            {"stop_accuracy", stop_accuracy},
            {"d_model", model_dim},
            {"layers", layers},
            {"conv_first", conv_first},
            {"conv_first_kernel", conv_first_kernel},
            {"conv_kernel", conv_kernel},
            {"backward_checkpoint", backward_checkpoint},
            {"gate_scales", gate_scales},
            {"seed", seed},
            {"precision", use_double ? "float64" : "float32"}};
}

MqarSettings settings_group(const std::string& name) {
    MqarSettings s;
    if (name == "default") return s;
    if (name != "zoology") throw ConfigError("settings group '" + name + "' is unknown; valid are default and zoology");
    // Zoology's MQAR sweep (Arora et al. 2023, Figure 2) at (L, N) = (64, 4).
    s.group = "zoology";
    s.vocab_size = 8192;
    s.seq_len = 64;
    s.num_pairs = 4;
    s.random_filler = false;
    s.train_examples = 100000;
    s.test_examples = 3000;
    s.batch = 512;
    s.epochs = 64;
    s.learning_rates = {1e-4, 4.641588833612779e-4, 2.1544346900318843e-3, 1e-2};
    s.schedule_per_epoch = true;
    return s;
}

double LrRun::best_accuracy() const {
    double best = 0;
    for (const auto& row : evals) best = std::max(best, row.test_accuracy);
    return best;
}

Index LrRun::best_step() const {
    Index step = 0;
    double best = -1;
    for (const auto& row : evals) {
        if (row.test_accuracy > best) {
            best = row.test_accuracy;
            step = row.step;
        }
    }
    return step;
}

std::size_t TrainReport::best() const {
    std::size_t best = 0;
    for (std::size_t i = 1; i < runs.size(); ++i) {
        if (runs[i].best_accuracy() > runs[best].best_accuracy()) best = i;
    }
    return best;
}

namespace {

json eval_json(const EvalRow& row) {
    return {{"step", row.step},           {"epoch", row.epoch},         {"learning_rate", row.learning_rate},
            {"train_loss", row.train_loss}, {"test_loss", row.test_loss}, {"test_accuracy", row.test_accuracy}};
}

EvalRow eval_from_json(const json& j) {
    return {j.at("step").get<Index>(),       j.at("epoch").get<double>(),     j.at("learning_rate").get<double>(),
            j.at("train_loss").get<double>(), j.at("test_loss").get<double>(), j.at("test_accuracy").get<double>()};
}

/// Uniform integer in [0, n) by rejection, the same on every standard library.
Index uniform_below(std::mt19937_64& engine, Index n) {
    const std::uint64_t range = static_cast<std::uint64_t>(n);
    const std::uint64_t limit =
        std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % range;
    std::uint64_t x = engine();
    while (x >= limit) x = engine();
    return static_cast<Index>(x % range);
}

/// Draws a Fisher-Yates permutation of 0..n-1 from `engine`.
std::vector<Index> shuffled(std::mt19937_64& engine, Index n) {
    std::vector<Index> order(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    for (Index i = n - 1; i > 0; --i) std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(uniform_below(engine, i + 1))]);
    return order;
}

std::string engine_text(const std::mt19937_64& engine) {
    std::ostringstream out;
    out << engine;
    return out.str();
}

std::mt19937_64 engine_from_text(const std::string& text) {
    std::mt19937_64 engine;
    std::istringstream in(text);
    in >> engine;
    if (!in) throw InputError("checkpoint: the random state does not parse");
    return engine;
}

tasks::MqarData gather_examples(const tasks::MqarData& all, const std::vector<Index>& order, Index first, Index count) {
    const Index L = all.seq_len;
    tasks::MqarData part{count, L, std::vector<std::int32_t>(static_cast<std::size_t>(count * L)),
                         std::vector<std::int32_t>(static_cast<std::size_t>(count * L))};
    for (Index i = 0; i < count; ++i) {
        const Index source = order[static_cast<std::size_t>(first + i)];
        std::copy_n(all.inputs.begin() + source * L, L, part.inputs.begin() + i * L);
        std::copy_n(all.labels.begin() + source * L, L, part.labels.begin() + i * L);
    }
    return part;
}

/// Progress on the progress stream: a line per evaluation, or one line rewritten in place.
class Progress {
public:
    Progress(std::ostream& out, const RunControl& control) : out_(out), enabled_(control.progress), live_(control.live_progress) {}

    void step(double lr, Index step, Index total, double loss, double accuracy, double tokens_per_second) {
        if (!enabled_ || !live_) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::milliseconds(250) && step != total) return;
        last_ = now;
        out_ << "\r" << line(lr, step, total, loss, accuracy, tokens_per_second) << "   " << std::flush;
    }

    void evaluation(double lr, Index step, Index total, double loss, double accuracy, double tokens_per_second) {
        if (!enabled_) return;
        out_ << (live_ ? "\r" : "") << line(lr, step, total, loss, accuracy, tokens_per_second) << "\n" << std::flush;
    }

    void note(const std::string& text) {
        if (enabled_) out_ << (live_ ? "\r" : "") << text << "\n" << std::flush;
    }

private:
    static std::string line(double lr, Index step, Index total, double loss, double accuracy, double tokens_per_second) {
        char buffer[160];
        std::snprintf(buffer, sizeof buffer, "lr %-9g step %6lld/%-6lld loss %8.4f  test accuracy %6.4f  %9.0f tokens/s", lr,
                      static_cast<long long>(step), static_cast<long long>(total), loss, accuracy, tokens_per_second);
        return buffer;
    }

    std::ostream& out_;
    bool enabled_, live_;
    std::chrono::steady_clock::time_point last_{};
};

/// Everything one learning rate's training shares with the others.
struct Shared {
    std::shared_ptr<const AnyLayer> layer;
    const MqarSettings& settings;
    const RunControl& control;
    json settings_json;
    tasks::MqarData train;
    tasks::MqarData test;
    Progress& progress;
    Index steps_left;  ///< Steps this call may still run (stop_after), or -1 for no limit.
};

fs::path checkpoint_path(const fs::path& out, std::size_t lr_index) {
    return out / "checkpoints" / ("lr-" + std::to_string(lr_index) + ".ckpt");
}

template <class S>
LrRun train_one(Shared& shared, std::size_t lr_index) {
    const MqarSettings& s = shared.settings;
    const double peak = s.learning_rates[lr_index];
    using Network = nn::MqarNetwork<nn::SpecMixer<S>, S>;
    const auto make_mixer = [&](std::mt19937_64& rng) {
        nn::SpecMixer<S> mixer(shared.layer, s.model_dim, s.conv_kernel, rng, s.gate_scales);
        mixer.checkpoint_every = s.backward_checkpoint;
        mixer.threads = shared.control.threads;
        return mixer;
    };
    Network model(s.vocab_size, s.model_dim, s.conv_first ? s.layers - 1 : s.layers, make_mixer, s.seed,
                  s.conv_first ? s.conv_first_kernel : 0);
    nn::AdamWConfig adam;
    adam.weight_decay = s.weight_decay;
    nn::AdamW<S> optimiser(model.params(), adam);

    const Index total = s.total_steps(), per_epoch = s.steps_per_epoch();
    const nn::CosineSchedule schedule = s.schedule_per_epoch
                                            ? nn::CosineSchedule{peak, 0.0, 0, (total + per_epoch - 1) / per_epoch}
                                            : nn::CosineSchedule{peak, 0.0, s.warmup, total};
    const auto rate_at = [&](Index step) { return schedule.at(s.schedule_per_epoch ? step / per_epoch : step); };

    // The state of the loop; a checkpoint stores all of it.
    LrRun run;
    run.lr = peak;
    Index position = 0;  // next example of the epoch's order
    std::mt19937_64 shuffle_engine(s.seed ^ 0x5bd1e995ull);
    std::mt19937_64 epoch_start_engine = shuffle_engine;
    double loss_sum = 0;
    Index loss_count = 0;

    const fs::path path = checkpoint_path(shared.control.out, lr_index);
    if (shared.control.resume && fs::exists(path)) {
        std::vector<std::pair<Index, Index>> shapes;
        for (nn::Param<S>* p : model.params()) shapes.emplace_back(p->value.rows(), p->value.cols());
        CheckpointArrays<S> arrays;
        const json meta = read_checkpoint<S>(path, shapes, arrays);
        if (meta.at("settings") != shared.settings_json || meta.at("lr").get<double>() != peak) {
            throw InputError("checkpoint '" + path.string() + "' belongs to other settings than run.json; delete it or "
                             "give --force to start over");
        }
        std::size_t i = 0;
        for (nn::Param<S>* p : model.params()) p->value = arrays.params[i++];
        optimiser.restore(meta.at("adam_steps").get<Index>(), std::move(arrays.first_moments), std::move(arrays.second_moments));
        run.steps_done = meta.at("step").get<Index>();
        run.finished = meta.at("finished").get<bool>();
        run.early_stopped = meta.at("early_stopped").get<bool>();
        run.diverged = meta.at("diverged").get<bool>();
        run.diverged_message = meta.at("diverged_message").get<std::string>();
        run.seconds = meta.at("seconds").get<double>();
        run.train_tokens = meta.at("train_tokens").get<double>();
        run.layer_seconds = meta.value("layer_seconds", 0.0);
        run.mixer_seconds = meta.value("mixer_seconds", 0.0);
        for (const auto& row : meta.at("evals")) run.evals.push_back(eval_from_json(row));
        position = meta.at("position").get<Index>();
        epoch_start_engine = engine_from_text(meta.at("epoch_start_random_state").get<std::string>());
        loss_sum = meta.at("loss_sum").get<double>();
        loss_count = meta.at("loss_count").get<Index>();
        shared.progress.note("resumed lr " + number(peak) + " at step " + std::to_string(run.steps_done));
    }

    const auto save = [&] {
        CheckpointArrays<S> arrays;
        for (nn::Param<S>* p : model.params()) arrays.params.push_back(p->value);
        arrays.first_moments = optimiser.first_moments();
        arrays.second_moments = optimiser.second_moments();
        json meta{{"settings", shared.settings_json},
                  {"lr", peak},
                  {"lr_index", lr_index},
                  {"step", run.steps_done},
                  {"adam_steps", optimiser.steps()},
                  {"finished", run.finished},
                  {"early_stopped", run.early_stopped},
                  {"diverged", run.diverged},
                  {"diverged_message", run.diverged_message},
                  {"seconds", run.seconds},
                  {"train_tokens", run.train_tokens},
                  {"layer_seconds", run.layer_seconds},
                  {"mixer_seconds", run.mixer_seconds},
                  {"position", position},
                  {"epoch_start_random_state", engine_text(epoch_start_engine)},
                  {"loss_sum", loss_sum},
                  {"loss_count", loss_count},
                  {"evals", json::array()}};
        for (const auto& row : run.evals) meta["evals"].push_back(eval_json(row));
        write_checkpoint<S>(path, meta, arrays);
    };

    if (run.finished) return run;

    // The order of the current epoch comes from the engine state at the epoch's start.
    shuffle_engine = epoch_start_engine;
    std::vector<Index> order = shuffled(shuffle_engine, s.train_examples);

    const Index checkpoint_interval = shared.control.checkpoint_every > 0 ? shared.control.checkpoint_every : s.eval_interval();
    double shown_accuracy = run.evals.empty() ? 0.0 : run.evals.back().test_accuracy;
    const auto parameters_finite = [&] {
        for (nn::Param<S>* p : model.params()) {
            if (!p->value.allFinite()) return false;
        }
        return true;
    };
    // A diverged run ends this learning rate, not the sweep. Divergence shows as a non-finite loss,
    // as a layer state that stops being finite (NumericalError), or as a non-finite gate that the
    // layer rejects as input; other errors propagate.
    const auto stop_diverged = [&](const std::string& what) {
        run.diverged = true;
        run.diverged_message = "step " + std::to_string(run.steps_done) + ": " + what;
        run.finished = true;
        shared.progress.note("lr " + number(peak) + " diverged at " + run.diverged_message);
        save();
    };
    while (run.steps_done < total) {
        if (shared.steps_left == 0) {
            save();
            return run;
        }
        const auto started = std::chrono::steady_clock::now();
        const Index count = std::min(s.batch, s.train_examples - position);
        const tasks::MqarData batch = gather_examples(shared.train, order, position, count);
        const double lr = rate_at(run.steps_done);
        optimiser.zero_grad();
        for (auto& mixer : model.mixers) mixer.timing = {};
        double loss = 0;
        try {
            loss = model.loss_and_gradients(batch);
        } catch (const NumericalError& e) {
            stop_diverged(e.what());
            return run;
        } catch (const Error& e) {
            if (parameters_finite()) throw;
            stop_diverged(e.what());
            return run;
        }
        if (!std::isfinite(loss)) {
            stop_diverged("the training loss is " + number(loss));
            return run;
        }
        optimiser.step(lr);
        loss_sum += loss;
        ++loss_count;
        ++run.steps_done;
        if (shared.steps_left > 0) --shared.steps_left;
        position += count;
        if (position >= s.train_examples) {
            position = 0;
            epoch_start_engine = shuffle_engine;
            order = shuffled(shuffle_engine, s.train_examples);
        }
        run.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        run.train_tokens += static_cast<double>(count * s.seq_len);
        for (const auto& mixer : model.mixers) {
            run.layer_seconds += mixer.timing.layer;
            run.mixer_seconds += mixer.timing.mixer;
        }
        const double tokens_per_second = run.seconds > 0 ? run.train_tokens / run.seconds : 0.0;
        shared.progress.step(peak, run.steps_done, total, loss, shown_accuracy, tokens_per_second);

        const bool at_end = run.steps_done == total;
        if (run.steps_done % s.eval_interval() == 0 || at_end) {
            nn::MqarEvaluation result;
            try {
                result = model.evaluate(shared.test, s.batch);
            } catch (const NumericalError& e) {
                stop_diverged(e.what());
                return run;
            } catch (const Error& e) {
                if (parameters_finite()) throw;
                stop_diverged(e.what());
                return run;
            }
            EvalRow row{run.steps_done, static_cast<double>(run.steps_done) / static_cast<double>(per_epoch), lr,
                        loss_sum / static_cast<double>(loss_count), result.loss, result.accuracy};
            run.evals.push_back(row);
            loss_sum = 0;
            loss_count = 0;
            shown_accuracy = result.accuracy;
            shared.progress.evaluation(peak, run.steps_done, total, row.train_loss, row.test_accuracy, tokens_per_second);
            if (!std::isfinite(result.loss)) {
                stop_diverged("the test loss is " + number(result.loss));
                return run;
            }
            if (result.accuracy >= s.stop_accuracy) {
                run.early_stopped = true;
                run.finished = true;
                shared.progress.note("lr " + number(peak) + ": test accuracy " + number(result.accuracy) + " >= " +
                                     number(s.stop_accuracy) + " at step " + std::to_string(run.steps_done) + "; stopped");
            }
        }
        if (at_end) run.finished = true;
        if (run.finished || run.steps_done % checkpoint_interval == 0 || shared.steps_left == 0) save();
        if (run.finished) return run;
    }
    run.finished = true;
    save();
    return run;
}

/// Returns the files a run writes in its folder, which are exactly those --force removes.
const std::vector<std::string>& run_files() {
    static const std::vector<std::string> files{"run.json",     "results.json", "evals.csv",   "summary.csv",
                                                "accuracy.dat", "accuracy.gp",  "accuracy.svg", "accuracy.png"};
    return files;
}

bool contains_run(const fs::path& out) {
    if (fs::exists(out / "checkpoints")) return true;
    for (const auto& name : run_files()) {
        if (fs::exists(out / name)) return true;
    }
    return false;
}

/// Prepares the output folder: creates it, rejects one that contains a run unless resume or force,
/// and on resume checks that run.json records the same settings and spec.
void prepare_folder(const fs::path& out, const json& record, const RunControl& control) {
    if (fs::exists(out) && !fs::is_directory(out)) {
        throw InputError("--out '" + out.string() + "' is a file; give a folder");
    }
    const bool existing = fs::exists(out) && contains_run(out);
    if (control.resume) {
        if (!fs::exists(out / "run.json")) {
            throw InputError("--resume: '" + (out / "run.json").string() +
                             "' does not exist, so there is no run to continue; drop --resume to start one");
        }
        json stored;
        try {
            std::ifstream file(out / "run.json");
            stored = json::parse(file);
        } catch (const json::exception& e) {
            throw InputError("--resume: '" + (out / "run.json").string() + "' does not parse: " + e.what());
        }
        for (const char* section : {"settings", "spec"}) {
            if (!stored.contains(section)) throw InputError("--resume: run.json has no '" + std::string(section) + "' section");
            for (const auto& [key, value] : record.at(section).items()) {
                if (!stored.at(section).contains(key) || stored.at(section).at(key) != value) {
                    throw InputError("--resume: " + std::string(section) + " field '" + key + "' is " + value.dump() +
                                     " now but " + (stored.at(section).contains(key) ? stored.at(section).at(key).dump() : "absent") +
                                     " in the run being resumed; resume with the same spec and options");
                }
            }
            if (stored.at(section).size() != record.at(section).size()) {
                throw InputError("--resume: the " + std::string(section) +
                                 " of the run being resumed has other fields than now; resume with the same spec and options");
            }
        }
        fs::create_directories(out / "checkpoints");
        return;
    }
    if (existing) {
        if (!control.force) {
            throw InputError("output folder '" + out.string() +
                             "' holds a training run; give --resume to continue it, --force to replace it, or another --out");
        }
        for (const auto& name : run_files()) fs::remove(out / name);
        fs::remove_all(out / "checkpoints");
    }
    fs::create_directories(out / "checkpoints");
    write_file_atomically(out / "run.json", record.dump(2) + "\n");
}

}  // namespace

TrainReport train_mqar(const std::shared_ptr<const AnyLayer>& layer, const json& spec_json, const MqarSettings& settings,
                       const RunControl& control, std::ostream& progress_stream) {
    settings.check();
    if (!layer) throw ConfigError("train_mqar: no layer given");
    if (control.out.empty()) throw InputError("--out is empty; give a folder for the results");
    if (control.stop_after < 0) throw ConfigError("--stop-after = " + std::to_string(control.stop_after) + " is invalid; valid is 0 or more");
    if (control.threads < 1) throw ConfigError("--threads = " + std::to_string(control.threads) + " is invalid; valid is 1 or more");
    if (control.checkpoint_every < 0) {
        throw ConfigError("--checkpoint-every = " + std::to_string(control.checkpoint_every) + " is invalid; valid is 0 or more");
    }

    {
        // The mixer checks the gate scales against the layer's gates; fail before the folder is touched.
        std::mt19937_64 rng(settings.seed);
        const nn::SpecMixer<float> mixer(layer, settings.model_dim, settings.conv_kernel, rng, settings.gate_scales);
    }

    const json settings_json = settings.to_json();
    const json record{{"task", "mqar"}, {"settings", settings_json}, {"spec", spec_json}};
    prepare_folder(control.out, record, control);

    tasks::MqarConfig task{settings.vocab_size, settings.seq_len, settings.num_pairs, settings.power_a,
                           settings.random_filler, 1};
    Progress progress(progress_stream, control);
    Shared shared{layer,
                  settings,
                  control,
                  settings_json,
                  tasks::make_mqar(task, settings.train_examples, tasks::mqar_seed(tasks::MqarSplit::train, settings.seed, 0)),
                  tasks::make_mqar(task, settings.test_examples, tasks::mqar_seed(tasks::MqarSplit::test, settings.seed, 0)),
                  progress,
                  control.stop_after > 0 ? control.stop_after : -1};

    TrainReport report;
    report.folder = control.out;
    for (std::size_t i = 0; i < settings.learning_rates.size(); ++i) {
        report.runs.push_back(settings.use_double ? train_one<double>(shared, i) : train_one<float>(shared, i));
        if (!report.runs.back().finished) return report;
    }
    report.complete = true;
    write_results(control.out, record, report, control.plots, progress_stream);
    return report;
}

}  // namespace miras::train
