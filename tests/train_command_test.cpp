// `miras train --task mqar` run as a user runs it, on a tiny setting. The tests cover exit statuses,
// the files of the results folder and their fields, and a resumed run equal to an uninterrupted one.
// They also cover the rejection of an existing run, bad options, a spec without a reverse pass, and
// a loss that falls.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string specs = std::string(MIRAS_SOURCE_DIR) + "/specs/";

// Small enough for well under a second per run: V 32, L 16, 2 pairs, d 16, 2 layers, 12 steps.
const std::string tiny = " --task mqar --vocab-size 32 --seq-len 16 --pairs 2 --train-examples 64 --test-examples 32 "
                         "--batch 16 --epochs 3 --d-model 16 --eval-every 4 --no-plots --seed 7";

class TrainCommand : public ::testing::Test {
protected:
    void SetUp() override {
        if (std::string(MIRAS_CLI).empty()) GTEST_SKIP() << "the miras tool is not built (MIRAS_BUILD_CLI=OFF)";
        dir_ = fs::temp_directory_path() / ("miras_train_test_" + std::to_string(std::random_device{}()));
        fs::create_directories(dir_);
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }
    json read_json(const std::string& name) const { return json::parse(std::ifstream(dir_ / name)); }
    std::string read_text(const std::string& name) const {
        std::ifstream file(dir_ / name);
        return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    }

    int miras(const std::string& arguments) const {
        const std::string command = std::string(MIRAS_CLI) + " " + arguments + " > " + path("stdout.txt") + " 2> " +
                                    path("stderr.txt");
        const int status = std::system(command.c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    static json without_timing(json results) {
        for (auto& run : results.at("runs")) {
            for (const char* field : {"seconds", "tokens_per_second", "layer_seconds", "mixer_seconds", "layer_share",
                                      "projection_share"}) {
                run.erase(field);
            }
        }
        return results;
    }

    fs::path dir_;
};

TEST_F(TrainCommand, WritesEveryFileWithItsFields) {
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --lr 0.003,0.01 --out " + path("run")), 0)
        << read_text("stderr.txt");
    for (const char* name : {"run.json", "results.json", "evals.csv", "summary.csv", "accuracy.dat", "accuracy.gp",
                             "checkpoints/lr-0.ckpt", "checkpoints/lr-1.ckpt"}) {
        EXPECT_TRUE(fs::is_regular_file(dir_ / "run" / name)) << name;
    }
    const json results = read_json("run/results.json");
    EXPECT_EQ(results.at("task"), "mqar");
    EXPECT_EQ(results.at("spec").at("name"), "deltanet");
    EXPECT_EQ(results.at("settings").at("steps"), 12);
    EXPECT_EQ(results.at("settings").at("learning_rates"), json::array({0.003, 0.01}));
    ASSERT_EQ(results.at("runs").size(), 2u);
    for (const auto& run : results.at("runs")) {
        ASSERT_EQ(run.at("evals").size(), 3u) << run.dump();
        EXPECT_EQ(run.at("evals").at(0).at("step"), 4);
        EXPECT_EQ(run.at("evals").at(2).at("step"), 12);
        for (const char* field : {"train_loss", "test_loss", "test_accuracy", "learning_rate", "epoch"}) {
            EXPECT_TRUE(run.at("evals").at(0).at(field).is_number()) << field;
        }
        EXPECT_TRUE(run.contains("best_accuracy"));
        EXPECT_TRUE(run.contains("tokens_per_second"));
        // The layers and the rest of the mixers take parts of the step time, and no more than all of it.
        const double layer = run.at("layer_share").get<double>(), projection = run.at("projection_share").get<double>();
        EXPECT_GT(layer, 0.0);
        EXPECT_GT(projection, 0.0);
        EXPECT_LE(layer + projection, 1.0);
        EXPECT_LE(run.at("layer_seconds").get<double>(), run.at("mixer_seconds").get<double>());
    }
    const double best = std::max(results.at("runs")[0].at("best_accuracy").get<double>(),
                                 results.at("runs")[1].at("best_accuracy").get<double>());
    EXPECT_EQ(results.at("best").at("accuracy").get<double>(), best);

    std::istringstream csv(read_text("run/evals.csv"));
    std::string line;
    std::getline(csv, line);
    EXPECT_EQ(line, "lr,step,epoch,learning_rate,train_loss,test_loss,test_accuracy");
    int rows = 0;
    while (std::getline(csv, line)) ++rows;
    EXPECT_EQ(rows, 6);
    EXPECT_NE(read_text("stdout.txt").find("best: lr"), std::string::npos) << read_text("stdout.txt");
    EXPECT_NE(read_text("stdout.txt").find("% in the layers"), std::string::npos) << read_text("stdout.txt");
    EXPECT_EQ(read_text("stderr.txt"), "") << "progress must stay off when stderr is not a terminal";
}

TEST_F(TrainCommand, ResumedRunEqualsUninterruptedRun) {
    const std::string options = tiny + " --lr 0.003,0.01 --checkpoint-every 3";
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + options + " --out " + path("whole")), 0)
        << read_text("stderr.txt");
    // Stops inside the first rate, between checkpoints and evaluations, then inside the second. The
    // thread count changes between the calls, which must not change a number either.
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + options + " --stop-after 5 --threads 3 --out " + path("split")), 0)
        << read_text("stderr.txt");
    EXPECT_FALSE(fs::exists(dir_ / "split" / "results.json"));
    EXPECT_NE(read_text("stderr.txt").find("--resume"), std::string::npos) << read_text("stderr.txt");
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + options + " --stop-after 9 --resume --out " + path("split")), 0)
        << read_text("stderr.txt");
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + options + " --resume --out " + path("split")), 0)
        << read_text("stderr.txt");
    EXPECT_EQ(without_timing(read_json("split/results.json")), without_timing(read_json("whole/results.json")));
    EXPECT_EQ(read_text("split/evals.csv"), read_text("whole/evals.csv"));
}

