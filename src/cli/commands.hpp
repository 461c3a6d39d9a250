// Subcommands of the miras tool. Each registers itself on the parser and returns the exit status:
// 0 on success, 1 when a check fails, 2 on bad usage or bad input.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace miras::cli {

inline constexpr int exit_ok = 0;
inline constexpr int exit_check_failed = 1;
inline constexpr int exit_bad_input = 2;

/// A subcommand: adds its options to `app` and returns the action to run when it is chosen.
using Action = std::function<int()>;

Action add_golden_command(CLI::App& app);
Action add_list_command(CLI::App& app);
Action add_describe_command(CLI::App& app);
Action add_check_command(CLI::App& app);
Action add_run_command(CLI::App& app);
Action add_recall_command(CLI::App& app);
Action add_sweep_command(CLI::App& app);
Action add_train_command(CLI::App& app);

}  // namespace miras::cli
