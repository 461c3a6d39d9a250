// The miras command line tool: results go to stdout, progress and diagnostics to stderr.
#include <iostream>
#include <map>
#include <string>

#include "commands.hpp"
#include "miras/core/error.hpp"

int main(int argc, char** argv) {
    CLI::App app{"miras: sequence layers as an algebra of memory, attentional bias, retention and algorithm"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "miras 0.1.0");

    std::map<CLI::App*, miras::cli::Action> actions;
    const auto add = [&](miras::cli::Action (*factory)(CLI::App&)) {
        const std::size_t before = app.get_subcommands({}).size();
        miras::cli::Action action = factory(app);
        actions[app.get_subcommands({}).at(before)] = std::move(action);
    };
    add(miras::cli::add_golden_command);
    add(miras::cli::add_list_command);
    add(miras::cli::add_describe_command);
    add(miras::cli::add_check_command);
    add(miras::cli::add_run_command);
    add(miras::cli::add_recall_command);
    add(miras::cli::add_sweep_command);
    add(miras::cli::add_train_command);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int status = app.exit(e);
        return status == 0 ? miras::cli::exit_ok : miras::cli::exit_bad_input;
    }

    for (auto& [command, action] : actions) {
        if (command->parsed()) {
            try {
                return action();
            } catch (const miras::Error& e) {
                std::cerr << "error: " << e.what() << "\n";
                return miras::cli::exit_bad_input;
            } catch (const std::exception& e) {
                std::cerr << "error: " << e.what() << "\n";
                return miras::cli::exit_bad_input;
            }
        }
    }
    return miras::cli::exit_bad_input;
}
