// `miras recall` over spec files, end to end into a temporary folder. Covered: a folder's spec files
// in name order, a layer that cannot be probed listed with its reason, declared thresholds, the key
// dimension override, and the error after the gain, which makes specs of any query scale comparable.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "recall/recall_run.hpp"
#include "recall/spec_layers.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using miras::recall::RunOptions;

const fs::path kSpecs = fs::path(MIRAS_SOURCE_DIR) / "specs";

/// Returns DeltaNet with H = 1, K = V = 8 and eta = 1 at the probes, merged with `extra`.
json delta_spec(const std::string& name, const json& extra = json::object()) {
    json spec = {{"name", name},
                 {"memory", {{"type", "matrix"}}},
                 {"attentional_bias", {{"type", "l2"}}},
                 {"retention", {{"type", "none"}}},
                 {"algorithm", {{"type", "gd"}, {"rate", {{"gate", "per_token"}, {"axis", "head"}}}}},
                 {"dims", {{"heads", 1}, {"key", 8}, {"value", 8}}}};
    spec.merge_patch(extra);
    return spec;
}

class RecallSpecs : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() / ("miras-recall-specs-" + std::to_string(std::random_device{}()));
        fs::create_directories(root_ / "specs");
        options_.output_dir = root_ / "run";
        options_.quick = true;
        options_.plots = false;
        options_.seed = 3;
        options_.probes = {"capacity", "recency"};
    }
    void TearDown() override { fs::remove_all(root_); }

    fs::path write_spec(const std::string& file, const json& spec) const {
        const fs::path path = root_ / "specs" / file;
        std::ofstream(path) << spec.dump(2);
        return path;
    }

    miras::recall::RunReport run(const std::vector<fs::path>& files, miras::Index key_dim = 0) {
        const auto loaded = miras::recall::load_spec_targets(files, key_dim);
        std::ostringstream out, progress;
        auto report = miras::recall::run_recall(options_, loaded.targets, loaded.unprobed, out, progress);
        table_ = out.str();
        return report;
    }

    json results() const { return json::parse(std::ifstream(options_.output_dir / "results.json")); }

    fs::path root_;
    RunOptions options_;
    std::string table_;
};

TEST_F(RecallSpecs, FolderListsSpecsInNameOrder) {
    write_spec("b.json", delta_spec("b"));
    write_spec("a.json", delta_spec("a"));
    write_spec("schema.json", json::object());
    std::ofstream(root_ / "specs" / "notes.txt") << "not a spec";
    const auto files = miras::recall::spec_files_in(root_ / "specs");
    ASSERT_EQ(files.size(), 2u);
    EXPECT_EQ(files[0].filename(), "a.json");
    EXPECT_EQ(files[1].filename(), "b.json");
}

TEST_F(RecallSpecs, AFolderWithoutSpecsIsAnInputError) {
    write_spec("schema.json", json::object());
    EXPECT_THROW(miras::recall::spec_files_in(root_ / "specs"), miras::InputError);
    EXPECT_THROW(miras::recall::spec_files_in(root_ / "missing"), miras::InputError);
}

TEST_F(RecallSpecs, RunsEndToEndAndListsSkipped) {
    const std::vector<fs::path> files{kSpecs / "deltanet.json", kSpecs / "mesanet.json", kSpecs / "rwkv7.json"};
    const auto report = run(files);
    EXPECT_TRUE(report.passed());

    const json out = results();
    ASSERT_EQ(out.at("layers").size(), 2u);
    EXPECT_EQ(out.at("layers")[0].at("name"), "deltanet");
    EXPECT_EQ(out.at("layers")[1].at("name"), "mesanet");
    // The spec's own dims and probe gates.
    EXPECT_EQ(out.at("layers")[1].at("heads"), 2);
    EXPECT_EQ(out.at("layers")[1].at("key_dim"), 8);
    EXPECT_EQ(out.at("layers")[1].at("probe_gates").at("g"), -0.01);
    EXPECT_EQ(out.at("layers")[0].at("read"), "before_write");
    EXPECT_EQ(out.at("curves").size(), 4u);

    ASSERT_EQ(report.unprobed.size(), 1u);
    EXPECT_EQ(report.unprobed[0].name, "rwkv7");
    EXPECT_FALSE(report.unprobed[0].error);
    EXPECT_NE(report.unprobed[0].reason.find("'a' and 'b'"), std::string::npos) << report.unprobed[0].reason;
    ASSERT_EQ(out.at("skipped").size(), 1u);
    EXPECT_EQ(out.at("skipped")[0].at("name"), "rwkv7");
    EXPECT_NE(table_.find("skipped:\n  rwkv7: reads the per-token vector inputs"), std::string::npos) << table_;
    // deltanet.json declares max_error 1e-20 for one pair, which the delta rule meets exactly.
    EXPECT_NE(table_.find("pass deltanet"), std::string::npos) << table_;
}

