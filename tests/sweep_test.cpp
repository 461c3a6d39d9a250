// Benchmark sweeps. The grid expands into a stable numbered manifest, and bad sweep files are
// rejected by field. An entry runs once and matches the Hebbian closed form. A local sweep stopped
// midway finishes only the rest, and collect names failed and missing entries. A job array on a
// single-node Slurm cluster (loopback only) collects to the same table as a local run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "miras/core/error.hpp"
#include "sweep/sweep.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string specs_dir = std::string(MIRAS_SOURCE_DIR) + "/specs/";

class SweepTest : public ::testing::Test {
protected:
    void SetUp() override {
        // A parameterised test's name contains '/', which must not make a nested folder.
        std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
        std::replace(name.begin(), name.end(), '/', '_');
        dir_ = fs::temp_directory_path() / ("miras_sweep_test_" + std::to_string(getpid()) + "_" + name);
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    void write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }
    std::string read(const fs::path& file) const {
        std::ifstream stream(file);
        std::stringstream text;
        text << stream.rdbuf();
        return text.str();
    }

    /// Runs the miras tool with a time limit; stdout goes to out.txt, stderr to err.txt.
    int miras(const std::string& arguments, const std::string& environment = "") const {
        const std::string command = environment + " timeout 600 " + std::string(MIRAS_CLI) + " " + arguments + " > " +
                                    path("out.txt") + " 2> " + path("err.txt");
        const int status = std::system(command.c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::string out() const { return read(path("out.txt")); }
    /// Returns the result file of entry `index` in the folder `output`.
    std::string result(const std::string& output, int index) const {
        char name[32];
        std::snprintf(name, sizeof name, "%05d", index);
        return path(output + "/entries/" + name + "/result.json");
    }
    std::string err() const { return read(path("err.txt")); }

    /// Returns a quick probe sweep over linear attention and DeltaNet.
    std::string small_sweep(const std::string& name, const std::string& probes, const std::string& extra = "") const {
        return R"({"name": ")" + name + R"(", "task": "probe", "output_dir": "out-)" + name + R"(",
            "specs": [")" + specs_dir + R"(linear_attention.json", ")" + specs_dir + R"(deltanet.json"],
            "grid": {"key_dim": [8], "probe": )" + probes + R"(, "seed": [3]}, "quick": true)" + extra + "}";
    }

    fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// The manifest

TEST_F(SweepTest, GridExpandsInTheDocumentedOrder) {
    write("grid.json", R"({"name": "grid", "specs": [")" + specs_dir + R"(linear_attention.json", ")" + specs_dir +
                           R"(deltanet.json"], "grid": {"key_dim": [4, 8], "probe": ["capacity", "recency"],
                           "seed": [1, 2], "repetitions": 2}})");
    const miras::sweep::Sweep sweep = miras::sweep::load_sweep(path("grid.json"));
    ASSERT_EQ(sweep.entries.size(), 2u * 2u * 2u * 2u * 2u);
    // Spec, key_dim, seed, repetition, probe, the last varying fastest: (1, 8, 2, 1, recency) is
    // ((((1 * 2 + 1) * 2 + 1) * 2 + 1) * 2 + 1) = 31, and (0, 8, 1, 1, capacity) is 10.
    const auto& last = sweep.entries[31];
    EXPECT_EQ(last.spec_name, "deltanet");
    EXPECT_EQ(last.key_dim, 8);
    EXPECT_EQ(last.seed, 2u);
    EXPECT_EQ(last.repetition, 1);
    EXPECT_EQ(last.probe, "recency");
    EXPECT_EQ(last.run_seed, 2u + 1000003u);
    const auto& tenth = sweep.entries[10];
    EXPECT_EQ(tenth.spec_name, "linear_attention");
    EXPECT_EQ(tenth.key_dim, 8);
    EXPECT_EQ(tenth.seed, 1u);
    EXPECT_EQ(tenth.repetition, 1);
    EXPECT_EQ(tenth.probe, "capacity");
    for (std::size_t i = 0; i < sweep.entries.size(); ++i) EXPECT_EQ(sweep.entries[i].index, i);
}

TEST_F(SweepTest, PlanIsStableAndWritesTheManifest) {
    write("plan.json", small_sweep("plan", R"(["capacity", "noise", "recency"])"));
    ASSERT_EQ(miras("sweep plan " + path("plan.json")), 0) << err();
    const std::string first = out();
    const json manifest = json::parse(read(path("out-plan/manifest.json")));
    ASSERT_EQ(miras("sweep plan " + path("plan.json")), 0) << err();
    EXPECT_EQ(out(), first);
    EXPECT_EQ(json::parse(read(path("out-plan/manifest.json"))), manifest);
    ASSERT_EQ(manifest["count"], 6);
    EXPECT_EQ(manifest["entries"][4]["spec_name"], "deltanet");
    EXPECT_EQ(manifest["entries"][4]["probe"], "noise");
    EXPECT_NE(first.find("     4  deltanet"), std::string::npos) << first;
}