TEST_F(TrainCommand, ResumeWithOtherOptionsIsRejected) {
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --stop-after 2 --out " + path("run")), 0);
    EXPECT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --d-model 8 --resume --out " + path("run")), 2);
    EXPECT_NE(read_text("stderr.txt").find("d_model"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --resume --out " + path("fresh")), 2);
    EXPECT_NE(read_text("stderr.txt").find("no run to continue"), std::string::npos) << read_text("stderr.txt");
}

TEST_F(TrainCommand, CorruptCheckpointIsRejected) {
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --stop-after 2 --out " + path("run")), 0);
    const fs::path checkpoint = dir_ / "run" / "checkpoints" / "lr-0.ckpt";
    ASSERT_TRUE(fs::is_regular_file(checkpoint));
    fs::resize_file(checkpoint, fs::file_size(checkpoint) - 9);
    EXPECT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --resume --out " + path("run")), 2);
    EXPECT_NE(read_text("stderr.txt").find("lr-0.ckpt' is invalid"), std::string::npos) << read_text("stderr.txt");
    EXPECT_FALSE(fs::exists(dir_ / "run" / "results.json"));
}

TEST_F(TrainCommand, ExistingRunIsNotOverwritten) {
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --out " + path("run")), 0);
    const std::string before = read_text("run/results.json");
    EXPECT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --lr 0.01 --out " + path("run")), 2);
    EXPECT_NE(read_text("stderr.txt").find("--force"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(read_text("run/results.json"), before);
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --lr 0.01 --precision float64 --force --out " + path("run")),
              0);
    EXPECT_EQ(read_json("run/results.json").at("settings").at("learning_rates"), json::array({0.01}));
    EXPECT_EQ(read_json("run/results.json").at("settings").at("precision"), "float64");
}

TEST_F(TrainCommand, BadOptionsNameTheValue) {
    const std::string spec = specs + "deltanet.json";
    EXPECT_EQ(miras("train " + spec + tiny + " --batch 0 --out " + path("a")), 2);
    EXPECT_NE(read_text("stderr.txt").find("--batch = 0"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + spec + tiny + " --seq-len 15 --out " + path("b")), 2);
    EXPECT_NE(read_text("stderr.txt").find("15"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + spec + tiny + " --lr 0.01,-1 --out " + path("c")), 2);
    EXPECT_NE(read_text("stderr.txt").find("-1"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + spec + tiny + " --batch many --out " + path("d")), 2);
    EXPECT_NE(read_text("stderr.txt").find("many"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + spec + " --task copying --out " + path("e")), 2);
    EXPECT_NE(read_text("stderr.txt").find("copying"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras("train " + spec + tiny + " --conv-first --layers 1 --out " + path("f")), 2);
    EXPECT_NE(read_text("stderr.txt").find("--layers = 1"), std::string::npos) << read_text("stderr.txt");
    for (const char* folder : {"a", "b", "c", "d", "e", "f"}) EXPECT_FALSE(fs::exists(dir_ / folder)) << folder;
}

TEST_F(TrainCommand, TapeRouteSpecTrains) {
    EXPECT_EQ(miras("train " + specs + "longhorn.json" + tiny + " --out " + path("run")), 0);
    const std::string message = read_text("stderr.txt");
    EXPECT_NE(message.find("tape reverse pass"), std::string::npos) << message;
    EXPECT_TRUE(fs::exists(dir_ / "run" / "results.json"));
}

TEST_F(TrainCommand, MlpMemoryResizesAndScalesRate) {
    // The spec is rebuilt from the file as written, which the MLP memory's filled-in fields would
    // not allow. Its inner rate gets a maximum of 0.01 unless --gate-scale sets another.
    const std::string titans = "train " + specs + "titans.json" + tiny + " --steps 2 --eval-every 2 --heads 1 --head-dim 4";
    ASSERT_EQ(miras(titans + " --out " + path("default")), 0) << read_text("stderr.txt");
    json settings = read_json("default/results.json").at("settings");
    EXPECT_EQ(settings.at("gate_scales"), json({{"eta", 0.01}}));
    EXPECT_EQ(read_json("default/results.json").at("spec").at("dims").at("key"), 4);
    ASSERT_EQ(miras(titans + " --gate-scale eta=0.5 --out " + path("scaled")), 0) << read_text("stderr.txt");
    settings = read_json("scaled/results.json").at("settings");
    EXPECT_EQ(settings.at("gate_scales"), json({{"eta", 0.5}}));
    EXPECT_NE(read_json("scaled/results.json").at("runs").at(0).at("evals").at(0).at("test_loss"),
              read_json("default/results.json").at("runs").at(0).at("evals").at(0).at("test_loss"));
    // A matrix memory keeps its rates unscaled.
    ASSERT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --steps 1 --out " + path("matrix")), 0);
    EXPECT_EQ(read_json("matrix/results.json").at("settings").at("gate_scales"), json::object());
}

TEST_F(TrainCommand, BadGateScaleNamesTheValue) {
    const std::string gdn = "train " + specs + "gated_deltanet.json" + tiny;
    EXPECT_EQ(miras(gdn + " --gate-scale eta --out " + path("a")), 2);
    EXPECT_NE(read_text("stderr.txt").find("--gate-scale = 'eta' is invalid; valid is NAME=VALUE"), std::string::npos)
        << read_text("stderr.txt");
    EXPECT_EQ(miras(gdn + " --gate-scale eta=fast --out " + path("b")), 2);
    EXPECT_NE(read_text("stderr.txt").find("eta=fast"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras(gdn + " --gate-scale beta=0.1 --out " + path("c")), 2);
    EXPECT_NE(read_text("stderr.txt").find("valid are 'g', 'eta'"), std::string::npos) << read_text("stderr.txt");
    EXPECT_EQ(miras(gdn + " --gate-scale eta=-1 --out " + path("d")), 2);
    EXPECT_NE(read_text("stderr.txt").find("eta=-1"), std::string::npos) << read_text("stderr.txt");
    for (const char* folder : {"a", "b", "c", "d"}) EXPECT_FALSE(fs::exists(dir_ / folder)) << folder;
}

TEST_F(TrainCommand, LossFallsAndConvFirstRuns) {
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + tiny + " --conv-first --layers 3 --epochs 10 --eval-every 20 "
                    "--lr 0.01 --out " + path("run")),
              0)
        << read_text("stderr.txt");
    const json evals = read_json("run/results.json").at("runs").at(0).at("evals");
    ASSERT_GE(evals.size(), 2u);
    const double first = evals.front().at("train_loss").get<double>();
    const double last = evals.back().at("train_loss").get<double>();
    EXPECT_LT(last, 0.9 * first) << "mean training loss of the first 20 steps " << first << ", of the last " << last;
    EXPECT_LT(evals.back().at("test_loss").get<double>(), std::log(32.0)) << "no better than uniform over V";
}

TEST_F(TrainCommand, ZoologyGroupKeepsOverrides) {
    ASSERT_EQ(miras("train " + specs + "kda.json --task mqar --zoology --train-examples 32 --test-examples 16 --batch 16 "
                    "--steps 1 --no-plots --out " + path("run")),
              0)
        << read_text("stderr.txt");
    const json settings = read_json("run/results.json").at("settings");
    EXPECT_EQ(settings.at("group"), "zoology");
    EXPECT_EQ(settings.at("vocab_size"), 8192);
    EXPECT_EQ(settings.at("schedule"), "epoch");
    EXPECT_EQ(settings.at("epochs"), 64);
    EXPECT_EQ(settings.at("learning_rates").size(), 4u);
    EXPECT_EQ(settings.at("random_filler"), false);
    EXPECT_EQ(settings.at("train_examples"), 32);
    EXPECT_EQ(settings.at("batch"), 16);
    EXPECT_EQ(settings.at("steps"), 1);
    EXPECT_EQ(read_json("run/results.json").at("runs").size(), 4u);
}

TEST_F(TrainCommand, EarlyStopAndExpectedAccuracy) {
    // Accuracy 0 is reached at the first evaluation, and 1.5 never.
    EXPECT_EQ(miras("train " + specs + "deltanet.json" + tiny + " --stop-accuracy 0 --expect-accuracy 1.5 --out " + path("run")),
              1);
    EXPECT_NE(read_text("stderr.txt").find("--expect-accuracy"), std::string::npos) << read_text("stderr.txt");
    const json run = read_json("run/results.json").at("runs").at(0);
    EXPECT_EQ(run.at("early_stopped"), true);
    EXPECT_EQ(run.at("steps"), 4);
    EXPECT_EQ(run.at("evals").size(), 1u);
}

TEST_F(TrainCommand, DivergedRateKeepsSweepGoing) {
    ASSERT_EQ(miras("train " + specs + "gated_deltanet.json" + tiny + " --lr 1e6,0.01 --out " + path("run")), 0)
        << read_text("stderr.txt");
    const json runs = read_json("run/results.json").at("runs");
    ASSERT_EQ(runs.size(), 2u);
    EXPECT_EQ(runs[0].at("diverged"), true);
    EXPECT_TRUE(runs[0].contains("diverged_message"));
    EXPECT_EQ(runs[1].at("diverged"), false);
    EXPECT_EQ(runs[1].at("steps"), 12);
    EXPECT_EQ(read_json("run/results.json").at("best").at("lr"), 0.01);
}

TEST_F(TrainCommand, HelpNamesEveryOption) {
    ASSERT_EQ(miras("train --help"), 0);
    const std::string help = read_text("stdout.txt");
    for (const char* option : {"--task", "--zoology", "--vocab-size", "--seq-len", "--pairs", "--train-examples",
                               "--test-examples", "--batch", "--epochs", "--steps", "--lr", "--weight-decay",
                               "--d-model", "--layers", "--conv-first", "--seed", "--precision", "--out", "--resume",
                               "--checkpoint-every", "--stop-accuracy", "--progress", "--threads", "--stop-after",
                               "--heads", "--head-dim", "--gate-scale"}) {
        EXPECT_NE(help.find(option), std::string::npos) << option;
    }
}

}  // namespace
