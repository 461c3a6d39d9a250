// Result files of `miras train`, each written under a temporary name and renamed into place.
#include "train_output.hpp"

#include "common/gnuplot_process.hpp"
#include "common/atomic_file.hpp"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <ostream>
#include <sstream>

#include "miras/core/error.hpp"

namespace miras::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string g17(double x) {
    char buffer[40];
    std::snprintf(buffer, sizeof buffer, "%.17g", x);
    return buffer;
}

using plotting::find_on_path;
using plotting::run_gnuplot;

/// Returns the gnuplot script of accuracy.dat: test accuracy against step, one line per learning rate.
std::string plot_script(const TrainReport& report, const std::string& title) {
    static const std::vector<std::string> colours{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
    std::ostringstream body;
    body << "set title '" << title << "'\nset xlabel 'step'\nset ylabel 'test accuracy'\nset yrange [0:1.02]\n"
         << "set grid\nset key outside right top\n";
    body << "plot ";
    for (std::size_t i = 0; i < report.runs.size(); ++i) {
        char lr[32];
        std::snprintf(lr, sizeof lr, "%g", report.runs[i].lr);
        body << (i > 0 ? ", \\\n     " : "") << "'accuracy.dat' index " << i << " using 1:2 with linespoints lc rgb '"
             << colours[i % colours.size()] << "' pt " << (i % 13) + 1 << " title 'lr " << lr << "'";
    }
    body << "\n";
    std::ostringstream script;
    script << "# Plots accuracy.dat (written by miras train); run: gnuplot accuracy.gp\n";
    script << "set terminal svg size 800,480 font 'sans,11'\nset termoption noenhanced\nset output 'accuracy.svg'\n"
           << body.str();
    script << "set terminal pngcairo size 800,480 font 'sans,9'\nset termoption noenhanced\nset output 'accuracy.png'\n"
           << body.str() << "unset output\n";
    return script.str();
}

/// Doubles single quotes, the escape inside a single-quoted gnuplot string.
std::string gnuplot_quoted(const std::string& text) {
    std::string quoted;
    for (char c : text) quoted += (c == '\'') ? std::string("''") : std::string(1, c);
    return quoted;
}

}  // namespace

void write_results(const fs::path& folder, const json& record, const TrainReport& report, bool plots,
                   std::ostream& progress) {
    std::ostringstream evals;
    evals << "lr,step,epoch,learning_rate,train_loss,test_loss,test_accuracy\n";
    std::ostringstream summary;
    summary << "lr,best_accuracy,best_step,final_accuracy,final_test_loss,steps,early_stopped,diverged,seconds,"
               "tokens_per_second,layer_share,projection_share\n";
    std::ostringstream data;
    data << "# test accuracy against step: one block per learning rate; columns step accuracy test_loss\n";

    json results = record;
    results["runs"] = json::array();
    for (const LrRun& run : report.runs) {
        const double tokens_per_second = run.seconds > 0 ? run.train_tokens / run.seconds : 0.0;
        // Shares of the step time: inside the layers, and in the rest of the mixers.
        const double layer_share = run.seconds > 0 ? run.layer_seconds / run.seconds : 0.0;
        const double projection_share = run.seconds > 0 ? (run.mixer_seconds - run.layer_seconds) / run.seconds : 0.0;
        json entry{{"lr", run.lr},
                   {"steps", run.steps_done},
                   {"early_stopped", run.early_stopped},
                   {"diverged", run.diverged},
                   {"best_accuracy", run.best_accuracy()},
                   {"best_step", run.best_step()},
                   {"seconds", run.seconds},
                   {"tokens_per_second", tokens_per_second},
                   {"layer_seconds", run.layer_seconds},
                   {"mixer_seconds", run.mixer_seconds},
                   {"layer_share", layer_share},
                   {"projection_share", projection_share},
                   {"evals", json::array()}};
        if (run.diverged) entry["diverged_message"] = run.diverged_message;
        data << "# lr " << g17(run.lr) << "\n";
        for (const EvalRow& row : run.evals) {
            entry["evals"].push_back({{"step", row.step},
                                      {"epoch", row.epoch},
                                      {"learning_rate", row.learning_rate},
                                      {"train_loss", row.train_loss},
                                      {"test_loss", row.test_loss},
                                      {"test_accuracy", row.test_accuracy}});
            evals << g17(run.lr) << ',' << row.step << ',' << g17(row.epoch) << ',' << g17(row.learning_rate) << ','
                  << g17(row.train_loss) << ',' << g17(row.test_loss) << ',' << g17(row.test_accuracy) << "\n";
            data << row.step << ' ' << g17(row.test_accuracy) << ' ' << g17(row.test_loss) << "\n";
        }
        data << "\n\n";
        const bool any = !run.evals.empty();
        entry["final_accuracy"] = any ? run.evals.back().test_accuracy : 0.0;
        entry["final_test_loss"] = any ? run.evals.back().test_loss : 0.0;
        summary << g17(run.lr) << ',' << g17(run.best_accuracy()) << ',' << run.best_step() << ','
                << g17(any ? run.evals.back().test_accuracy : 0.0) << ',' << g17(any ? run.evals.back().test_loss : 0.0)
                << ',' << run.steps_done << ',' << (run.early_stopped ? 1 : 0) << ',' << (run.diverged ? 1 : 0) << ','
                << g17(run.seconds) << ',' << g17(tokens_per_second) << ',' << g17(layer_share) << ','
                << g17(projection_share) << "\n";
        results["runs"].push_back(entry);
    }
    const LrRun& best = report.runs.at(report.best());
    results["best"] = {{"lr", best.lr}, {"accuracy", best.best_accuracy()}, {"step", best.best_step()}};

    write_file_atomically(folder / "evals.csv", evals.str());
    write_file_atomically(folder / "summary.csv", summary.str());
    write_file_atomically(folder / "accuracy.dat", data.str());
    const std::string name = record.at("spec").value("name", std::string("spec"));
    write_file_atomically(folder / "accuracy.gp", plot_script(report, "MQAR: " + gnuplot_quoted(name)));
    if (plots) {
        const std::string gnuplot = find_on_path("gnuplot");
        if (gnuplot.empty()) {
            progress << "note: gnuplot is not on the PATH; plot skipped (accuracy.gp is in the results folder)\n";
        } else if (const int status = run_gnuplot(gnuplot, folder, "accuracy.gp"); status != 0) {
            progress << "note: gnuplot accuracy.gp exited with status " << status << "\n";
        }
    }
    // results.json last: its presence marks a complete run.
    write_file_atomically(folder / "results.json", results.dump(2) + "\n");
}

}  // namespace miras::train
