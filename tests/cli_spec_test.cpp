// The spec subcommands of the miras tool, run as a user runs them: exit statuses (0 success,
// 1 failed check, 2 bad usage or input), the output file of `miras run` against values worked out
// by hand, and the refusal to overwrite an output file.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class Cli : public ::testing::Test {
protected:
    void SetUp() override {
        if (std::string(MIRAS_CLI).empty()) GTEST_SKIP() << "the miras tool is not built (MIRAS_BUILD_CLI=OFF)";
        dir_ = fs::temp_directory_path() / ("miras_cli_test_" + std::to_string(std::random_device{}()));
        fs::create_directories(dir_);
        // Linear attention with H = 1, K = V = 2 and query scale 1: W_t = W_{t-1} + v_t k_t^T, o_t = W_t q_t.
        write("tiny.json", R"({"name": "tiny", "memory": {"type": "matrix"}, "attentional_bias": {"type": "dot_product"},
            "retention": {"type": "none"}, "algorithm": {"type": "gd"}, "dims": {"heads": 1, "key": 2, "value": 2},
            "execution": {"query_scale": 1}})");
        write("input.json", R"({"inputs": {"q": {"shape": [1, 2, 1, 2], "data": [1, 0, 1, 1]},
            "k": {"shape": [1, 2, 1, 2], "data": [1, 0, 0, 1]}, "v": {"shape": [1, 2, 1, 2], "data": [1, 2, 3, 4]}}})");
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    void write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }
    json read(const std::string& name) const { return json::parse(std::ifstream(dir_ / name)); }

    int miras(const std::string& arguments) const {
        const std::string command = std::string(MIRAS_CLI) + " " + arguments + " > " + path("stdout.txt") + " 2> " +
                                    path("stderr.txt");
        const int status = std::system(command.c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    fs::path dir_;
};

TEST_F(Cli, RunWritesTheHandComputedOutputAndState) {
    ASSERT_EQ(miras("run " + path("tiny.json") + " --input " + path("input.json") + " --output " + path("out.json")), 0);
    const json out = read("out.json");
    // W_1 = [1 0; 2 0], o_1 = W_1 [1, 0] = [1, 2]; W_2 = [1 3; 2 4], o_2 = W_2 [1, 1] = [4, 6].
    EXPECT_EQ(out["outputs"]["o"]["data"], json::array({1.0, 2.0, 4.0, 6.0}));
    EXPECT_EQ(out["state"]["W"]["data"], json::array({1.0, 3.0, 2.0, 4.0}));
    EXPECT_EQ(out["state"]["W"]["shape"], json::array({1, 1, 2, 2}));
}

TEST_F(Cli, RunStartsFromAGivenState) {
    write("resume.json", R"({"inputs": {"q": {"shape": [1, 1, 1, 2], "data": [0, 1]},
        "k": {"shape": [1, 1, 1, 2], "data": [1, 0]}, "v": {"shape": [1, 1, 1, 2], "data": [5, 6]}},
        "state": {"W": {"shape": [1, 1, 2, 2], "data": [1, 3, 2, 4]}}})");
    ASSERT_EQ(miras("run " + path("tiny.json") + " --input " + path("resume.json") + " --output " + path("out.json")), 0);
    // W = [1 3; 2 4] + [5; 6] [1 0] = [6 3; 8 4], o = W [0, 1] = [3, 4].
    EXPECT_EQ(read("out.json")["outputs"]["o"]["data"], json::array({3.0, 4.0}));
}

TEST_F(Cli, RunRefusesToOverwriteWithoutForce) {
    write("out.json", "keep");
    EXPECT_EQ(miras("run " + path("tiny.json") + " --input " + path("input.json") + " --output " + path("out.json")), 2);
    std::string kept;
    std::ifstream(path("out.json")) >> kept;
    EXPECT_EQ(kept, "keep");
}

TEST_F(Cli, RunOverwritesWithForce) {
    write("out.json", "old");
    EXPECT_EQ(miras("run " + path("tiny.json") + " --input " + path("input.json") + " --output " + path("out.json") +
                    " --force"),
              0);
    EXPECT_EQ(read("out.json")["outputs"]["o"]["data"].size(), 4u);
}

