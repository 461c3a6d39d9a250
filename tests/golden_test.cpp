// Every golden file of a linear model matches its preset, in double and in float.
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/io/golden.hpp"

namespace {

namespace fs = std::filesystem;
using miras::golden::Precision;

std::vector<std::string> golden_files() {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(MIRAS_GOLDEN_DIR)) {
        const std::string name = entry.path().filename().string();
        if (entry.path().extension() == ".json" && name.rfind("ttt_", 0) != 0) files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    return files;
}

class GoldenFile : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenFile, MatchesInDouble) {
    const auto result = miras::golden::check_file(GetParam(), Precision::float64);
    ASSERT_FALSE(result.comparisons.empty());
    for (const auto& c : result.comparisons) {
        EXPECT_LE(c.max_rel_error, 1e-10) << result.model << " output " << c.output;
    }
}

TEST_P(GoldenFile, MatchesInFloat) {
    const auto result = miras::golden::check_file(GetParam(), Precision::float32);
    ASSERT_FALSE(result.comparisons.empty());
    for (const auto& c : result.comparisons) {
        EXPECT_LE(c.max_abs_error, 1e-4) << result.model << " output " << c.output;
    }
}

TEST(GoldenFiles, CoverEveryLinearModel) {
    std::set<std::string> models;
    for (const auto& file : golden_files()) models.insert(miras::golden::check_file(file, Precision::float64).model);
    EXPECT_EQ(models.size(), 11u);
}

INSTANTIATE_TEST_SUITE_P(Files, GoldenFile, ::testing::ValuesIn(golden_files()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             return fs::path(info.param).stem().string();
                         });

}  // namespace
