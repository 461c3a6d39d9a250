// Running sweep entries: one entry in this process (`miras sweep run`), every unfinished entry with
// worker processes (`miras sweep local`), and the sbatch script of a Slurm job array (`miras sweep
// slurm`). An entry is done once its result.json exists; that file is renamed into place whole, so
// an interrupted entry leaves no result and runs again.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>

#include "miras/core/error.hpp"
#include "common/atomic_file.hpp"
#include "miras/spec/spec.hpp"
#include "recall/recall_run.hpp"
#include "sweep.hpp"

namespace miras::sweep {

namespace {

/// Closes a file descriptor (and so releases its lock) on every way out.
struct Descriptor {
    int fd = -1;
    ~Descriptor() {
        if (fd >= 0) close(fd);
    }
};

std::string utc_now() {
    const std::time_t now = std::time(nullptr);
    std::tm parts{};
    gmtime_r(&now, &parts);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &parts);
    return buffer;
}

std::string host_name() {
    char buffer[256] = {};
    if (gethostname(buffer, sizeof buffer - 1) != 0) return "unknown";
    return buffer;
}

/// Wraps text in single quotes for a POSIX shell.
std::string shell_quoted(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += (c == '\'') ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

/// Loads the spec of an entry with its key and value dimension set to the entry's key_dim.
LayerSpec entry_spec(const Entry& entry) {
    if (entry.key_dim == 0) return load_spec_file(entry.spec.string());
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(std::ifstream(entry.spec));
    } catch (const nlohmann::json::exception& e) {
        throw SpecError("", "file '" + entry.spec.string() + "' is not valid JSON: " + e.what());
    }
    if (!json.is_object()) throw SpecError("", "file '" + entry.spec.string() + "' does not hold a JSON object");
    if (!json.contains("dims") || !json.at("dims").is_object()) json["dims"] = nlohmann::json::object();
    json["dims"]["key"] = entry.key_dim;
    json["dims"]["value"] = entry.key_dim;
    return parse_spec_text(json.dump(), entry.spec.string());
}

/// Probes one entry and returns its result document.
nlohmann::json probe_entry(const Sweep& sweep, const Entry& entry, std::ostream& log) {
    const LayerSpec spec = entry_spec(entry);
    std::shared_ptr<const AnyLayer> layer(build_layer(spec));
    const std::vector<tasks::ProbedLayer> layers{{entry.spec_name, layer, spec.probe_gates}};
    recall::RunOptions options;
    options.seed = entry.run_seed;
    options.output_dir = entry_dir(sweep, entry.index) / "recall";
    options.force = true;
    options.key_dim = layer->dims().key;
    options.probes = {entry.probe};
    options.quick = sweep.quick;
    options.plots = false;
    recall::run_recall(options, layers, log, log);
    const nlohmann::json recall = nlohmann::json::parse(std::ifstream(options.output_dir / "results.json"));
    if (recall.at("summary").size() != 1 || recall.at("curves").size() != 1) {
        throw InputError("the probe run of entry " + std::to_string(entry.index) + " wrote " +
                         std::to_string(recall.at("summary").size()) + " summary cells; expected 1");
    }
    return {{"entry", entry.to_json()},
            {"layer", recall.at("layers").at(0)},
            {"summary", recall.at("summary").at(0)},
            {"curve", recall.at("curves").at(0)},
            {"min_queries", recall.at("min_queries")},
            {"seconds", recall.at("seconds")},
            {"host", host_name()},
            {"finished", utc_now()}};
}

/// Array ranges of sorted indices: 0-3,7,9-10.
std::string array_ranges(const std::vector<std::size_t>& indices) {
    std::string text;
    for (std::size_t i = 0; i < indices.size();) {
        std::size_t j = i;
        while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
        text += (text.empty() ? "" : ",") + std::to_string(indices[i]);
        if (j > i) text += "-" + std::to_string(indices[j]);
        i = j + 1;
    }
    return text;
}

}  // namespace