TEST_F(SweepTest, AChangedGridIsRejectedAgainstTheOldManifest) {
    write("change.json", small_sweep("change", R"(["capacity"])"));
    ASSERT_EQ(miras("sweep plan " + path("change.json")), 0) << err();
    write("change.json", small_sweep("change", R"(["recency", "capacity"])"));
    EXPECT_EQ(miras("sweep plan " + path("change.json")), 2);
    EXPECT_NE(err().find("numbering would change"), std::string::npos) << err();
}

TEST_F(SweepTest, MqarIsAcceptedByNameButNotAvailable) {
    write("mqar.json", R"({"name": "mqar", "task": "mqar", "specs": [")" + specs_dir + R"(deltanet.json"]})");
    try {
        miras::sweep::load_sweep(path("mqar.json"));
        FAIL() << "task mqar was accepted";
    } catch (const miras::ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("not available in this build"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("'task'"), std::string::npos) << e.what();
    }
}

struct BadSweep {
    const char* label;
    std::string body;   // fields after "name" and "specs"
    const char* field;  // the field the message must name
};

class BadSweepFile : public SweepTest, public ::testing::WithParamInterface<BadSweep> {};

TEST_P(BadSweepFile, IsRejectedNamingTheField) {
    const BadSweep& bad = GetParam();
    write("bad.json", R"({"name": "bad", "specs": [")" + specs_dir + R"(deltanet.json"])" + bad.body + "}");
    try {
        miras::sweep::load_sweep(path("bad.json"));
        FAIL() << bad.label << " was accepted";
    } catch (const miras::ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find(std::string("'") + bad.field + "'"), std::string::npos) << e.what();
    }
}

INSTANTIATE_TEST_SUITE_P(
    Fields, BadSweepFile,
    ::testing::Values(BadSweep{"unknown_field", R"(, "grids": {})", "grids"},
                      BadSweep{"unknown_task", R"(, "task": "train")", "task"},
                      BadSweep{"unknown_probe", R"(, "grid": {"probe": ["capacity", "recall"]})", "grid/probe"},
                      BadSweep{"zero_key_dim", R"(, "grid": {"key_dim": [0]})", "grid/key_dim"},
                      BadSweep{"fractional_key_dim", R"(, "grid": {"key_dim": [8.5]})", "grid/key_dim"},
                      BadSweep{"empty_seeds", R"(, "grid": {"seed": []})", "grid/seed"},
                      BadSweep{"repeated_seed", R"(, "grid": {"seed": [1, 1]})", "grid/seed"},
                      BadSweep{"zero_repetitions", R"(, "grid": {"repetitions": 0})", "grid/repetitions"},
                      BadSweep{"unknown_grid_axis", R"(, "grid": {"width": [64]})", "grid/width"},
                      BadSweep{"training_axis", R"(, "grid": {"lr": [0.1]})", "grid/lr"},
                      BadSweep{"shell_in_time", R"(, "slurm": {"time": "1:00; rm"})", "slurm/time"},
                      BadSweep{"negative_throttle", R"(, "slurm": {"throttle": -1})", "slurm/throttle"},
                      BadSweep{"missing_spec", R"(, "specs": ["nowhere.json"])", "specs/0"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST_F(SweepTest, MissingSpecsListIsRejected) {
    write("nospecs.json", R"({"name": "nospecs"})");
    EXPECT_THROW(miras::sweep::load_sweep(path("nospecs.json")), miras::ConfigError);
}

// ---------------------------------------------------------------------------------------------
// One entry

TEST_F(SweepTest, RunMatchesHebbianAndRunsOnce) {
    // Linear attention at key_dim 16, capacity probe. With N = d random unit keys a Hebbian read is
    // v plus the crosstalk of N - 1 other pairs: cos ~ 1 / sqrt(1 + (N - 1) / d) (query scale does
    // not change a cosine).
    write("one.json", R"({"name": "one", "output_dir": "out-one", "specs": [")" + specs_dir +
                          R"(linear_attention.json"], "grid": {"key_dim": [16], "probe": ["capacity"]}, "quick": true})");
    ASSERT_EQ(miras("sweep run " + path("one.json") + " --index 0"), 0) << err();
    const fs::path result_file = path("out-one/entries/00000/result.json");
    ASSERT_TRUE(fs::exists(result_file)) << out();
    const json result = json::parse(read(result_file));
    EXPECT_EQ(result["layer"]["key_dim"], 16);
    EXPECT_EQ(result["summary"]["probe"], "capacity");
    ASSERT_DOUBLE_EQ(result["summary"]["x"].get<double>(), 1.0);
    EXPECT_NEAR(result["summary"]["cosine"].get<double>(), 1.0 / std::sqrt(1.0 + 15.0 / 16.0), 0.05);
    EXPECT_TRUE(fs::exists(path("out-one/logs/00000.log")));
    for (const auto& item : fs::recursive_directory_iterator(path("out-one"))) {
        EXPECT_EQ(item.path().string().find(".tmp"), std::string::npos) << item.path();
    }

    const auto written = fs::last_write_time(result_file);
    const std::string text = read(result_file);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(miras("sweep run " + path("one.json") + " --index 0"), 0) << err();
    EXPECT_NE(out().find("already done"), std::string::npos) << out();
    EXPECT_EQ(fs::last_write_time(result_file), written);
    EXPECT_EQ(read(result_file), text);
}

