// Sweep files: validation, expansion of the grid into numbered entries, the manifest and the
// layout of the output folder. The numbering depends on the file alone: specs in file order, then
// key dimensions, seeds, repetitions and probes, the last varying fastest.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "common/atomic_file.hpp"
#include "miras/core/error.hpp"
#include "sweep.hpp"

namespace miras::sweep {

namespace {

const std::vector<std::string> probe_names{"capacity", "noise", "outliers", "recency", "overwrite", "stream"};

[[noreturn]] void fail(const fs::path& file, const std::string& field, const std::string& message) {
    throw ConfigError("sweep file '" + file.string() + "', field '" + field + "': " + message);
}

std::string shown(const nlohmann::json& value) {
    std::string text = value.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return text;
}

void check_keys(const fs::path& file, const std::string& where, const nlohmann::json& object,
                const std::set<std::string>& allowed) {
    for (const auto& [key, value] : object.items()) {
        if (allowed.count(key) != 0) continue;
        std::string valid;
        for (const auto& name : allowed) valid += (valid.empty() ? "" : ", ") + name;
        fail(file, where + key, "unknown field; valid fields here are " + valid);
    }
}

std::string string_field(const fs::path& file, const nlohmann::json& object, const std::string& key,
                         const std::string& where, const std::string& fallback) {
    if (!object.contains(key)) return fallback;
    const auto& value = object.at(key);
    if (!value.is_string()) fail(file, where + key, "value " + shown(value) + " is not a string");
    return value.get<std::string>();
}

std::int64_t integer(const fs::path& file, const nlohmann::json& value, const std::string& field, std::int64_t low,
                     std::int64_t high) {
    if (!value.is_number_integer() || value.get<std::int64_t>() < low || value.get<std::int64_t>() > high) {
        fail(file, field,
             "value " + shown(value) + " is invalid; valid is an integer from " + std::to_string(low) + " to " +
                 std::to_string(high));
    }
    return value.get<std::int64_t>();
}

/// Returns the values of a grid axis given as a list or one value; rejects an empty list and repeats.
std::vector<nlohmann::json> axis(const fs::path& file, const nlohmann::json& grid, const std::string& key) {
    const auto& value = grid.at(key);
    std::vector<nlohmann::json> values;
    if (value.is_array()) {
        values.assign(value.begin(), value.end());
    } else {
        values.push_back(value);
    }
    if (values.empty()) fail(file, "grid/" + key, "the list is empty; give at least one value");
    for (std::size_t i = 0; i < values.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            if (values[i] == values[j]) fail(file, "grid/" + key, "value " + shown(values[i]) + " is listed twice");
        }
    }
    return values;
}

/// Returns the spec's "name" (its file stem when absent). `plan` and each entry's run check the
/// rest of the spec, so that one bad spec fails its own entries only.
std::string spec_name(const fs::path& file, const std::string& field, const fs::path& spec) {
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(std::ifstream(spec));
    } catch (const nlohmann::json::exception& e) {
        fail(file, field, "spec file '" + spec.string() + "' is not valid JSON: " + e.what());
    }
    if (json.is_object() && json.contains("name") && json.at("name").is_string()) return json.at("name").get<std::string>();
    return spec.stem().string();
}

fs::path resolve(const fs::path& base, const std::string& path) {
    const fs::path given(path);
    return fs::weakly_canonical(given.is_absolute() ? given : base / given);
}

std::string padded(std::size_t index) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%05zu", index);
    return buffer;
}

}  // namespace

nlohmann::json Entry::to_json() const {
    return {{"index", index},       {"spec", spec.string()}, {"spec_name", spec_name},
            {"key_dim", key_dim},   {"probe", probe},        {"seed", seed},
            {"repetition", repetition}, {"run_seed", run_seed}};
}

std::string Entry::row_label() const {
    std::string label = spec_name;
    if (key_dim > 0) label += " k=" + std::to_string(key_dim);
    label += " seed=" + std::to_string(seed);
    if (repetition > 0) label += " rep=" + std::to_string(repetition);
    return label;
}

