// `miras recall`: every probe over every layer, a comparison table, and a results folder that is
// written under a temporary name and renamed into place once complete.
#include "recall_run.hpp"

#include "common/gnuplot_process.hpp"
#include "common/atomic_file.hpp"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace miras::recall {

namespace fs = std::filesystem;
using tasks::Probe;
using tasks::ProbeCurve;
using tasks::ProbedLayer;

namespace {

/// Removes the temporary folder on every way out; after the final rename it no longer exists.
struct StagingGuard {
    fs::path path;
    ~StagingGuard() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

struct LayerResult {
    const ProbedLayer* layer = nullptr;
    std::string source;
    std::vector<ProbeCurve> curves;
    bool judged = false;  // the layer declares thresholds
    ThresholdCheck verdict;
};

std::string format(const char* pattern, double value) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, pattern, value);
    return buffer;
}

/// Returns the index of the point of a curve that the table shows: the oldest bucket of the recency curve, otherwise
/// the point nearest to a typical setting.
std::size_t headline(const ProbeCurve& curve) {
    if (curve.points.empty()) return 0;
    if (curve.probe == Probe::recency) return curve.points.size() - 1;
    double target = 1.0;
    switch (curve.probe) {
        case Probe::capacity: target = 1.0; break;
        case Probe::noise: target = 0.5; break;
        case Probe::outliers: target = 0.1; break;
        case Probe::overwrite: target = 1.0; break;
        case Probe::stream: target = 4.0; break;
        case Probe::recency: break;
    }
    std::size_t best = 0;
    for (std::size_t i = 1; i < curve.points.size(); ++i) {
        if (std::abs(curve.points[i].x - target) < std::abs(curve.points[best].x - target)) best = i;
    }
    return best;
}

std::string headline_label(const ProbeCurve& curve) {
    static const std::map<Probe, std::string> prefix{{Probe::capacity, "N/d="}, {Probe::noise, "sigma="},
                                                     {Probe::outliers, "f="},   {Probe::recency, "age="},
                                                     {Probe::overwrite, "r="},  {Probe::stream, "D="}};
    if (curve.points.empty()) return "-";
    return prefix.at(curve.probe) + format("%g", curve.points[headline(curve)].x);
}

/// Returns the largest N/d_k up to which every capacity point has accuracy >= 0.9 (0 if the first fails).
double capacity_at_90(const ProbeCurve& curve) {
    double reached = 0.0;
    for (const auto& point : curve.points) {
        if (point.accuracy < 0.9) break;
        reached = point.x;
    }
    return reached;
}

const ProbeCurve* find_curve(const LayerResult& result, Probe probe) {
    for (const auto& curve : result.curves) {
        if (curve.probe == probe) return &curve;
    }
    return nullptr;
}

std::string csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n") == std::string::npos) return text;
    std::string quoted = "\"";
    for (char c : text) quoted += (c == '"') ? std::string("\"\"") : std::string(1, c);
    return quoted + "\"";
}

std::string utc_stamp() {
    const std::time_t now = std::time(nullptr);
    std::tm parts{};
    gmtime_r(&now, &parts);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &parts);
    return buffer;
}

fs::path choose_folder(const RunOptions& options) {
    if (!options.output_dir.empty()) {
        if (fs::exists(options.output_dir) && !options.force) {
            throw InputError("output folder '" + options.output_dir.string() +
                             "' exists; give a new --output-dir, or --force to replace it");
        }
        return options.output_dir;
    }
    const std::string base = "recall-" + utc_stamp() + "-seed" + std::to_string(options.seed);
    fs::path folder = options.results_root / base;
    for (int suffix = 2; fs::exists(folder); ++suffix) folder = options.results_root / (base + "-" + std::to_string(suffix));
    return folder;
}

using plotting::find_on_path;
using plotting::run_gnuplot;

/// Formats the curves of one probe as gnuplot data, one block per layer (gnuplot `index`) with the
/// columns x, accuracy, cosine, mse, samples, scaled mse and gain.
std::string curve_data(const std::vector<LayerResult>& results, Probe probe) {
    std::ostringstream data;
    data << "# " << tasks::probe_name(probe)
         << ": one block per layer; columns x accuracy cosine mse samples scaled_mse gain\n";
    for (const auto& result : results) {
        const ProbeCurve* curve = find_curve(result, probe);
        data << "# " << result.layer->name << "\n";
        for (const auto& p : curve->points) {
            data << format("%.10g", p.x) << ' ' << format("%.10g", p.accuracy) << ' ' << format("%.10g", p.cosine)
                 << ' ' << format("%.10g", p.mse) << ' ' << p.samples << ' ' << format("%.10g", p.scaled_mse) << ' '
                 << format("%.10g", p.gain) << "\n";
        }
        data << "\n\n";
    }
    return data.str();
}

