// `miras sweep`: benchmark grids from a sweep file (format: docs/sweeps.md). `plan` prints and writes
// the numbered manifest, `run` runs one entry, `local` runs the unfinished entries here, `slurm`
// writes (and submits) the sbatch script of a job array, `collect` merges the finished entries.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "common/atomic_file.hpp"
#include "commands.hpp"
#include "miras/spec/spec.hpp"
#include "sweep/sweep.hpp"

namespace miras::cli {

namespace {

namespace fs = std::filesystem;

/// This program's own path, which worker processes and array tasks run.
fs::path self_path() {
    std::error_code failure;
    const fs::path self = fs::read_symlink("/proc/self/exe", failure);
    if (failure) throw InputError("cannot find the path of the miras program (/proc/self/exe: " + failure.message() + ")");
    return self;
}

/// Loads every spec of the sweep at every key dimension, so that `plan` rejects a bad spec early.
void check_specs(const sweep::Sweep& sweep) {
    for (const auto& entry : sweep.entries) {
        if (entry.probe != sweep.probes.front() || entry.seed != sweep.seeds.front() || entry.repetition != 0) continue;
        nlohmann::json json = nlohmann::json::parse(std::ifstream(entry.spec));
        if (entry.key_dim > 0) {
            json["dims"]["key"] = entry.key_dim;
            json["dims"]["value"] = entry.key_dim;
        }
        try {
            build_layer(parse_spec_text(json.dump(), entry.spec.string()));
        } catch (const Error& e) {
            throw ConfigError("spec '" + entry.spec.string() + "'" +
                              (entry.key_dim > 0 ? " at key_dim " + std::to_string(entry.key_dim) : std::string()) +
                              ": " + e.what());
        }
    }
}

std::string shell_quoted(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += (c == '\'') ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

}  // namespace

Action add_sweep_command(CLI::App& app) {
    CLI::App* command = app.add_subcommand(
        "sweep", "Benchmark grids: expand a sweep file into numbered entries and run them here or as a Slurm job array");
    command->require_subcommand(1);
    auto file = std::make_shared<std::string>();
    auto index = std::make_shared<std::size_t>(0);
    auto jobs = std::make_shared<int>(1);
    auto submit = std::make_shared<bool>(false);
    auto unfinished = std::make_shared<bool>(false);

    CLI::App* plan = command->add_subcommand("plan", "Print the numbered manifest and write manifest.json");
    CLI::App* run = command->add_subcommand("run", "Run one entry (skipped when its result exists)");
    CLI::App* local = command->add_subcommand("local", "Run the unfinished entries on this machine");
    CLI::App* slurm = command->add_subcommand("slurm", "Write the sbatch script of a job array over the manifest");
    CLI::App* gather = command->add_subcommand("collect", "Merge the finished entries into the recall tables");
    for (CLI::App* sub : {plan, run, local, slurm, gather}) {
        sub->add_option("file", *file, "Sweep file (format: docs/sweeps.md)")->required()->check(CLI::ExistingFile);
    }
    run->add_option("--index", *index, "Entry to run, as numbered by `miras sweep plan`")->required();
    local->add_option("--jobs,-j", *jobs, "Worker processes")->check(CLI::Range(1, 1024))->capture_default_str();
    slurm->add_flag("--submit", *submit, "Submit the script with sbatch");
    slurm->add_flag("--unfinished", *unfinished, "Only the entries without a result");

    return [=]() {
        const sweep::Sweep sweep = sweep::load_sweep(*file);
        if (plan->parsed()) {
            check_specs(sweep);
            sweep::write_manifest(sweep);
            std::printf("sweep %s: %zu entries (task %s%s)\n", sweep.name.c_str(), sweep.entries.size(),
                        sweep.task.c_str(), sweep.quick ? ", quick suite" : "");
            std::printf("%6s  %-28s %8s %10s %6s %4s\n", "index", "spec", "key_dim", "probe", "seed", "rep");
            for (const auto& entry : sweep.entries) {
                const std::string key_dim = entry.key_dim > 0 ? std::to_string(entry.key_dim) : "spec";
                std::printf("%6zu  %-28s %8s %10s %6llu %4d\n", entry.index, entry.spec_name.c_str(), key_dim.c_str(),
                            entry.probe.c_str(), static_cast<unsigned long long>(entry.seed), entry.repetition);
            }
            std::printf("manifest: %s\n", (sweep.output_dir / "manifest.json").c_str());
            return exit_ok;
        }
        if (run->parsed()) {
            return sweep::run_entry(sweep, *index, std::cout) == sweep::entry_ok ? exit_ok : exit_check_failed;
        }
        if (local->parsed()) {
            check_specs(sweep);
            const int status = sweep::run_local(sweep, self_path(), *jobs, std::cerr);
            if (status == 3) return 3;
            const sweep::CollectReport report = sweep::collect(sweep, std::cout);
            return status == 0 && report.failed.empty() && report.missing.empty() ? exit_ok : exit_check_failed;
        }
        if (slurm->parsed()) {
            check_specs(sweep);
            sweep::write_manifest(sweep);
            std::vector<std::size_t> indices;
            if (*unfinished) {
                for (const auto& entry : sweep.entries) {
                    if (sweep::entry_state(sweep, entry.index) != sweep::EntryState::done) indices.push_back(entry.index);
                }
                if (indices.empty()) {
                    std::printf("every entry of sweep %s is done; nothing to submit\n", sweep.name.c_str());
                    return exit_ok;
                }
            }
            fs::create_directories(sweep.output_dir / "slurm");
            const fs::path script = sweep.output_dir / "slurm" / "sweep.sbatch";
            write_file_atomically(script, sweep::slurm_script(sweep, self_path(), indices));
            fs::permissions(script, fs::perms::owner_exec, fs::perm_options::add);
            std::printf("script: %s (%zu array tasks)\n", script.c_str(),
                        indices.empty() ? sweep.entries.size() : indices.size());
            if (!*submit) {
                std::printf("submit with: sbatch %s\n", shell_quoted(script.string()).c_str());
                return exit_ok;
            }
            const std::string line = "sbatch --parsable " + shell_quoted(script.string()) + " 2>&1";
            FILE* pipe = popen(line.c_str(), "r");
            if (pipe == nullptr) throw InputError("failed to run sbatch; is Slurm installed on this machine?");
            std::string reply;
            char buffer[256];
            while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) reply += buffer;
            const int status = pclose(pipe);
            while (!reply.empty() && (reply.back() == '\n' || reply.back() == ' ')) reply.pop_back();
            if (status != 0) {
                std::fprintf(stderr, "error: sbatch failed (%s); the script is %s\n", reply.c_str(), script.c_str());
                return exit_check_failed;
            }
            const std::string job = reply.substr(0, reply.find(';'));
            std::printf("submitted job array %s\n", job.c_str());
            return exit_ok;
        }
        const sweep::CollectReport report = sweep::collect(sweep, std::cout);
        return report.failed.empty() && report.missing.empty() ? exit_ok : exit_check_failed;
    };
}

}  // namespace miras::cli