TEST_F(Cli, RunRejectsAnInputTheLayerDoesNotRead) {
    write("extra.json", R"({"inputs": {"q": {"shape": [1, 1, 1, 2], "data": [0, 1]},
        "k": {"shape": [1, 1, 1, 2], "data": [1, 0]}, "v": {"shape": [1, 1, 1, 2], "data": [5, 6]},
        "eta": {"shape": [1, 1, 1], "data": [1]}}})");
    EXPECT_EQ(miras("run " + path("tiny.json") + " --input " + path("extra.json") + " --output " + path("out.json")), 2);
    EXPECT_FALSE(fs::exists(path("out.json")));
}

TEST_F(Cli, CheckExitsZeroForAGoodSpec) { EXPECT_EQ(miras("check " + path("tiny.json")), 0); }

TEST_F(Cli, CheckExitsOneForAFailedCheck) {
    write("unstable.json", R"({"name": "unstable", "memory": {"type": "matrix"}, "attentional_bias": {"type": "l2"},
        "retention": {"type": "none"}, "algorithm": {"type": "gd", "rate": {"gate": "per_token"}},
        "dims": {"heads": 1, "key": 4, "value": 4}, "probe": {"gates": {"eta": 100}}})");
    EXPECT_EQ(miras("check " + path("unstable.json")), 1);
}

TEST_F(Cli, CheckExitsTwoForAnInvalidSpec) {
    write("invalid.json", R"({"name": "invalid"})");
    EXPECT_EQ(miras("check " + path("invalid.json")), 2);
}

TEST_F(Cli, DescribeAndListSucceed) {
    EXPECT_EQ(miras("describe " + path("tiny.json")), 0);
    EXPECT_EQ(miras("list"), 0);
}

TEST_F(Cli, EverySubcommandHasHelp) {
    for (const char* command : {"list", "describe", "check", "run", "recall"}) {
        EXPECT_EQ(miras(std::string(command) + " --help"), 0) << command;
    }
}

TEST_F(Cli, BadUsageExitsTwo) {
    EXPECT_EQ(miras(""), 2);
    EXPECT_EQ(miras("run " + path("tiny.json")), 2);
    EXPECT_EQ(miras("describe " + path("missing.json")), 2);
}

std::string text_of(const fs::path& file) {
    std::ifstream in(file);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(Cli, RecallProbesSpecFilesAndListsTheSkipped) {
    const fs::path specs = fs::path(MIRAS_SOURCE_DIR) / "specs";
    const std::string quick = " --quick --probes capacity --no-plots --output-dir " + path("recall");
    ASSERT_EQ(miras("recall --spec " + path("tiny.json") + " " + (specs / "rwkv7.json").string() + quick), 0)
        << text_of(path("stderr.txt"));
    const std::string table = text_of(path("stdout.txt"));
    EXPECT_NE(table.find("tiny"), std::string::npos) << table;
    EXPECT_NE(table.find("skipped:\n  rwkv7: "), std::string::npos) << table;
    EXPECT_EQ(read("recall/results.json")["layers"].size(), 1u);
}

TEST_F(Cli, RecallExitsOneWhenADeclaredThresholdFails) {
    // Hebbian memory of 64 random pairs in R^2 cannot recall them all.
    write("crowded.json", R"({"name": "crowded", "memory": {"type": "matrix"}, "attentional_bias": {"type": "dot_product"},
        "retention": {"type": "none"}, "algorithm": {"type": "gd"}, "dims": {"heads": 1, "key": 2, "value": 2},
        "expect": {"probe": {"pairs": 64, "min_accuracy": 0.99}}})");
    EXPECT_EQ(miras("recall --spec " + path("crowded.json") + " --quick --probes capacity --no-plots --output-dir " +
                    path("recall")),
              1);
    EXPECT_NE(text_of(path("stdout.txt")).find("FAIL crowded"), std::string::npos) << text_of(path("stdout.txt"));
}

TEST_F(Cli, RecallRunsOverAFolderOfSpecs) {
    fs::create_directories(dir_ / "specs");
    fs::copy_file(dir_ / "tiny.json", dir_ / "specs" / "tiny.json");
    write("specs/schema.json", "{}");
    ASSERT_EQ(miras("recall --specs-dir " + path("specs") + " --quick --probes recency --no-plots --output-dir " +
                    path("recall")),
              0)
        << text_of(path("stderr.txt"));
    EXPECT_EQ(read("recall/results.json")["layers"][0]["name"], "tiny");
}

}  // namespace