TEST_F(RecallSpecs, FailedThresholdFailsTheRun) {
    // Hebbian memory of 64 random pairs in R^8: crosstalk makes perfect recall impossible.
    json spec = delta_spec("crowded", {{"attentional_bias", {{"type", "dot_product"}}},
                                       {"expect", {{"probe", {{"pairs", 64}, {"min_accuracy", 0.99}}}}}});
    const auto report = run({write_spec("crowded.json", spec), kSpecs / "deltanet.json"});
    EXPECT_FALSE(report.passed());
    ASSERT_EQ(report.failed_thresholds.size(), 1u);
    EXPECT_EQ(report.failed_thresholds[0], "crowded");
    EXPECT_NE(table_.find("FAIL crowded: 64 pairs"), std::string::npos) << table_;
    EXPECT_EQ(results().at("failed_thresholds"), json::array({"crowded"}));
}

TEST_F(RecallSpecs, AFileThatDoesNotLoadIsAnError) {
    std::ofstream(root_ / "specs" / "broken.json") << "{\"name\": ";
    const auto report = run({root_ / "specs" / "broken.json", kSpecs / "deltanet.json"});
    EXPECT_FALSE(report.passed());
    ASSERT_EQ(report.unprobed.size(), 1u);
    EXPECT_TRUE(report.unprobed[0].error);
    EXPECT_NE(table_.find("broken (error)"), std::string::npos) << table_;
}

TEST_F(RecallSpecs, KeyDimOverrideRebuildsTheSpec) {
    // A fixed decay of H * K = 8 values, one per key channel, fits only K = 8: that spec cannot be rebuilt.
    const json decays = json::array({-0.1, -0.1, -0.1, -0.1, -0.2, -0.2, -0.2, -0.2});
    json per_channel = delta_spec("per_channel", {{"retention", {{"type", "decay"}, {"gate", {{"values", decays}, {"axis", "key"}}}}}});
    const auto report = run({write_spec("delta.json", delta_spec("delta")), write_spec("pc.json", per_channel)}, 16);
    EXPECT_TRUE(report.passed());
    const json out = results();
    ASSERT_EQ(out.at("layers").size(), 1u);
    EXPECT_EQ(out.at("layers")[0].at("key_dim"), 16);
    EXPECT_EQ(out.at("layers")[0].at("value_dim"), 16);
    ASSERT_EQ(report.unprobed.size(), 1u);
    EXPECT_EQ(report.unprobed[0].name, "per_channel");
    EXPECT_NE(report.unprobed[0].reason.find("cannot be rebuilt at key dim 16"), std::string::npos)
        << report.unprobed[0].reason;
}

TEST_F(RecallSpecs, ScaledErrorIgnoresQueryScale) {
    // Hebbian recall is a linear read, so a query scale multiplies every read by one number.
    const json hebbian = {{"attentional_bias", {{"type", "dot_product"}}}};
    json unit = delta_spec("unit", hebbian), quarter = delta_spec("quarter", hebbian);
    unit["execution"] = {{"query_scale", 1.0}};
    quarter["execution"] = {{"query_scale", 0.25}};
    run({write_spec("unit.json", unit), write_spec("quarter.json", quarter)});
    const json curves = results().at("curves");
    const json& a = curves[0].at("points");
    const json& b = curves[2].at("points");
    ASSERT_EQ(curves[2].at("spec"), "quarter");
    for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].at("accuracy"), b[i].at("accuracy")) << "point " << i;
        EXPECT_NEAR(a[i].at("scaled_mse").get<double>(), b[i].at("scaled_mse").get<double>(), 1e-12) << "point " << i;
        EXPECT_NEAR(b[i].at("gain").get<double>(), 4.0 * a[i].at("gain").get<double>(), 1e-9) << "point " << i;
        EXPECT_NE(a[i].at("mse"), b[i].at("mse")) << "point " << i;
    }
}

TEST(RecallSpecFiles, SpecWithEquivalentToLoads) {
    // Parsing rewrites expect.equivalent_to, so the probe must rebuild from the file as written.
    for (const miras::Index key_dim : {miras::Index{0}, miras::Index{4}}) {
        const auto loaded = miras::recall::load_spec_targets({kSpecs / "zero_decay_delta.json"}, key_dim);
        EXPECT_EQ(loaded.targets.size(), 1u) << "key dim " << key_dim;
        EXPECT_TRUE(loaded.unprobed.empty()) << (loaded.unprobed.empty() ? "" : loaded.unprobed[0].reason);
    }
}

}  // namespace