/// Doubles single quotes, the escape inside a single-quoted gnuplot string.
std::string gnuplot_quoted(const std::string& text) {
    std::string quoted;
    for (char c : text) quoted += (c == '\'') ? std::string("''") : std::string(1, c);
    return quoted;
}

struct Panel {
    std::string ylabel;
    int column;
    bool log_y;
    std::string reference;  // an extra gnuplot function and title, or empty
};

std::string plot_script(const std::vector<LayerResult>& results, const std::string& name, const std::string& xlabel,
                        bool log_x, const std::vector<Panel>& panels) {
    // Twelve distinct colours; past twelve layers the dash pattern distinguishes them.
    static const std::vector<std::string> colours{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
    std::ostringstream body;
    body << "set multiplot layout 1," << panels.size() << "\n";
    body << "set xlabel '" << xlabel << "'\nset grid\nset key outside bottom center horizontal maxrows 4 font ',8'\n";
    body << (log_x ? "set logscale x 2\n" : "unset logscale x\n");
    for (const auto& panel : panels) {
        body << "set ylabel '" << panel.ylabel << "'\n" << (panel.log_y ? "set logscale y\n" : "unset logscale y\n");
        body << "plot ";
        for (std::size_t i = 0; i < results.size(); ++i) {
            body << (i > 0 ? ", \\\n     " : "") << "'" << name << ".dat' index " << i << " using 1:" << panel.column
                 << " with linespoints lc rgb '" << colours[i % colours.size()] << "' pt " << (i % 13) + 1 << " dt "
                 << (i / colours.size()) % 5 + 1 << " title '" << gnuplot_quoted(results[i].layer->name) << "'";
        }
        if (!panel.reference.empty()) body << ", \\\n     " << panel.reference;
        body << "\n";
    }
    body << "unset multiplot\n";

    std::ostringstream script;
    script << "# Plots " << name << ".dat (written by miras recall); run: gnuplot " << name << ".gp\n";
    script << "set terminal svg size 1100,480 font 'sans,11'\nset termoption noenhanced\nset output '" << name
           << ".svg'\n"
           << body.str();
    script << "set terminal pngcairo size 1100,480 font 'sans,9'\nset termoption noenhanced\nset output '" << name
           << ".png'\n"
           << body.str() << "unset output\n";
    return script.str();
}

nlohmann::json point_json(const tasks::ProbePoint& p) {
    return {{"x", p.x},   {"samples", p.samples},       {"accuracy", p.accuracy}, {"cosine", p.cosine},
            {"mse", p.mse}, {"scaled_mse", p.scaled_mse}, {"gain", p.gain}};
}

nlohmann::json layer_json(const LayerResult& result) {
    const ProbedLayer& probed = *result.layer;
    const AnyLayer& layer = *probed.layer;
    nlohmann::json json{{"name", probed.name},
            {"source", result.source},
            {"memory", layer.memory_name()},
            {"bias", layer.bias_name()},
            {"retention", layer.retention_name()},
            {"algorithm", layer.algorithm_name()},
            {"heads", layer.dims().heads},
            {"key_dim", layer.dims().key},
            {"value_dim", layer.dims().value},
            {"query_scale", layer.query_scale()},
            {"read", layer.options().read == ReadTiming::after_write ? "after_write" : "before_write"},
            {"probe_gates", probed.gates}};
    if (result.judged) json["thresholds"] = {{"passed", result.verdict.passed}, {"detail", result.verdict.detail}};
    return json;
}

std::string suite_name(const RunOptions& options) {
    if (options.quick) return "quick suite";
    return options.full ? "full suite" : "default suite";
}

void print_table(std::ostream& out, const RunOptions& options, const std::vector<Probe>& probes,
                 const std::vector<LayerResult>& results, const std::vector<Unprobed>& unprobed) {
    std::size_t width = 5;
    for (const auto& result : results) width = std::max(width, result.layer->name.size());
    const auto pad = [](std::string text, std::size_t n) {
        if (text.size() < n) text.append(n - text.size(), ' ');
        return text;
    };
    const auto right = [](std::string text, std::size_t n) {
        return text.size() < n ? std::string(n - text.size(), ' ') + text : " " + text;
    };
    const bool judged = std::any_of(results.begin(), results.end(), [](const LayerResult& r) { return r.judged; });
    out << "miras recall: seed " << options.seed << ", " << suite_name(options)
        << "; mse is after the least-squares gain (see docs/benchmarks.md)\n";
    const bool capacity = std::find(probes.begin(), probes.end(), Probe::capacity) != probes.end();
    const std::vector<std::pair<std::string, const char*>> metrics{
        {"accuracy", "%12.4f"}, {"cosine", "%12.4f"}, {"mse", "%12.3e"}};
    for (const auto& [metric, pattern] : metrics) {
        const bool first = metric == "accuracy";
        out << "\n" << pad(metric, width);
        if (first) out << "   H    K";
        for (Probe probe : probes) out << right(tasks::probe_name(probe), 12);
        if (first && capacity) out << "    cap90";
        if (first && judged) out << "  expect";
        out << "\n" << pad("", width);
        if (first) out << "         ";
        for (Probe probe : probes) {
            const std::string label = headline_label(*find_curve(results.front(), probe));
            out << right(label, 12);
        }
        if (first && capacity) out << "      N/d";
        out << "\n";
        for (const auto& result : results) {
            out << pad(result.layer->name, width);
            if (first) {
                const LayerDims& dims = result.layer->layer->dims();
                out << right(std::to_string(dims.heads), 4) << right(std::to_string(dims.key), 5);
            }
            for (Probe probe : probes) {
                const ProbeCurve& curve = *find_curve(result, probe);
                const auto& p = curve.points[headline(curve)];
                double value = p.scaled_mse;
                if (metric == "accuracy") value = p.accuracy;
                if (metric == "cosine") value = p.cosine;
                out << format(pattern, value);
            }
            if (first && capacity) out << format("%9.3g", capacity_at_90(*find_curve(result, Probe::capacity)));
            if (first && judged) {
                std::string verdict = "-";
                if (result.judged) verdict = result.verdict.passed ? "pass" : "FAIL";
                out << right(verdict, 8);
            }
            out << "\n";
        }
    }
    if (judged) {
        out << "\nthresholds (expect.probe, judged by the probe of miras check):\n";
        for (const auto& result : results) {
            if (!result.judged) continue;
            out << "  " << (result.verdict.passed ? "pass " : "FAIL ") << result.layer->name << ": " << result.verdict.detail
                << "\n";
        }
    }
    if (!unprobed.empty()) {
        out << "\nskipped:\n";
        for (const auto& skip : unprobed) {
            out << "  " << skip.name << (skip.error ? " (error)" : "") << ": " << skip.reason << "\n";
        }
    }
}

/// The suite of a run: the quick look, the full grid, or the default, which keeps the points that
/// shape each curve and bounds the longest sequence at 4 K pairs.
tasks::ProbeSuite suite_for(const RunOptions& options) {
    if (options.quick || options.full) return tasks::ProbeSuite::standard(options.quick);
    tasks::ProbeSuite suite = tasks::ProbeSuite::standard(false);
    suite.capacity.loads = {0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 4};
    suite.noise.sigmas = {0, 0.1, 0.2, 0.5, 1};
    suite.outliers.fractions = {0, 0.05, 0.1, 0.25};
    suite.recency.buckets = 8;
    suite.overwrite.rewrites = {1, 2, 4};
    suite.stream.distractors = {0, 1, 2, 4, 8};
    return suite;
}

Index queries_for(const RunOptions& options) {
    if (options.quick) return 128;
    return options.full ? 2048 : 1024;
}

/// The key dimension every layer shares, or 0 when they differ.
Index shared_key_dim(const std::vector<LayerResult>& results) {
    const Index first = results.front().layer->layer->dims().key;
    for (const auto& result : results) {
        if (result.layer->layer->dims().key != first) return 0;
    }
    return first;
}

}  // namespace