TEST_F(SweepTest, RunRejectsIndexOutOfRange) {
    write("range.json", small_sweep("range", R"(["capacity"])"));
    EXPECT_EQ(miras("sweep run " + path("range.json") + " --index 2"), 2);
    EXPECT_NE(err().find("valid is 0 to 1"), std::string::npos) << err();
}

// ---------------------------------------------------------------------------------------------
// Local runs, interruption and collection

TEST_F(SweepTest, AStoppedLocalSweepFinishesOnlyTheRest) {
    write("resume.json", small_sweep("resume", R"(["capacity", "noise", "recency"])"));
    ASSERT_EQ(miras("sweep local " + path("resume.json") + " --jobs 1", "MIRAS_SWEEP_STOP_AFTER=2"), 3) << err();
    std::vector<fs::path> done;
    for (int i = 0; i < 6; ++i) {
        const fs::path result = path("out-resume/entries/0000" + std::to_string(i) + "/result.json");
        if (fs::exists(result)) done.push_back(result);
    }
    ASSERT_EQ(done.size(), 2u);
    std::vector<fs::file_time_type> times;
    for (const auto& result : done) times.push_back(fs::last_write_time(result));

    ASSERT_EQ(miras("sweep local " + path("resume.json") + " --jobs 2"), 0) << err();
    EXPECT_NE(err().find("2 already done, 4 to run"), std::string::npos) << err();
    for (std::size_t i = 0; i < done.size(); ++i) EXPECT_EQ(fs::last_write_time(done[i]), times[i]) << done[i];
    for (int i = 0; i < 6; ++i) {
        EXPECT_TRUE(fs::exists(path("out-resume/entries/0000" + std::to_string(i) + "/result.json"))) << i;
        // Each entry started exactly once over both runs.
        const std::string log = read(path("out-resume/logs/0000" + std::to_string(i) + ".log"));
        std::size_t starts = 0;
        for (std::size_t at = log.find("started"); at != std::string::npos; at = log.find("started", at + 1)) ++starts;
        EXPECT_EQ(starts, 1u) << "entry " << i;
    }
}

TEST_F(SweepTest, AKilledLocalSweepResumes) {
    // 80 entries, so that the kill lands long before the end even when an entry takes milliseconds.
    write("kill.json", R"({"name": "kill", "output_dir": "out-kill", "quick": true, "specs": [")" + specs_dir +
                           R"(linear_attention.json", ")" + specs_dir + R"(deltanet.json"], "grid": {"key_dim": [8],
                           "probe": ["capacity", "noise", "outliers", "recency"], "seed": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}})");
    const int count = 80;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        setpgid(0, 0);
        const std::string out_file = path("kill-out.txt");
        freopen(out_file.c_str(), "w", stdout);
        freopen(out_file.c_str(), "a", stderr);
        execl(MIRAS_CLI, "miras", "sweep", "local", path("kill.json").c_str(), "--jobs", "1",
              static_cast<char*>(nullptr));
        _exit(127);
    }
    setpgid(child, child);
    // Kill the whole group (the sweep and its worker) once the first entry is done, within 120 s.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(path("out-kill/entries/00000/result.json")) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill(-child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    // The worker is a grandchild: wait (at most 10 s) until it too is gone, so that no result
    // appears after the count below.
    const auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (kill(-child, 0) == 0 && std::chrono::steady_clock::now() < gone) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(fs::exists(path("out-kill/entries/00000/result.json"))) << read(path("kill-out.txt"));
    std::size_t finished_before = 0;
    for (int i = 0; i < count; ++i) finished_before += fs::exists(result("out-kill", i));
    ASSERT_LT(finished_before, static_cast<std::size_t>(count)) << "the sweep finished before it was killed";
    const auto first_time = fs::last_write_time(path("out-kill/entries/00000/result.json"));

    ASSERT_EQ(miras("sweep local " + path("kill.json") + " --jobs 2"), 0) << err();
    EXPECT_NE(err().find(std::to_string(finished_before) + " already done"), std::string::npos) << err();
    EXPECT_EQ(fs::last_write_time(path("out-kill/entries/00000/result.json")), first_time);
    for (int i = 0; i < count; ++i) EXPECT_TRUE(fs::exists(result("out-kill", i))) << i;
    EXPECT_EQ(out().find("missing:"), std::string::npos) << out();
}

