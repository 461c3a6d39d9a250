// `miras golden FILE...`: run the preset each golden file names and report its errors.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "miras/core/error.hpp"
#include "miras/io/golden.hpp"

namespace miras::cli {

Action add_golden_command(CLI::App& app) {
    struct Options {
        std::vector<std::string> files;
        std::string precision = "float64";
        double rel_tolerance = 1e-10;
        double abs_tolerance = 1e-4;
    };
    auto options = std::make_shared<Options>();
    CLI::App* command = app.add_subcommand(
        "golden", "Run the preset that each golden file names on its inputs and compare every output with the reference");
    command->add_option("files", options->files, "Golden JSON files (format: docs/specs.md, tensor format)")
        ->required()
        ->check(CLI::ExistingFile);
    command->add_option("--precision", options->precision, "Scalar type of the run")
        ->check(CLI::IsMember({"float64", "float32", "both"}))
        ->capture_default_str();
    command->add_option("--rel-tolerance", options->rel_tolerance,
                        "Largest accepted relative error max|ours - ref| / max|ref| in float64")
        ->capture_default_str();
    command->add_option("--abs-tolerance", options->abs_tolerance, "Largest accepted absolute error in float32, widened by 1e-6 max|reference|")
        ->capture_default_str();

    return [options]() {
        golden::Tolerance tolerance{options->rel_tolerance, options->abs_tolerance};
        std::vector<golden::Precision> precisions;
        if (options->precision != "float32") precisions.push_back(golden::Precision::float64);
        if (options->precision != "float64") precisions.push_back(golden::Precision::float32);

        int failed = 0, unreadable = 0, checked = 0;
        std::printf("%-48s %-30s %-8s %-12s %12s %12s  %s\n", "file", "model", "scalar", "output", "max_abs_err",
                    "max_rel_err", "status");
        for (const auto& path : options->files) {
            for (auto precision : precisions) {
                const char* scalar = precision == golden::Precision::float64 ? "float64" : "float32";
                try {
                    const golden::FileResult result = golden::check_file(path, precision, tolerance);
                    for (const auto& c : result.comparisons) {
                        std::printf("%-48s %-30s %-8s %-12s %12.3e %12.3e  %s\n", path.c_str(), result.model.c_str(),
                                    scalar, c.output.c_str(), c.max_abs_error, c.max_rel_error,
                                    c.passed ? "ok" : "FAILED");
                    }
                    ++checked;
                    if (!result.passed) ++failed;
                } catch (const Error& e) {
                    std::cerr << "error: " << e.what() << "\n";
                    ++unreadable;
                }
            }
        }
        std::printf("%d checked, %d failed, %d unreadable\n", checked, failed, unreadable);
        if (unreadable > 0) return exit_bad_input;
        return failed > 0 ? exit_check_failed : exit_ok;
    };
}

}  // namespace miras::cli