int run_entry(const Sweep& sweep, std::size_t index, std::ostream& out) {
    if (index >= sweep.entries.size()) {
        throw InputError("entry index " + std::to_string(index) + " is out of range; valid is 0 to " +
                         std::to_string(sweep.entries.size() - 1) + " (" + std::to_string(sweep.entries.size()) +
                         " entries in '" + sweep.file.string() + "')");
    }
    write_manifest(sweep);
    const Entry& entry = sweep.entries[index];
    const fs::path dir = entry_dir(sweep, index);
    fs::create_directories(dir.parent_path());
    fs::create_directories(log_path(sweep, index).parent_path());

    // The lock keeps two processes (a requeued array task and a local worker, say) off one entry.
    const fs::path lock = dir.string() + ".lock";
    Descriptor descriptor{open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
    if (descriptor.fd < 0) throw InputError("failed to open the lock file '" + lock.string() + "'; check that the folder is writable");
    if (flock(descriptor.fd, LOCK_EX | LOCK_NB) != 0) {
        out << "entry " << index << " is running in another process; skipped\n";
        return entry_busy;
    }
    if (fs::exists(result_path(sweep, index))) {
        out << "entry " << index << " is already done; skipped\n";
        return entry_ok;
    }

    std::ofstream log(log_path(sweep, index), std::ios::app);
    log << "== entry " << index << " started " << utc_now() << " on " << host_name() << ", pid " << getpid() << "\n"
        << entry.to_json().dump() << "\n";
    // What an interrupted attempt left (a partial probe folder, a failure record) goes first.
    fs::remove_all(dir);
    fs::create_directories(dir);
    try {
        const nlohmann::json result = probe_entry(sweep, entry, log);
        write_file_atomically(result_path(sweep, index), result.dump(2) + "\n");
        log << "== entry " << index << " done " << utc_now() << "\n";
        out << "entry " << index << " done: " << entry.row_label() << ", " << entry.probe << "\n";
        return entry_ok;
    } catch (const std::exception& e) {
        log << "error: " << e.what() << "\n== entry " << index << " failed " << utc_now() << "\n";
        log.flush();
        const nlohmann::json failure{{"entry", entry.to_json()}, {"error", e.what()}, {"host", host_name()},
                                     {"finished", utc_now()}};
        write_file_atomically(failure_path(sweep, index), failure.dump(2) + "\n");
        out << "entry " << index << " failed: " << e.what() << " (log: " << log_path(sweep, index).string() << ")\n";
        return entry_failed;
    }
}

int run_local(const Sweep& sweep, const fs::path& self, int jobs, std::ostream& out) {
    if (jobs < 1) throw InputError("--jobs " + std::to_string(jobs) + " is invalid; valid is 1 or more");
    std::size_t stop_after = 0;
    if (const char* text = std::getenv("MIRAS_SWEEP_STOP_AFTER"); text != nullptr && *text != '\0') {
        char* end = nullptr;
        const long long value = std::strtoll(text, &end, 10);
        if (*end != '\0' || value < 1) {
            throw InputError(std::string("MIRAS_SWEEP_STOP_AFTER='") + text + "' is invalid; valid is an integer of 1 or more");
        }
        stop_after = static_cast<std::size_t>(value);
    }
    write_manifest(sweep);
    std::vector<std::size_t> pending;
    for (const auto& entry : sweep.entries) {
        if (entry_state(sweep, entry.index) != EntryState::done) pending.push_back(entry.index);
    }
    out << "sweep " << sweep.name << ": " << sweep.entries.size() << " entries, "
        << sweep.entries.size() - pending.size() << " already done, " << pending.size() << " to run with " << jobs
        << (jobs == 1 ? " worker" : " workers") << "\n";
    out.flush();

    std::map<pid_t, std::size_t> running;
    std::size_t next = 0, finished = 0, failed = 0, busy = 0;
    for (;;) {
        while (static_cast<int>(running.size()) < jobs && next < pending.size() && (stop_after == 0 || next < stop_after)) {
            const std::size_t index = pending[next];
            const std::string index_text = std::to_string(index);
            const pid_t child = fork();
            if (child < 0) throw InputError("failed to start a worker process for entry " + index_text);
            if (child == 0) {
                const int null = open("/dev/null", O_RDWR);
                if (null >= 0) {
                    dup2(null, STDIN_FILENO);
                    dup2(null, STDOUT_FILENO);
                }
                execl(self.c_str(), "miras", "sweep", "run", sweep.file.c_str(), "--index", index_text.c_str(),
                      static_cast<char*>(nullptr));
                _exit(127);
            }
            running[child] = index;
            ++next;
        }
        if (running.empty()) break;
        int status = 0;
        const pid_t child = waitpid(-1, &status, 0);
        if (child < 0) {
            if (errno == EINTR) continue;
            break;
        }
        const auto found = running.find(child);
        if (found == running.end()) continue;
        const std::size_t index = found->second;
        running.erase(found);
        const Entry& entry = sweep.entries[index];
        std::string outcome;
        if (WIFEXITED(status) && WEXITSTATUS(status) == entry_ok) {
            ++finished;
            outcome = "done";
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == entry_busy) {
            ++busy;
            outcome = "running in another process";
        } else {
            ++failed;
            outcome = WIFSIGNALED(status) ? "worker killed by signal " + std::to_string(WTERMSIG(status))
                                          : "failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
            outcome += "; log: " + log_path(sweep, index).string();
        }
        out << "[" << finished + failed + busy << "/" << pending.size() << "] entry " << index << " ("
            << entry.row_label() << ", " << entry.probe << "): " << outcome << "\n";
        out.flush();
    }
    if (next < pending.size()) {
        out << "stopped after " << next << " entries (MIRAS_SWEEP_STOP_AFTER=" << stop_after << "); "
            << pending.size() - next << " not started; run the same command again to finish\n";
        return 3;
    }
    if (failed > 0 || busy > 0) {
        out << failed << " entries failed and " << busy << " ran elsewhere; `miras sweep collect` lists them\n";
        return 1;
    }
    return 0;
}

std::string slurm_script(const Sweep& sweep, const fs::path& self, const std::vector<std::size_t>& chosen) {
    std::vector<std::size_t> indices = chosen;
    if (indices.empty()) {
        for (const auto& entry : sweep.entries) indices.push_back(entry.index);
    }
    std::string array = array_ranges(indices);
    if (sweep.slurm.throttle > 0) array += "%" + std::to_string(sweep.slurm.throttle);

    const fs::path logs = sweep.output_dir / "slurm";
    // An #SBATCH line is not parsed by a shell, so a path there cannot be quoted; sbatch also
    // expands % in --output.
    if (logs.string().find_first_of(" \t\n%") != std::string::npos) {
        throw InputError("output folder '" + sweep.output_dir.string() +
                         "' contains a space, tab or '%', which an #SBATCH --output line cannot carry; choose "
                         "another output_dir");
    }

    std::ostringstream script;
    script << "#!/bin/bash\n"
           << "# Written by `miras sweep slurm` for the sweep '" << sweep.name << "': one array task per entry of\n"
           << "# " << (sweep.output_dir / "manifest.json").string() << ".\n"
           << "#SBATCH --job-name=miras-" << sweep.name << "\n"
           << "#SBATCH --array=" << array << "\n"
           << "#SBATCH --ntasks=1\n"
           << "#SBATCH --cpus-per-task=" << sweep.slurm.cpus_per_task << "\n"
           << "#SBATCH --time=" << sweep.slurm.time << "\n"
           << "#SBATCH --mem=" << sweep.slurm.mem << "\n"
           << "#SBATCH --output=" << (logs / "%A_%a.out").string() << "\n";
    if (!sweep.slurm.partition.empty()) script << "#SBATCH --partition=" << sweep.slurm.partition << "\n";
    if (!sweep.slurm.account.empty()) script << "#SBATCH --account=" << sweep.slurm.account << "\n";
    for (const auto& line : sweep.slurm.extra) script << "#SBATCH " << line << "\n";

    script << "set -eu\n"
           << "export OMP_NUM_THREADS=" << sweep.slurm.cpus_per_task << "\n"
           << "exec " << shell_quoted(self.string()) << " sweep run " << shell_quoted(sweep.file.string())
           << " --index \"$SLURM_ARRAY_TASK_ID\"\n";
    return script.str();
}

}  // namespace miras::sweep