Sweep load_sweep(const fs::path& given) {
    Sweep sweep;
    sweep.file = fs::absolute(given);
    std::ifstream stream(sweep.file);
    if (!stream) throw ConfigError("sweep file '" + sweep.file.string() + "' cannot be read; check the path");
    nlohmann::json root;
    try {
        root = nlohmann::json::parse(stream);
    } catch (const nlohmann::json::exception& e) {
        throw ConfigError("sweep file '" + sweep.file.string() + "' is not valid JSON: " + e.what());
    }
    const fs::path& file = sweep.file;
    if (!root.is_object()) fail(file, "/", "the document must be a JSON object, not " + shown(root));
    check_keys(file, "", root, {"$schema", "name", "description", "task", "output_dir", "specs", "grid", "quick", "slurm"});

    sweep.name = string_field(file, root, "name", "", "");
    if (sweep.name.empty() || sweep.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") !=
                                  std::string::npos) {
        fail(file, "name", "value '" + sweep.name + "' is invalid; give a non-empty name of letters, digits, '_', '-' or '.'");
    }
    sweep.task = string_field(file, root, "task", "", "probe");
    if (sweep.task == "mqar") {
        fail(file, "task",
             "task 'mqar' is not available in this build: MQAR trains each model, and this build has no training "
             "part; use task 'probe'");
    }
    if (sweep.task != "probe") fail(file, "task", "value '" + sweep.task + "' is invalid; valid are 'probe' and 'mqar'");

    const fs::path base = file.parent_path();
    sweep.output_dir = resolve(base, string_field(file, root, "output_dir", "", "sweep-" + sweep.name));

    if (!root.contains("specs")) fail(file, "specs", "missing; list the spec files to run");
    const auto& specs = root.at("specs");
    if (!specs.is_array() || specs.empty()) fail(file, "specs", "value " + shown(specs) + " is not a non-empty list of spec files");
    std::vector<std::string> spec_names;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        const std::string field = "specs/" + std::to_string(i);
        if (!specs[i].is_string()) fail(file, field, "value " + shown(specs[i]) + " is not a file path");
        const fs::path path = resolve(base, specs[i].get<std::string>());
        if (!fs::is_regular_file(path)) fail(file, field, "spec file '" + path.string() + "' does not exist");
        if (std::find(sweep.specs.begin(), sweep.specs.end(), path) != sweep.specs.end()) {
            fail(file, field, "spec file '" + path.string() + "' is listed twice");
        }
        sweep.specs.push_back(path);
        spec_names.push_back(spec_name(file, field, path));
    }

    nlohmann::json grid = root.value("grid", nlohmann::json::object());
    if (!grid.is_object()) fail(file, "grid", "value " + shown(grid) + " is not an object");
    check_keys(file, "grid/", grid, {"key_dim", "probe", "seed", "repetitions", "d_model", "sequence", "lr"});
    for (const char* training_axis : {"d_model", "sequence", "lr"}) {
        if (grid.contains(training_axis)) {
            fail(file, std::string("grid/") + training_axis, "this axis belongs to task 'mqar'; task 'probe' takes key_dim, probe, seed and repetitions");
        }
    }
    if (grid.contains("key_dim")) {
        for (const auto& value : axis(file, grid, "key_dim")) sweep.key_dims.push_back(integer(file, value, "grid/key_dim", 1, 1024));
    } else {
        sweep.key_dims.push_back(0);
    }
    if (grid.contains("probe")) {
        for (const auto& value : axis(file, grid, "probe")) {
            const bool known = value.is_string() && std::find(probe_names.begin(), probe_names.end(),
                                                              value.get<std::string>()) != probe_names.end();
            if (!known) {
                fail(file, "grid/probe",
                     "value " + shown(value) + " is not a probe; valid are capacity, noise, outliers, recency, overwrite, stream");
            }
            sweep.probes.push_back(value.get<std::string>());
        }
    } else {
        sweep.probes = probe_names;
    }
    if (grid.contains("seed")) {
        for (const auto& value : axis(file, grid, "seed")) {
            sweep.seeds.push_back(static_cast<std::uint64_t>(integer(file, value, "grid/seed", 0, std::int64_t{1} << 53)));
        }
    } else {
        sweep.seeds.push_back(1);
    }
    if (grid.contains("repetitions")) sweep.repetitions = static_cast<int>(integer(file, grid.at("repetitions"), "grid/repetitions", 1, 1000));

    if (root.contains("quick")) {
        if (!root.at("quick").is_boolean()) fail(file, "quick", "value " + shown(root.at("quick")) + " is not true or false");
        sweep.quick = root.at("quick").get<bool>();
    }

    if (root.contains("slurm")) {
        const auto& slurm = root.at("slurm");
        if (!slurm.is_object()) fail(file, "slurm", "value " + shown(slurm) + " is not an object");
        check_keys(file, "slurm/", slurm, {"time", "mem", "cpus_per_task", "throttle", "partition", "account", "extra"});
        sweep.slurm.time = string_field(file, slurm, "time", "slurm/", sweep.slurm.time);
        sweep.slurm.mem = string_field(file, slurm, "mem", "slurm/", sweep.slurm.mem);
        sweep.slurm.partition = string_field(file, slurm, "partition", "slurm/", "");
        sweep.slurm.account = string_field(file, slurm, "account", "slurm/", "");
        if (slurm.contains("cpus_per_task")) sweep.slurm.cpus_per_task = static_cast<int>(integer(file, slurm.at("cpus_per_task"), "slurm/cpus_per_task", 1, 1024));
        if (slurm.contains("throttle")) sweep.slurm.throttle = static_cast<int>(integer(file, slurm.at("throttle"), "slurm/throttle", 0, 100000));
        if (slurm.contains("extra")) {
            const auto& extra = slurm.at("extra");
            if (!extra.is_array()) fail(file, "slurm/extra", "value " + shown(extra) + " is not a list of strings");
            for (const auto& line : extra) {
                if (!line.is_string() || line.get<std::string>().find('\n') != std::string::npos) {
                    fail(file, "slurm/extra", "value " + shown(line) + " is not a one-line string");
                }
                sweep.slurm.extra.push_back(line.get<std::string>());
            }
        }
        for (const auto& [field, text] : {std::pair<std::string, std::string>{"time", sweep.slurm.time},
                                          {"mem", sweep.slurm.mem},
                                          {"partition", sweep.slurm.partition},
                                          {"account", sweep.slurm.account}}) {
            if (text.find_first_of(" \t\n'\"$`\\") != std::string::npos) {
                fail(file, "slurm/" + field, "value '" + text + "' contains spaces, quotes or shell characters");
            }
        }
    }

    for (std::size_t s = 0; s < sweep.specs.size(); ++s) {
        for (std::int64_t key_dim : sweep.key_dims) {
            for (std::uint64_t seed : sweep.seeds) {
                for (int repetition = 0; repetition < sweep.repetitions; ++repetition) {
                    for (const auto& probe : sweep.probes) {
                        Entry entry;
                        entry.index = sweep.entries.size();
                        entry.spec = sweep.specs[s];
                        entry.spec_name = spec_names[s];
                        entry.key_dim = key_dim;
                        entry.probe = probe;
                        entry.seed = seed;
                        entry.repetition = repetition;
                        entry.run_seed = seed + 1000003ULL * static_cast<std::uint64_t>(repetition);
                        sweep.entries.push_back(entry);
                    }
                }
            }
        }
    }
    return sweep;
}

