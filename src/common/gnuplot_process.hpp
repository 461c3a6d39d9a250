// Finding and running gnuplot for the plots of `miras recall` and `miras train`.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

namespace miras::plotting {

/// Returns the full path of an executable `program` found on PATH, or "" when there is none.
inline std::string find_on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    if (path == nullptr) return {};
    std::stringstream entries(path);
    std::string entry;
    while (std::getline(entries, entry, ':')) {
        if (entry.empty()) continue;
        const std::filesystem::path candidate = std::filesystem::path(entry) / program;
        if (std::filesystem::is_regular_file(candidate) && access(candidate.c_str(), X_OK) == 0) {
            return candidate.string();
        }
    }
    return {};
}

/// Runs `gnuplot script` inside `folder` with its output sent to stderr. Returns the exit status,
/// or -1 when the process could not be started or waited for.
inline int run_gnuplot(const std::string& gnuplot, const std::filesystem::path& folder, const std::string& script) {
    const pid_t child = fork();
    if (child < 0) return -1;
    if (child == 0) {
        if (chdir(folder.c_str()) != 0) _exit(127);
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl(gnuplot.c_str(), "gnuplot", script.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace miras::plotting
