// `miras sweep collect` merges the finished entries of a sweep into the tables of `miras recall`.
// A row is a spec, key dimension, seed and repetition, and a column is a probe at its headline
// point. It also writes summary.csv, points.csv and results.json in the sweep's output folder.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>

#include "miras/core/error.hpp"
#include "common/atomic_file.hpp"
#include "sweep.hpp"

namespace miras::sweep {

namespace {

std::string format(const char* pattern, double value) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, pattern, value);
    return buffer;
}

std::string csv_field(const std::string& text) {
    if (text.find_first_of(",\"\n") == std::string::npos) return text;
    std::string quoted = "\"";
    for (char c : text) quoted += (c == '"') ? std::string("\"\"") : std::string(1, c);
    return quoted + "\"";
}

std::string pad(std::string text, std::size_t n) {
    if (text.size() < n) text.append(n - text.size(), ' ');
    return text;
}

std::string right(const std::string& text, std::size_t n) {
    return text.size() < n ? std::string(n - text.size(), ' ') + text : " " + text;
}

/// Formats the label of a probe's headline point as `miras recall` prints it.
std::string headline_label(const std::string& probe, double x) {
    static const std::map<std::string, std::string> prefix{{"capacity", "N/d="}, {"noise", "sigma="},
                                                           {"outliers", "f="},   {"recency", "age="},
                                                           {"overwrite", "r="},  {"stream", "D="}};
    return prefix.at(probe) + format("%g", x);
}

}  // namespace

CollectReport collect(const Sweep& sweep, std::ostream& out) {
    CollectReport report;
    std::vector<std::string> rows;
    std::map<std::string, std::map<std::string, nlohmann::json>> cells;  // row -> probe -> summary cell
    nlohmann::json merged{{"sweep", sweep.name}, {"task", sweep.task}, {"quick", sweep.quick},
                          {"count", sweep.entries.size()}, {"entries", nlohmann::json::array()}};
    std::ostringstream summary, points;
    summary << "index,row,spec,key_dim,seed,repetition,probe,x_name,x,samples,accuracy,cosine,mse\n";
    points << "index,row,spec,key_dim,seed,repetition,probe,x_name,x,samples,accuracy,cosine,mse\n";
    const auto csv_row = [](const Entry& entry, const nlohmann::json& cell, const nlohmann::json& point) {
        std::ostringstream line;
        line << entry.index << ',' << csv_field(entry.row_label()) << ',' << csv_field(entry.spec_name) << ','
             << entry.key_dim << ',' << entry.seed << ',' << entry.repetition << ',' << entry.probe << ','
             << csv_field(cell.at("x_name").get<std::string>()) << ',' << format("%.10g", point.at("x").get<double>())
             << ',' << point.at("samples").get<long long>() << ',' << format("%.10g", point.at("accuracy").get<double>())
             << ',' << format("%.10g", point.at("cosine").get<double>()) << ','
             << format("%.10g", point.at("mse").get<double>()) << "\n";
        return line.str();
    };

    for (const auto& entry : sweep.entries) {
        const std::string row = entry.row_label();
        if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
        const EntryState state = entry_state(sweep, entry.index);
        if (state == EntryState::failed) report.failed.push_back(entry.index);
        if (state == EntryState::missing) report.missing.push_back(entry.index);
        if (state != EntryState::done) continue;
        nlohmann::json result;
        try {
            result = nlohmann::json::parse(std::ifstream(result_path(sweep, entry.index)));
            const nlohmann::json& cell = result.at("summary");
            cells[row][entry.probe] = cell;
            summary << csv_row(entry, cell, cell);
            for (const auto& point : result.at("curve").at("points")) points << csv_row(entry, cell, point);
        } catch (const nlohmann::json::exception& e) {
            throw InputError("result file '" + result_path(sweep, entry.index).string() + "' of entry " +
                             std::to_string(entry.index) + " is unreadable (" + e.what() +
                             "); remove it and run the entry again");
        }
        merged["entries"].push_back(result);
        ++report.done;
    }

    std::size_t width = 5;
    for (const auto& row : rows) width = std::max(width, row.size());
    const bool capacity = std::find(sweep.probes.begin(), sweep.probes.end(), "capacity") != sweep.probes.end();
    out << "miras sweep " << sweep.name << ": " << report.done << " of " << sweep.entries.size() << " entries"
        << (sweep.quick ? ", quick suite" : ", default suite") << "\n";
    const std::vector<std::pair<std::string, const char*>> metrics{
        {"accuracy", "%12.4f"}, {"cosine", "%12.4f"}, {"mse", "%12.3e"}};
    for (const auto& [metric, pattern] : metrics) {
        out << "\n" << pad(metric, width);
        for (const auto& probe : sweep.probes) out << right(probe, 12);
        if (metric == "accuracy" && capacity) out << "    cap90";
        out << "\n" << pad("", width);
        for (const auto& probe : sweep.probes) {
            std::string label = "-";
            for (const auto& row : rows) {
                const auto found = cells[row].find(probe);
                if (found != cells[row].end()) {
                    label = headline_label(probe, found->second.at("x").get<double>());
                    break;
                }
            }
            out << right(label, 12);
        }
        if (metric == "accuracy" && capacity) out << "    N/d";
        out << "\n";
        for (const auto& row : rows) {
            out << pad(row, width);
            for (const auto& probe : sweep.probes) {
                const auto found = cells[row].find(probe);
                out << (found == cells[row].end() ? right("-", 12)
                                                  : format(pattern, found->second.at(metric).get<double>()));
            }
            if (metric == "accuracy" && capacity) {
                const auto found = cells[row].find("capacity");
                out << (found == cells[row].end() ? right("-", 9)
                                                  : format("%9.3g", found->second.at("capacity_at_90").get<double>()));
            }
            out << "\n";
        }
    }

    merged["failed"] = report.failed;
    merged["missing"] = report.missing;
    fs::create_directories(sweep.output_dir);
    write_file_atomically(sweep.output_dir / "summary.csv", summary.str());
    write_file_atomically(sweep.output_dir / "points.csv", points.str());
    write_file_atomically(sweep.output_dir / "results.json", merged.dump(2) + "\n");

    for (std::size_t index : report.failed) {
        std::string error;
        try {
            error = nlohmann::json::parse(std::ifstream(failure_path(sweep, index))).at("error").get<std::string>();
        } catch (const nlohmann::json::exception&) {
            error = "(failure record unreadable)";
        }
        out << "failed: entry " << index << " (" << sweep.entries[index].row_label() << ", " << sweep.entries[index].probe
            << "): " << error << "; log: " << log_path(sweep, index).string() << "\n";
    }
    for (std::size_t index : report.missing) {
        const fs::path log = log_path(sweep, index);
        out << "missing: entry " << index << " (" << sweep.entries[index].row_label() << ", "
            << sweep.entries[index].probe << "); log: " << (fs::exists(log) ? log.string() : "none (never started)")
            << "\n";
    }
    out << "results: " << (sweep.output_dir / "summary.csv").string() << "\n";
    return report;
}

}  // namespace miras::sweep
