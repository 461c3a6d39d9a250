// `miras recall`: the memorisation probes over every spec file of a folder (or the files given),
// a comparison table on stdout and a results folder per run. Exits 1 when a probe fails, a spec file
// does not load or a threshold declared in expect.probe fails.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "recall/default_layers.hpp"
#include "recall/recall_run.hpp"
#include "recall/spec_layers.hpp"

namespace miras::cli {

namespace {

struct RecallArguments {
    recall::RunOptions run;
    std::string output_dir;
    std::vector<std::string> specs;
    std::string specs_dir = MIRAS_SPECS_DIR;
    bool presets = false;
};

}  // namespace

Action add_recall_command(CLI::App& app) {
    auto arguments = std::make_shared<RecallArguments>();
    recall::RunOptions& options = arguments->run;
    options.key_dim = 0;
    CLI::App* command = app.add_subcommand(
        "recall", "Run the training-free memorisation probes (capacity, noise, outliers, recency, overwrite, stream) "
                  "over every spec file and compare the layers");
    CLI::Option* specs = command->add_option("--spec", arguments->specs, "Spec files to probe (default: every spec of --specs-dir)")
                             ->check(CLI::ExistingFile);
    CLI::Option* folder = command->add_option("--specs-dir", arguments->specs_dir, "Folder of spec files to probe")
                              ->capture_default_str();
    CLI::Option* presets = command->add_flag("--presets", arguments->presets,
                                             "Probe the built-in presets (one head, key dim 32 or --key-dim) instead of spec files");
    specs->excludes(folder);
    presets->excludes(specs)->excludes(folder);
    command->add_option("--seed", options.seed, "Seed of every random key, value and noise draw")->capture_default_str();
    command->add_option("--output-dir", arguments->output_dir,
                        "Results folder (default: results/recall-YYYYmmdd-HHMMSS-seedN); an existing one is rejected");
    command->add_flag("--force", options.force, "Replace an existing --output-dir");
    command->add_option("--key-dim", options.key_dim,
                        "Rebuild every spec with this key and value dimension (default: each spec's own dims)")
        ->check(CLI::Range(Index{1}, Index{1024}));
    command->add_option("--probes", options.probes, "Probes to run (default: all)")
        ->delimiter(',')
        ->check(CLI::IsMember({"capacity", "noise", "outliers", "recency", "overwrite", "stream"}));
    CLI::Option* quick = command->add_flag("--quick", options.quick, "Fewer points and reads per point");
    CLI::Option* full = command->add_flag("--full", options.full, "Every point of every probe grid and more reads per point");
    quick->excludes(full);
    command->add_flag("--no-plots", [&options](std::int64_t) { options.plots = false; }, "Do not run gnuplot");

    return [arguments]() {
        recall::RunOptions run = arguments->run;
        run.output_dir = arguments->output_dir;
        if (arguments->presets) {
            if (run.key_dim == 0) run.key_dim = 32;
            const recall::RunReport report =
                recall::run_recall(run, recall::default_probe_layers(run.key_dim), std::cout, std::cerr);
            return report.passed() ? exit_ok : exit_check_failed;
        }
        std::vector<std::filesystem::path> files(arguments->specs.begin(), arguments->specs.end());
        if (files.empty()) files = recall::spec_files_in(arguments->specs_dir);
        const recall::SpecTargets loaded = recall::load_spec_targets(files, run.key_dim);
        const recall::RunReport report = recall::run_recall(run, loaded.targets, loaded.unprobed, std::cout, std::cerr);
        return report.passed() ? exit_ok : exit_check_failed;
    };
}

}  // namespace miras::cli
