// The run behind `miras recall`, end to end into a temporary folder: every file is written and
// parses, the table names every layer, and a second run into the same folder is rejected.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "recall/default_layers.hpp"
#include "recall/recall_run.hpp"

namespace {

namespace fs = std::filesystem;
using miras::recall::RunOptions;

class RecallRun : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() /
                ("miras-recall-test-" + std::to_string(getpid()) + "-" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        fs::create_directories(root_);
        options_.output_dir = root_ / "run";
        options_.key_dim = 8;
        options_.quick = true;
        options_.plots = false;
        options_.seed = 5;
    }
    void TearDown() override { fs::remove_all(root_); }

    std::string run(const RunOptions& options) {
        std::ostringstream out, progress;
        miras::recall::run_recall(options, miras::recall::default_probe_layers(options.key_dim), out, progress);
        return out.str();
    }

    static std::string read(const fs::path& path) {
        std::ifstream file(path);
        std::stringstream text;
        text << file.rdbuf();
        return text.str();
    }

    fs::path root_;
    RunOptions options_;
};

TEST_F(RecallRun, WritesEveryFileAndTheyParse) {
    const std::string table = run(options_);
    const fs::path folder = options_.output_dir;
    for (const char* name : {"points.csv", "summary.csv", "results.json", "capacity.dat", "capacity.gp", "recency.dat",
                             "recency.gp"}) {
        EXPECT_TRUE(fs::is_regular_file(folder / name)) << name;
    }

    const auto json = nlohmann::json::parse(read(folder / "results.json"));
    EXPECT_EQ(json.at("seed").get<int>(), 5);
    EXPECT_EQ(json.at("key_dim").get<int>(), 8);
    const auto layers = miras::recall::default_probe_layers(8);
    EXPECT_EQ(json.at("layers").size(), layers.size());
    EXPECT_EQ(json.at("curves").size(), layers.size() * 6);
    EXPECT_EQ(json.at("summary").size(), layers.size() * 6);

    // One CSV row per point of every curve, each with the ten columns of the header.
    std::size_t points = 0;
    for (const auto& curve : json.at("curves")) points += curve.at("points").size();
    std::istringstream csv(read(folder / "points.csv"));
    std::string line;
    std::getline(csv, line);
    EXPECT_EQ(line, "spec,probe,x_name,x,samples,accuracy,cosine,mse,scaled_mse,gain");
    std::size_t rows = 0;
    while (std::getline(csv, line)) {
        ++rows;
        EXPECT_EQ(std::count(line.begin(), line.end(), ','), 9) << line;
    }
    EXPECT_EQ(rows, points);

    for (const auto& layer : layers) EXPECT_NE(table.find(layer.name), std::string::npos) << layer.name;
    EXPECT_NE(table.find(folder.string()), std::string::npos);
}

TEST_F(RecallRun, RejectsAnExistingFolder) {
    run(options_);
    const std::string before = read(options_.output_dir / "results.json");
    RunOptions again = options_;
    again.seed = 6;
    EXPECT_THROW(run(again), miras::InputError);
    EXPECT_EQ(read(options_.output_dir / "results.json"), before);
}

TEST_F(RecallRun, ForceReplacesAnExistingFolder) {
    run(options_);
    RunOptions again = options_;
    again.seed = 6;
    again.force = true;
    run(again);
    const auto json = nlohmann::json::parse(read(options_.output_dir / "results.json"));
    EXPECT_EQ(json.at("seed").get<int>(), 6);
}

TEST_F(RecallRun, SameSeedWritesIdenticalNumbers) {
    run(options_);
    RunOptions second = options_;
    second.output_dir = root_ / "second";
    run(second);
    EXPECT_EQ(read(options_.output_dir / "points.csv"), read(second.output_dir / "points.csv"));
}

TEST_F(RecallRun, LeavesNoPartialFolderBehind) {
    run(options_);
    for (const auto& entry : fs::directory_iterator(root_)) {
        EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos) << entry.path();
    }
}

