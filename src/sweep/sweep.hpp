// Benchmark grids. A sweep file names specs, a task and a grid of parameters, and the grid expands
// into a numbered manifest. Each entry runs alone (`miras sweep run`), in worker processes here
// (`local`) or as a Slurm array task (`slurm`); `collect` merges the results into one table.
// The format is documented in docs/sweeps.md and docs/sweep.schema.json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>


namespace miras::sweep {

namespace fs = std::filesystem;

/// Resources of one array task and the options of the sbatch script.
struct SlurmSettings {
    std::string time = "00:30:00";
    std::string mem = "2G";
    int cpus_per_task = 1;
    /// Most array tasks running at once (the %N of --array); 0 leaves it to the cluster.
    int throttle = 0;
    std::string partition;
    std::string account;
    /// Further lines placed after "#SBATCH " verbatim, e.g. "--qos=short".
    std::vector<std::string> extra;
};

/// One point of the grid: one spec, key dimension, probe, seed and repetition.
struct Entry {
    std::size_t index = 0;
    fs::path spec;          // absolute path of the spec file
    std::string spec_name;  // the spec's "name"
    std::int64_t key_dim = 0;     // 0 keeps the spec's own dims
    std::string probe;
    std::uint64_t seed = 1;
    int repetition = 0;
    /// Seed the probes draw from: seed + 1000003 * repetition (repetition 0 runs with seed).
    std::uint64_t run_seed = 1;

    nlohmann::json to_json() const;
    /// Row of the collected table this entry fills: spec, key dimension, seed and repetition.
    std::string row_label() const;
};

struct Sweep {
    fs::path file;  // absolute path of the sweep file
    std::string name;
    std::string task;
    fs::path output_dir;  // absolute
    std::vector<fs::path> specs;
    std::vector<std::int64_t> key_dims;
    std::vector<std::string> probes;
    std::vector<std::uint64_t> seeds;
    int repetitions = 1;
    bool quick = false;
    SlurmSettings slurm;
    std::vector<Entry> entries;
};

/// Reads, validates and expands a sweep file. Raises ConfigError naming the field, its value and
/// what is valid. Spec files are only checked to exist and parse as JSON here (`plan` builds them).
Sweep load_sweep(const fs::path& file);

/// The manifest: the sweep's name, task and every entry with its index.
nlohmann::json manifest_json(const Sweep& sweep);
/// Writes output_dir/manifest.json, or checks that the one there lists the same entries; raises
/// ConfigError when the sweep file changed so that the numbering would differ.
void write_manifest(const Sweep& sweep);

fs::path entry_dir(const Sweep& sweep, std::size_t index);
fs::path result_path(const Sweep& sweep, std::size_t index);
fs::path failure_path(const Sweep& sweep, std::size_t index);
fs::path log_path(const Sweep& sweep, std::size_t index);

enum class EntryState { done, failed, missing };
EntryState entry_state(const Sweep& sweep, std::size_t index);

/// Exit statuses of run_entry.
inline constexpr int entry_ok = 0;      // finished now or earlier
inline constexpr int entry_failed = 1;  // the entry raised an error, recorded in failed.json and the log
inline constexpr int entry_busy = 4;    // another process holds the entry's lock

/// Runs entry `index` unless its result exists. The result is written to a temporary file and
/// renamed into place; progress and errors go to the entry's log. `out` gets one line.
int run_entry(const Sweep& sweep, std::size_t index, std::ostream& out);

/// Runs every unfinished entry with `jobs` worker processes, each `self sweep run FILE --index I`.
/// Returns 0 when every entry is done, 1 when some failed, 3 when stopped early. The environment
/// variable MIRAS_SWEEP_STOP_AFTER=k stops launching after k entries finished in this call.
int run_local(const Sweep& sweep, const fs::path& self, int jobs, std::ostream& out);

/// The sbatch script of a job array over `indices` (every entry when empty).
std::string slurm_script(const Sweep& sweep, const fs::path& self, const std::vector<std::size_t>& indices = {});

struct CollectReport {
    std::size_t done = 0;
    std::vector<std::size_t> failed;
    std::vector<std::size_t> missing;
};

/// Merges the finished entries into the recall tables on `out`, and writes summary.csv, points.csv
/// and results.json in the output folder. Failed and missing entries are listed on `out` with
/// their log paths.
CollectReport collect(const Sweep& sweep, std::ostream& out);

}  // namespace miras::sweep
