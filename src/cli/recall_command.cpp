// `miras recall`: the memorisation probes over the default layers, a comparison table on stdout
// and a results folder per run.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "recall/default_layers.hpp"
#include "recall/recall_run.hpp"

namespace miras::cli {

Action add_recall_command(CLI::App& app) {
    auto options = std::make_shared<recall::RunOptions>();
    auto output_dir = std::make_shared<std::string>();
    CLI::App* command = app.add_subcommand(
        "recall", "Run the training-free memorisation probes (capacity, noise, outliers, recency, overwrite, stream) "
                  "and compare the layers");
    command->add_option("--seed", options->seed, "Seed of every random key, value and noise draw")->capture_default_str();
    command->add_option("--output-dir", *output_dir,
                        "Results folder (default: results/recall-YYYYmmdd-HHMMSS-seedN); an existing one is rejected");
    command->add_flag("--force", options->force, "Replace an existing --output-dir");
    command->add_option("--key-dim", options->key_dim, "Key and value dimension of the probed layers")
        ->check(CLI::Range(Index{1}, Index{1024}))
        ->capture_default_str();
    command->add_option("--probes", options->probes, "Probes to run (default: all)")
        ->delimiter(',')
        ->check(CLI::IsMember({"capacity", "noise", "outliers", "recency", "overwrite", "stream"}));
    command->add_flag("--quick", options->quick, "Fewer points and reads per point");
    command->add_flag("--no-plots", [options](std::int64_t) { options->plots = false; }, "Do not run gnuplot");

    return [options, output_dir]() {
        recall::RunOptions run = *options;
        run.output_dir = *output_dir;
        const auto layers = recall::default_probe_layers(run.key_dim);
        const recall::RunReport report = recall::run_recall(run, layers, std::cout, std::cerr);
        return report.skipped.empty() ? exit_ok : exit_check_failed;
    };
}

}  // namespace miras::cli
