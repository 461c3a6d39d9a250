// Checks a layer against a golden file: float64 inputs and outputs of a reference implementation
// (format: tests/data/golden/README.md). The file's "model" field selects a preset through a table
// of golden model names; its "parameters" field carries fixed settings.
#pragma once

#include <string>
#include <vector>

namespace miras::golden {

enum class Precision { float32, float64 };

/// Error of one output tensor against the reference.
struct Comparison {
    std::string output;
    double max_abs_error = 0.0;
    /// max |ours - reference| / max |reference|, the normwise relative error.
    double max_rel_error = 0.0;
    /// max |reference|.
    double reference_scale = 0.0;
    bool passed = false;
};

struct FileResult {
    std::string path;
    std::string model;
    Precision precision = Precision::float64;
    std::vector<Comparison> comparisons;
    bool passed = false;
};

/// Tolerances: in float64 a relative error of 1e-10; in float32 an absolute error of
/// 1e-4 + 1e-6 max |reference|. The relative part matters only for outputs far above 1 (the
/// flash-linear-attention TTT files reach 2700, where one float step is already 2.4e-4).
struct Tolerance {
    double float64_rel = 1e-10;
    double float32_abs = 1e-4;
    double float32_rel = 1e-6;

    double float32_bound(double reference_scale) const { return float32_abs + float32_rel * reference_scale; }
};

/// Golden model names this build can run.
std::vector<std::string> supported_models();

/// Runs the preset that the file names on the file's inputs and compares every output.
/// Throws InputError for a file that cannot be read or names an unknown model.
FileResult check_file(const std::string& path, Precision precision, const Tolerance& tolerance = {});

}  // namespace miras::golden
