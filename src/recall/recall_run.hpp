// One run of the memorisation probes over a set of layers: the comparison table on `out`, progress
// on `progress`, and a results folder with CSV, JSON, gnuplot scripts and plots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
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
    /// Key dimension of the presets of `miras recall --presets`. Spec files are probed at their own
    /// dims unless load_spec_targets rebuilt them at another.
    Index key_dim = 32;
    /// Probe names to run; empty runs every probe.
    std::vector<std::string> probes;
    bool quick = false;
    /// The full grid of every probe (more points and reads) instead of the bounded default.
    bool full = false;
    /// Plotting with gnuplot when it is on the PATH.
    bool plots = true;
};

/// The verdict on the probe thresholds a layer declares.
struct ThresholdCheck {
    bool passed = false;
    std::string detail;
};

/// A layer to probe, where it comes from, and the judge of its declared thresholds (empty when it
/// declares none).
struct RecallTarget {
    tasks::ProbedLayer probed;
    std::string source;
    std::function<ThresholdCheck()> thresholds;
};

/// A layer left out of the probes and why: it cannot be probed (error false) or it failed to load
/// (error true).
struct Unprobed {
    std::string name;
    std::string source;
    std::string reason;
    bool error = false;
};

/// Outcome of a run: the folder written, the layers skipped (each with its error message), the
/// layers left out before the run, and the layers whose declared thresholds failed.
struct RunReport {
    std::filesystem::path folder;
    std::vector<std::pair<std::string, std::string>> skipped;
    std::vector<Unprobed> unprobed;
    std::vector<std::string> failed_thresholds;

    /// True when nothing failed: no probe error, no file that failed to load, no failed threshold.
    bool passed() const;
};

/// Runs the probes over `layers` and writes the folder, which appears only once complete. A layer
/// whose probes raise a miras::Error is skipped and listed in the report and in results.json.
/// Raises InputError when output_dir exists and force is off, or when every layer fails.
RunReport run_recall(const RunOptions& options, const std::vector<tasks::ProbedLayer>& layers,
                     std::ostream& out, std::ostream& progress);

/// The same over targets: their thresholds are judged after their probes and shown in the table,
/// and the `unprobed` layers are listed under it and in results.json.
RunReport run_recall(const RunOptions& options, const std::vector<RecallTarget>& targets,
                     const std::vector<Unprobed>& unprobed, std::ostream& out, std::ostream& progress);

}  // namespace miras::recall
