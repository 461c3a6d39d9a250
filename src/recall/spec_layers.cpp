// Spec files as probe targets. The probe reads each query before the token's own write, as the
// probe of `miras check` does, so a read token adds nothing to the memory it reads. The query
// scale stays the spec's own.
#include "spec_layers.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/spec_file.hpp"
#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras::recall {

namespace fs = std::filesystem;

std::vector<fs::path> spec_files_in(const fs::path& folder) {
    std::error_code failure;
    if (!fs::is_directory(folder, failure)) {
        throw InputError("specs folder '" + folder.string() + "' is not a readable folder; give --specs-dir a folder of spec files");
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(folder, failure)) {
        const fs::path& path = entry.path();
        if (entry.is_regular_file() && path.extension() == ".json" && path.filename() != "schema.json") files.push_back(path);
    }
    if (failure) throw InputError("failed to list specs folder '" + folder.string() + "' (" + failure.message() + ")");
    if (files.empty()) throw InputError("specs folder '" + folder.string() + "' holds no spec file (*.json other than schema.json)");
    std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
    return files;
}

namespace {

/// Why a layer cannot be probed with constant gates, or empty when it can: a per-token input of any
/// sign (the vectors of a rank-one correction, a separate read key) varies with the token's
/// content, so no constant stands in for it.
std::string unprobeable_reason(const AnyLayer& layer) {
    std::vector<std::string> inputs;
    for (const GateSpec& gate : layer.gates()) {
        if (gate.config.per_token && gate.range == Range::any) inputs.push_back("'" + gate.name + "'");
    }
    if (inputs.empty()) return {};
    std::string names;
    for (std::size_t i = 0; i < inputs.size(); ++i) names += (i > 0 ? (i + 1 == inputs.size() ? " and " : ", ") : "") + inputs[i];
    return "reads the per-token vector input" + std::string(inputs.size() > 1 ? "s " : " ") + names +
           ", which a constant probe gate cannot stand in for";
}

/// The probe of `miras check` against the thresholds of expect.probe, with that check's seed, so
/// that both tools give the same verdict.
ThresholdCheck judge_thresholds(const LayerSpec& spec) {
    const nlohmann::json& thresholds = spec.expect.at("probe");
    const Index pairs = thresholds.value("pairs", spec.json.at("dims").at("key").get<Index>());
    const ProbeResult probe = memorisation_probe(spec, pairs, CheckOptions{}.seed + 5);
    bool passed = std::isfinite(probe.mean_squared_error);
    std::ostringstream detail;
    detail << probe.pairs << " pairs: accuracy " << probe.accuracy;
    if (thresholds.contains("min_accuracy")) {
        const double min_accuracy = thresholds.at("min_accuracy").get<double>();
        passed = passed && probe.accuracy >= min_accuracy;
        detail << (probe.accuracy >= min_accuracy ? " >= " : " < ") << min_accuracy;
    }
    detail << ", mean squared error " << probe.mean_squared_error;
    if (thresholds.contains("max_error")) {
        const double max_error = thresholds.at("max_error").get<double>();
        passed = passed && probe.mean_squared_error <= max_error;
        detail << (probe.mean_squared_error <= max_error ? " <= " : " > ") << max_error;
    }
    return {passed, detail.str()};
}

bool declares_thresholds(const LayerSpec& spec) {
    if (!spec.expect.is_object() || !spec.expect.contains("probe")) return false;
    const nlohmann::json& probe = spec.expect.at("probe");
    return probe.contains("min_accuracy") || probe.contains("max_error");
}

}  // namespace

SpecTargets load_spec_targets(const std::vector<fs::path>& files, Index key_dim) {
    if (key_dim < 0) throw InputError("key dimension " + std::to_string(key_dim) + " is invalid; valid is 1 or more, or 0 for each spec's own");
    SpecTargets result;
    std::vector<std::string> names;
    for (const fs::path& file : files) {
        const std::string source = file.string();
        LayerSpec spec;
        try {
            spec = load_spec_file(source);
        } catch (const Error& e) {
            result.unprobed.push_back({file.stem().string(), source, e.what(), true});
            continue;
        }
        // Two files may give the same name; the file tells them apart.
        std::string name = spec.name;
        if (std::find(names.begin(), names.end(), name) != names.end()) name += " (" + file.filename().string() + ")";
        names.push_back(name);
        nlohmann::json written = written_spec(source);
        try {
            if (key_dim > 0) {
                written["dims"]["key"] = key_dim;
                written["dims"]["value"] = key_dim;
                spec = parse_spec(written, source);
            }
        } catch (const Error& e) {
            result.unprobed.push_back({name, source, "cannot be rebuilt at key dim " + std::to_string(key_dim) + ": " + e.what(), false});
            continue;
        }
        try {
            written["execution"]["read"] = "before_write";
            std::shared_ptr<const AnyLayer> layer = build_layer(parse_spec(written, source));
            if (const std::string reason = unprobeable_reason(*layer); !reason.empty()) {
                result.unprobed.push_back({name, source, reason, false});
                continue;
            }
            RecallTarget target{{name, std::move(layer), spec.probe_gates}, source, {}};
            if (declares_thresholds(spec)) target.thresholds = [spec] { return judge_thresholds(spec); };
            result.targets.push_back(std::move(target));
        } catch (const Error& e) {
            result.unprobed.push_back({name, source, e.what(), true});
        }
    }
    return result;
}

}  // namespace miras::recall
