// The layers `miras recall` probes from JSON spec files. Each spec is built at its own dims (or
// rebuilt at another key dimension) with its probe gate values. The thresholds it declares in
// expect.probe are judged by the probe of `miras check`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "recall/recall_run.hpp"

namespace miras::recall {

/// Lists the spec files of a folder: every *.json file but schema.json, sorted by file name. Raises
/// InputError when the folder cannot be read or contains no spec.
std::vector<std::filesystem::path> spec_files_in(const std::filesystem::path& folder);

/// Probe targets from spec files, in the order given, and the specs that cannot be probed.
struct SpecTargets {
    std::vector<RecallTarget> targets;
    std::vector<Unprobed> unprobed;
};
/// Loads `files` as probe targets. key_dim 0 keeps each spec's dims. Otherwise dims.key and
/// dims.value become key_dim and the spec is validated again. A file that does not load is listed
/// as an error.
SpecTargets load_spec_targets(const std::vector<std::filesystem::path>& files, Index key_dim);

}  // namespace miras::recall