TEST_F(SweepTest, CollectListsFailedAndMissing) {
    write("broken.json", R"({"name": "broken", "memory": {"type": "matrix"}, "attentional_bias": {"type": "l2"},
        "retention": {"type": "none"}, "algorithm": {"type": "no_such_algorithm"}})");
    write("mixed.json", R"({"name": "mixed", "output_dir": "out-mixed", "quick": true, "specs": [")" + specs_dir +
                            R"(linear_attention.json", ")" + path("broken.json") +
                            R"("], "grid": {"key_dim": [8], "probe": ["capacity", "recency"]}})");
    ASSERT_EQ(miras("sweep run " + path("mixed.json") + " --index 1"), 0) << err();
    ASSERT_EQ(miras("sweep run " + path("mixed.json") + " --index 2"), 1);
    EXPECT_TRUE(fs::exists(path("out-mixed/entries/00002/failed.json")));

    EXPECT_EQ(miras("sweep collect " + path("mixed.json")), 1);
    const std::string table = out();
    EXPECT_NE(table.find("1 of 4 entries"), std::string::npos) << table;
    EXPECT_NE(table.find("failed: entry 2 (broken k=8 seed=1, capacity)"), std::string::npos) << table;
    EXPECT_NE(table.find("no_such_algorithm"), std::string::npos) << table;
    EXPECT_NE(table.find("logs/00002.log"), std::string::npos) << table;
    EXPECT_NE(table.find("missing: entry 0 (linear_attention k=8 seed=1, capacity); log: none"), std::string::npos) << table;
    EXPECT_NE(table.find("missing: entry 3"), std::string::npos) << table;
    // The one finished cell (recency of linear attention) is in the table; the others show "-".
    const std::string recency_row = table.substr(table.find("\nlinear_attention k=8 seed=1"), 80);
    EXPECT_NE(recency_row.find("-"), std::string::npos) << recency_row;
    const json merged = json::parse(read(path("out-mixed/results.json")));
    EXPECT_EQ(merged["failed"], json::array({2}));
    EXPECT_EQ(merged["missing"], json::array({0, 3}));
    ASSERT_EQ(merged["entries"].size(), 1u);
    EXPECT_EQ(merged["entries"][0]["entry"]["index"], 1);
}

// ---------------------------------------------------------------------------------------------
// Slurm

TEST_F(SweepTest, SlurmScriptRunsOneEntryPerArrayTask) {
    write("array.json", small_sweep("array", R"(["capacity", "noise", "recency"])",
                                    R"(, "slurm": {"time": "00:05:00", "mem": "500M", "throttle": 3,
                                        "partition": "short", "extra": ["--qos=low"]})"));
    ASSERT_EQ(miras("sweep slurm " + path("array.json")), 0) << err();
    const std::string script = read(path("out-array/slurm/sweep.sbatch"));
    EXPECT_NE(script.find("#SBATCH --array=0-5%3\n"), std::string::npos) << script;
    EXPECT_NE(script.find("#SBATCH --time=00:05:00\n"), std::string::npos) << script;
    EXPECT_NE(script.find("#SBATCH --mem=500M\n"), std::string::npos) << script;
    EXPECT_NE(script.find("#SBATCH --partition=short\n"), std::string::npos) << script;
    EXPECT_NE(script.find("#SBATCH --qos=low\n"), std::string::npos) << script;
    EXPECT_NE(script.find("#SBATCH --output=" + path("out-array/slurm") + "/%A_%a.out\n"), std::string::npos) << script;
    EXPECT_NE(script.find(" sweep run '" + path("array.json") + "' --index \"$SLURM_ARRAY_TASK_ID\"\n"),
              std::string::npos)
        << script;

    // Only the unfinished entries: 1 is done, so the array is 0,2-5.
    ASSERT_EQ(miras("sweep run " + path("array.json") + " --index 1"), 0) << err();
    ASSERT_EQ(miras("sweep slurm " + path("array.json") + " --unfinished"), 0) << err();
    EXPECT_NE(read(path("out-array/slurm/sweep.sbatch")).find("#SBATCH --array=0,2-5%3\n"), std::string::npos);
}

