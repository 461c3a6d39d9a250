// One run of the memorisation probes over a set of layers: the comparison table on `out`, progress
// on `progress`, and a results folder with CSV, JSON, gnuplot scripts and plots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "miras/tasks/probes.hpp"

namespace miras::recall {

struct RunOptions {
    std::uint64_t seed = 1;
    /// Folder to write; empty means results_root/recall-YYYYmmdd-HHMMSS-seedN (UTC), with a suffix
    /// -2, -3, ... when that folder exists.
    std::filesystem::path output_dir;
    std::filesystem::path results_root = "results";
    /// Replacement of an existing output_dir instead of rejecting it.
    bool force = false;
    Index key_dim = 32;
    /// Probe names to run; empty runs every probe.
    std::vector<std::string> probes;
    bool quick = false;
    /// Plotting with gnuplot when it is on the PATH.
    bool plots = true;
};

/// Outcome of a run: the folder written and the layers skipped, each with its error message.
struct RunReport {
    std::filesystem::path folder;
    std::vector<std::pair<std::string, std::string>> skipped;
};

/// Runs the probes over `layers` and writes the folder, which appears only once complete. A layer
/// whose probes raise a miras::Error is skipped and listed in the report and in results.json.
/// Raises InputError when output_dir exists and force is off, or when every layer fails.
RunReport run_recall(const RunOptions& options, const std::vector<tasks::ProbedLayer>& layers,
                     std::ostream& out, std::ostream& progress);

}  // namespace miras::recall
