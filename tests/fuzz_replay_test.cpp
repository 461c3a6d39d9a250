// Replays the inputs of the spec fuzzer: its seed corpus (every spec file and every malformed spec
// of the error table) and every input that once crashed it. Each goes through the fuzzer's own
// entry; only a miras::Error may end a run, and the well-formed seeds must run.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../fuzz/spec_fuzz_entry.hpp"

namespace miras {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> files_in(const std::string& folder) {
    std::vector<fs::path> files;
    for (const auto& item : fs::directory_iterator(fs::path(MIRAS_SOURCE_DIR) / "fuzz" / folder)) {
        if (item.is_regular_file() && item.path().filename().string().front() != '.') files.push_back(item.path());
    }
    std::sort(files.begin(), files.end());
    return files;
}

fuzz::Outcome replay(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return fuzz::run_spec_bytes(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

class FuzzReplay : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzReplay, EveryInputEndsWithoutACrash) {
    const std::vector<fs::path> files = files_in(GetParam());
    if (GetParam() == "corpus") {
        ASSERT_FALSE(files.empty()) << "no seed inputs in fuzz/corpus";
    }
    for (const fs::path& file : files) {
        EXPECT_NO_THROW(replay(file)) << file.filename();
    }
}

INSTANTIATE_TEST_SUITE_P(Folders, FuzzReplay, ::testing::Values("corpus", "regressions"));

// The seeds taken from the spec files are valid specs and run; those from the error table are not.
TEST(FuzzCorpus, SpecFilesRunAndMalformedSpecsAreRejected) {
    for (const fs::path& file : files_in("corpus")) {
        const std::string name = file.filename().string();
        if (name.rfind("malformed_", 0) == 0) {
            EXPECT_EQ(replay(file), fuzz::Outcome::rejected) << name;
        } else if (name != "spec_schema.json") {
            EXPECT_EQ(replay(file), fuzz::Outcome::ran) << name;
        }
    }
}

}  // namespace
}  // namespace miras
