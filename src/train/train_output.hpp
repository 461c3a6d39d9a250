// The results folder of `miras train`: evals.csv, summary.csv, results.json, and accuracy.gp with the
// plot of test accuracy against step per learning rate (accuracy.svg and .png, drawn by gnuplot).
#pragma once

#include <filesystem>
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "mqar_run.hpp"

namespace miras::train {

/// Writes `content` to a temporary file beside `path` and renames it into place.

/// Writes the result files of a complete run into `folder`. `record` is run.json (task, settings,
/// spec). Notes about gnuplot go to `progress`.
void write_results(const std::filesystem::path& folder, const nlohmann::json& record, const TrainReport& report,
                   bool plots, std::ostream& progress);

}  // namespace miras::train