TEST_F(SweepTest, SlurmRejectsOutputPathWithSpace) {
    write("space.json", R"({"name": "space", "output_dir": "out with space", "specs": [")" + specs_dir +
                            R"(deltanet.json"]})");
    EXPECT_EQ(miras("sweep slurm " + path("space.json")), 2);
    EXPECT_NE(err().find("out with space"), std::string::npos) << err();
    EXPECT_FALSE(fs::exists(path("out with space/slurm/sweep.sbatch")));
}

/// Starts the test cluster in SetUp (or skips) and always stops it in TearDown.
class SlurmCluster : public SweepTest {
protected:
    void SetUp() override {
        SweepTest::SetUp();
        if (std::string(MIRAS_CLI).empty()) GTEST_SKIP() << "the miras tool is not built";
        cluster_ = dir_ / "cluster";
        const std::string command = "timeout 90 " + std::string(MIRAS_SLURM_CLUSTER_SCRIPT) + " start " +
                                    cluster_.string() + " > " + path("cluster-out.txt") + " 2> " + path("cluster-err.txt");
        const int status = std::system(command.c_str());
        started_ = true;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            GTEST_SKIP() << "Slurm cannot run here, so the job array is not tested: " << read(path("cluster-err.txt"));
        }
        conf_ = (cluster_ / "slurm.conf").string();
    }
    void TearDown() override {
        if (started_) {
            const std::string command = "timeout 60 " + std::string(MIRAS_SLURM_CLUSTER_SCRIPT) + " stop " +
                                        cluster_.string() + " > /dev/null 2>&1";
            [[maybe_unused]] const int status = std::system(command.c_str());
        }
        SweepTest::TearDown();
    }

    /// Runs `command` with the cluster's SLURM_CONF and a time limit; returns its stdout.
    std::string slurm(const std::string& command) const {
        const std::string line = "SLURM_CONF=" + conf_ + " timeout 10 " + command + " > " + path("slurm-out.txt") +
                                 " 2>&1";
        [[maybe_unused]] const int status = std::system(line.c_str());
        return read(path("slurm-out.txt"));
    }

    fs::path cluster_;
    std::string conf_;
    bool started_ = false;
};

TEST_F(SlurmCluster, JobArrayMatchesLocalTable) {
    write("cluster.json", small_sweep("cluster", R"(["capacity", "recency", "stream"])",
                                      R"(, "slurm": {"time": "00:05:00", "mem": "200M", "throttle": 2})"));
    ASSERT_EQ(miras("sweep local " + path("cluster.json") + " --jobs 2"), 0) << err();
    ASSERT_EQ(miras("sweep collect " + path("cluster.json")), 0) << out();
    const std::string local_table = out();
    fs::remove_all(path("out-cluster"));

    ASSERT_EQ(miras("sweep slurm " + path("cluster.json") + " --submit", "SLURM_CONF=" + conf_), 0) << out() << err();
    const std::string submitted = out();
    const std::size_t at = submitted.find("submitted job array ");
    ASSERT_NE(at, std::string::npos) << submitted;
    const std::string job = submitted.substr(at + 20, submitted.find('\n', at) - at - 20);
    ASSERT_FALSE(job.empty());

    // Waits at most 300 s for the array to leave the queue.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    std::string queue;
    do {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        queue = slurm("squeue -h -j " + job + " -o %i");
    } while (queue.find(job) != std::string::npos && std::chrono::steady_clock::now() < deadline);
    ASSERT_EQ(queue.find(job), std::string::npos) << "the job array did not finish within 300 s: " << queue;

    EXPECT_EQ(miras("sweep collect " + path("cluster.json")), 0) << out();
    EXPECT_EQ(out(), local_table);
    EXPECT_NE(local_table.find("deltanet k=8 seed=3"), std::string::npos) << local_table;
    EXPECT_EQ(local_table.find("missing:"), std::string::npos) << local_table;
    // Every array task wrote its Slurm output file next to the script.
    for (int task = 0; task < 6; ++task) {
        EXPECT_TRUE(fs::exists(path("out-cluster/slurm/" + job + "_" + std::to_string(task) + ".out"))) << task;
    }
}

}  // namespace