nlohmann::json manifest_json(const Sweep& sweep) {
    nlohmann::json manifest{{"sweep", sweep.name},
                            {"file", sweep.file.string()},
                            {"task", sweep.task},
                            {"quick", sweep.quick},
                            {"count", sweep.entries.size()},
                            {"entries", nlohmann::json::array()}};
    for (const auto& entry : sweep.entries) manifest["entries"].push_back(entry.to_json());
    return manifest;
}

void write_manifest(const Sweep& sweep) {
    const fs::path path = sweep.output_dir / "manifest.json";
    const nlohmann::json manifest = manifest_json(sweep);
    if (fs::exists(path)) {
        nlohmann::json existing;
        try {
            existing = nlohmann::json::parse(std::ifstream(path));
        } catch (const nlohmann::json::exception&) {
            existing = nullptr;
        }
        if (existing.is_object() && existing.value("entries", nlohmann::json()) == manifest["entries"] &&
            existing.value("quick", !sweep.quick) == sweep.quick) {
            return;
        }
        if (existing.is_object()) {
            throw ConfigError("the manifest '" + path.string() +
                              "' lists other entries than the sweep file now gives, so the numbering would change; "
                              "give the sweep a new output_dir, or remove that folder to start again");
        }
    }
    fs::create_directories(sweep.output_dir);
    // Array tasks may start together on a new folder: each writes its own temporary file.
    write_file_atomically(path, manifest.dump(2) + "\n");
}

fs::path entry_dir(const Sweep& sweep, std::size_t index) { return sweep.output_dir / "entries" / padded(index); }
fs::path result_path(const Sweep& sweep, std::size_t index) { return entry_dir(sweep, index) / "result.json"; }
fs::path failure_path(const Sweep& sweep, std::size_t index) { return entry_dir(sweep, index) / "failed.json"; }
fs::path log_path(const Sweep& sweep, std::size_t index) {
    return sweep.output_dir / "logs" / (padded(index) + ".log");
}

EntryState entry_state(const Sweep& sweep, std::size_t index) {
    if (fs::exists(result_path(sweep, index))) return EntryState::done;
    if (fs::exists(failure_path(sweep, index))) return EntryState::failed;
    return EntryState::missing;
}

}  // namespace miras::sweep