bool RunReport::passed() const {
    const bool load_errors = std::any_of(unprobed.begin(), unprobed.end(), [](const Unprobed& u) { return u.error; });
    return skipped.empty() && failed_thresholds.empty() && !load_errors;
}

RunReport run_recall(const RunOptions& options, const std::vector<ProbedLayer>& layers, std::ostream& out,
                     std::ostream& progress) {
    std::vector<RecallTarget> targets;
    for (const auto& layer : layers) targets.push_back({layer, {}, {}});
    return run_recall(options, targets, {}, out, progress);
}

RunReport run_recall(const RunOptions& options, const std::vector<RecallTarget>& targets,
                     const std::vector<Unprobed>& unprobed, std::ostream& out, std::ostream& progress) {
    if (targets.empty()) {
        std::string reasons;
        for (const auto& skip : unprobed) reasons += "; " + skip.name + ": " + skip.reason;
        throw InputError("no layers to probe; give at least one" + reasons);
    }
    std::vector<Probe> probes;
    if (options.probes.empty()) probes = tasks::all_probes();
    for (const auto& name : options.probes) {
        const Probe probe = tasks::probe_from_name(name);
        if (std::find(probes.begin(), probes.end(), probe) == probes.end()) probes.push_back(probe);
    }
    const fs::path folder = choose_folder(options);
    const fs::path parent = folder.has_parent_path() ? folder.parent_path() : fs::path(".");
    std::error_code failure;
    fs::create_directories(parent, failure);
    if (failure) {
        throw InputError("failed to create the folder '" + parent.string() + "' (" + failure.message() +
                         "); choose another --output-dir");
    }

    const tasks::ProbeSuite suite = suite_for(options);
    tasks::ProbeSettings settings;
    settings.seed = options.seed;
    settings.min_queries = queries_for(options);

    std::vector<LayerResult> results;
    RunReport report;
    report.unprobed = unprobed;
    for (const auto& skip : unprobed) {
        progress << (skip.error ? "error: " : "note: ") << "'" << skip.name << "' skipped: " << skip.reason << "\n";
    }
    const auto started = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < targets.size(); ++i) {
        const ProbedLayer& layer = targets[i].probed;
        LayerResult result{&layer, targets[i].source, {}, false, {}};
        const auto begin = std::chrono::steady_clock::now();
        try {
            for (Probe probe : probes) result.curves.push_back(tasks::run_probe(probe, layer, suite, settings));
        } catch (const Error& e) {
            progress << "error: layer '" << layer.name << "' skipped: " << e.what() << "\n";
            report.skipped.emplace_back(layer.name, e.what());
            continue;
        }
        if (targets[i].thresholds) {
            result.judged = true;
            try {
                result.verdict = targets[i].thresholds();
            } catch (const Error& e) {
                result.verdict = {false, std::string("error: ") + e.what()};
            }
            if (!result.verdict.passed) report.failed_thresholds.push_back(layer.name);
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        progress << "[" << (i + 1) << "/" << targets.size() << "] " << layer.name << ": " << format("%.2f", seconds)
                 << " s" << (result.judged ? (result.verdict.passed ? ", thresholds pass" : ", thresholds FAIL") : "")
                 << "\n";
        results.push_back(std::move(result));
    }
    if (results.empty()) throw InputError("every layer failed its probes (errors above); no results written");
    const double total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    // Everything goes into a hidden sibling folder first; the rename makes the run appear whole.
    const fs::path staging = parent / ("." + folder.filename().string() + ".partial-" + std::to_string(getpid()));
    fs::remove_all(staging);
    fs::create_directories(staging);
    const StagingGuard guard{staging};

    std::ostringstream points;
    const std::string header = "spec,probe,x_name,x,samples,accuracy,cosine,mse,scaled_mse,gain\n";
    points << header;
    std::ostringstream summary;
    summary << header;
    nlohmann::json json;
    json["seed"] = options.seed;
    json["suite"] = suite_name(options);
    if (const Index d = shared_key_dim(results); d > 0) json["key_dim"] = d;
    json["quick"] = options.quick;
    json["full"] = options.full;
    json["min_queries"] = settings.min_queries;
    json["seconds"] = total_seconds;
    json["probes"] = nlohmann::json::array();
    for (Probe probe : probes) json["probes"].push_back(tasks::probe_name(probe));
    json["skipped"] = nlohmann::json::array();
    for (const auto& [name, error] : report.skipped) json["skipped"].push_back({{"name", name}, {"error", error}});
    for (const auto& skip : unprobed) {
        json["skipped"].push_back({{"name", skip.name}, {"source", skip.source}, {skip.error ? "error" : "reason", skip.reason}});
    }
    json["failed_thresholds"] = report.failed_thresholds;
    json["layers"] = nlohmann::json::array();
    json["curves"] = nlohmann::json::array();
    json["summary"] = nlohmann::json::array();
    for (const auto& result : results) {
        json["layers"].push_back(layer_json(result));
        for (const auto& curve : result.curves) {
            nlohmann::json curve_json{{"spec", result.layer->name},
                                      {"probe", tasks::probe_name(curve.probe)},
                                      {"x_name", curve.x_name},
                                      {"points", nlohmann::json::array()}};
            for (const auto& p : curve.points) {
                curve_json["points"].push_back(point_json(p));
                points << csv_field(result.layer->name) << ',' << tasks::probe_name(curve.probe) << ','
                       << csv_field(curve.x_name) << ',' << format("%.10g", p.x) << ',' << p.samples << ','
                       << format("%.10g", p.accuracy) << ',' << format("%.10g", p.cosine) << ','
                       << format("%.10g", p.mse) << ',' << format("%.10g", p.scaled_mse) << ','
                       << format("%.10g", p.gain) << "\n";
            }
            json["curves"].push_back(curve_json);
            const auto& p = curve.points[headline(curve)];
            summary << csv_field(result.layer->name) << ',' << tasks::probe_name(curve.probe) << ','
                    << csv_field(curve.x_name) << ',' << format("%.10g", p.x) << ',' << p.samples << ','
                    << format("%.10g", p.accuracy) << ',' << format("%.10g", p.cosine) << ',' << format("%.10g", p.mse)
                    << ',' << format("%.10g", p.scaled_mse) << ',' << format("%.10g", p.gain)
                    << "\n";
            nlohmann::json cell = point_json(p);
            cell["spec"] = result.layer->name;
            cell["probe"] = tasks::probe_name(curve.probe);
            cell["x_name"] = curve.x_name;
            if (curve.probe == Probe::capacity) cell["capacity_at_90"] = capacity_at_90(curve);
            json["summary"].push_back(cell);
        }
    }
    write_file_atomically(staging / "points.csv", points.str());
    write_file_atomically(staging / "summary.csv", summary.str());
    write_file_atomically(staging / "results.json", json.dump(2) + "\n");

    std::vector<std::string> scripts;
    const auto has = [&](Probe probe) { return std::find(probes.begin(), probes.end(), probe) != probes.end(); };
    if (has(Probe::capacity)) {
        write_file_atomically(staging / "capacity.dat", curve_data(results, Probe::capacity));
        // The Hebbian closed form depends on d_k, so it is drawn only when every layer shares one.
        const Index d = shared_key_dim(results);
        const std::string hebbian = d == 0 ? std::string() : "1/sqrt(1 + x - 1.0/" + std::to_string(d) +
                                    ") with lines dashtype 2 lc rgb 'black' title 'Hebbian closed form'";
        write_file_atomically(staging / "capacity.gp",
                     plot_script(results, "capacity", "N / d_k", true,
                                 {{"retrieval accuracy", 2, false, ""}, {"cosine(read, value)", 3, false, hebbian}}));
        scripts.push_back("capacity.gp");
    }
    if (has(Probe::recency)) {
        write_file_atomically(staging / "recency.dat", curve_data(results, Probe::recency));
        write_file_atomically(staging / "recency.gp",
                     plot_script(results, "recency", "age (pairs written after the pair)", false,
                                 {{"retrieval accuracy", 2, false, ""}, {"mean squared error after the gain", 6, true, ""}}));
        scripts.push_back("recency.gp");
    }
    if (options.plots && !scripts.empty()) {
        const std::string gnuplot = find_on_path("gnuplot");
        if (gnuplot.empty()) {
            progress << "note: gnuplot is not on the PATH; plots skipped (the .gp scripts are in the results folder)\n";
        }
        for (const auto& script : gnuplot.empty() ? std::vector<std::string>{} : scripts) {
            const int status = run_gnuplot(gnuplot, staging, script);
            if (status != 0) progress << "note: gnuplot " << script << " exited with status " << status << "\n";
        }
    }

    if (fs::exists(folder)) {
        if (!options.force) {
            fs::remove_all(staging);
            throw InputError("output folder '" + folder.string() + "' appeared during the run; results not written");
        }
        fs::remove_all(folder);
    }
    fs::rename(staging, folder);

    print_table(out, options, probes, results, unprobed);
    out << "\nresults: " << folder.string() << "\n";
    progress << "done in " << format("%.1f", total_seconds) << " s\n";
    report.folder = folder;
    return report;
}

}  // namespace miras::recall