TEST_F(RecallRun, DefaultFoldersNeverCollide) {
    RunOptions a = options_;
    a.output_dir.clear();
    a.results_root = root_ / "results";
    a.probes = {"capacity"};
    run(a);
    run(a);
    std::size_t folders = 0;
    for (const auto& entry : fs::directory_iterator(a.results_root)) {
        ++folders;
        EXPECT_EQ(entry.path().filename().string().rfind("recall-", 0), 0u) << entry.path();
    }
    EXPECT_EQ(folders, 2u);
}

TEST_F(RecallRun, ProbeSubsetWritesOnlyItsCurves) {
    options_.probes = {"noise", "stream"};
    run(options_);
    const auto json = nlohmann::json::parse(read(options_.output_dir / "results.json"));
    EXPECT_EQ(json.at("probes"), nlohmann::json({"noise", "stream"}));
    EXPECT_FALSE(fs::exists(options_.output_dir / "capacity.gp"));
}

TEST_F(RecallRun, PlotsWhenGnuplotIsOnThePath) {
    bool found = false;
    std::istringstream path(std::getenv("PATH") != nullptr ? std::getenv("PATH") : "");
    for (std::string entry; std::getline(path, entry, ':');) found = found || fs::exists(fs::path(entry) / "gnuplot");
    if (!found) GTEST_SKIP() << "gnuplot is not installed";
    options_.plots = true;
    options_.probes = {"capacity", "recency"};
    run(options_);
    for (const char* name : {"capacity.svg", "recency.svg"}) {
        EXPECT_NE(read(options_.output_dir / name).find("<svg"), std::string::npos) << name;
    }
    for (const char* name : {"capacity.png", "recency.png"}) {
        EXPECT_EQ(read(options_.output_dir / name).substr(1, 3), "PNG") << name;
    }
}

TEST_F(RecallRun, QuotesLayerNamesInPlotScripts) {
    auto layers = miras::recall::default_probe_layers(8);
    layers.resize(1);
    layers[0].name = "it's linear";
    options_.probes = {"capacity"};
    std::ostringstream out, progress;
    miras::recall::run_recall(options_, layers, out, progress);
    EXPECT_NE(read(options_.output_dir / "capacity.gp").find("title 'it''s linear'"), std::string::npos);
}

TEST_F(RecallRun, UnwritableFolderLeavesNothingBehind) {
    std::ofstream(root_ / "file") << "not a folder";
    options_.output_dir = root_ / "file" / "run";
    EXPECT_THROW(run(options_), miras::InputError);
    std::size_t entries = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(root_)) ++entries;
    EXPECT_EQ(entries, 1u);
}

TEST_F(RecallRun, SkipsALayerWhoseProbesFail) {
    auto layers = miras::recall::default_probe_layers(8);
    auto deltanet = std::find_if(layers.begin(), layers.end(), [](const auto& l) { return l.name == "deltanet"; });
    ASSERT_NE(deltanet, layers.end());
    deltanet->gates.clear();  // the delta rule reads its rate eta per token
    std::ostringstream out, progress;
    const auto report = miras::recall::run_recall(options_, layers, out, progress);
    ASSERT_EQ(report.skipped.size(), 1u);
    EXPECT_EQ(report.skipped[0].first, "deltanet");
    EXPECT_NE(progress.str().find("'deltanet' skipped"), std::string::npos) << progress.str();
    const auto json = nlohmann::json::parse(read(report.folder / "results.json"));
    EXPECT_EQ(json.at("layers").size(), layers.size() - 1);
    EXPECT_EQ(json.at("skipped").at(0).at("name"), "deltanet");
}

TEST_F(RecallRun, FailsWhenEveryLayerFails) {
    auto layers = miras::recall::default_probe_layers(8);
    std::erase_if(layers, [](const auto& l) { return l.name != "deltanet"; });
    ASSERT_EQ(layers.size(), 1u);
    layers[0].gates.clear();
    std::ostringstream out, progress;
    EXPECT_THROW(miras::recall::run_recall(options_, layers, out, progress), miras::InputError);
    EXPECT_FALSE(fs::exists(options_.output_dir));
}

TEST_F(RecallRun, UnknownProbeIsAnInputError) {
    options_.probes = {"capacity", "nosie"};
    EXPECT_THROW(run(options_), miras::InputError);
    EXPECT_FALSE(fs::exists(options_.output_dir));
}

}  // namespace
