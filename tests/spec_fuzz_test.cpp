// Fuzzing of the spec parser: mutated spec files and specs with a field replaced by a value of any
// JSON type are either accepted or rejected with a SpecError, never with another exception. An
// accepted spec builds a layer that runs on valid inputs.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> spec_texts() {
    std::vector<std::string> texts;
    for (const auto& item : fs::directory_iterator(fs::path(MIRAS_SOURCE_DIR) / "specs")) {
        if (item.path().extension() != ".json" || item.path().filename() == "schema.json") continue;
        std::ifstream in(item.path());
        std::ostringstream text;
        text << in.rdbuf();
        texts.push_back(text.str());
    }
    return texts;
}

/// Runs an accepted spec on two tokens of random inputs; only miras errors may escape.
void run_accepted(const LayerSpec& spec) {
    const auto layer = build_layer(spec);
    const SpecInputs inputs = random_inputs(*layer, 1, 2, 5);
    auto state = layer->initial_state(1, true);
    layer->forward(inputs.view(), *state);
}

/// Parses `text` and runs the layer when the spec is accepted. Returns true when accepted. Any
/// exception other than a SpecError from the parser or a NumericalError of a diverging run fails
/// the test.
bool survives(const std::string& text) {
    try {
        const LayerSpec spec = parse_spec_text(text, "<fuzz>");
        // Dimensions of mutated specs can be large; run only the small ones.
        const json& dims = spec.json.at("dims");
        if (dims.at("heads").get<Index>() * dims.at("key").get<Index>() * dims.at("value").get<Index>() <= 4096) {
            try {
                run_accepted(spec);
            } catch (const NumericalError&) {
                // An accepted spec with extreme values (a huge rate or coefficient) may diverge.
            }
        }
        return true;
    } catch (const SpecError&) {
        return false;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "unexpected " << typeid(e).name() << ": " << e.what() << "\nfor: " << text.substr(0, 300);
        return false;
    }
}

TEST(SpecFuzz, ByteMutationsOfEverySpecFile) {
    std::mt19937_64 rng(11);
    const std::string alphabet = "{}[]\",:0123456789.-+eE truefalsnl\\/xyz_";
    int accepted = 0, total = 0;
    for (const std::string& original : spec_texts()) {
        for (int trial = 0; trial < 200; ++trial) {
            std::string text = original;
            const int edits = 1 + static_cast<int>(rng() % 4);
            for (int e = 0; e < edits && !text.empty(); ++e) {
                const std::size_t at = rng() % text.size();
                switch (rng() % 3) {
                    case 0: text[at] = alphabet[rng() % alphabet.size()]; break;
                    case 1: text.erase(at, 1 + rng() % 8); break;
                    default: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
                }
            }
            accepted += survives(text) ? 1 : 0;
            ++total;
        }
    }
    // Some mutations land in descriptions and stay valid; most break the document.
    EXPECT_GT(accepted, 0);
    EXPECT_LT(accepted, total);
}

/// Collects every location (JSON pointer) in a document.
void pointers(const json& value, const std::string& at, std::vector<std::string>& out) {
    out.push_back(at);
    if (value.is_object()) {
        for (const auto& item : value.items()) pointers(item.value(), at + "/" + item.key(), out);
    } else if (value.is_array()) {
        for (std::size_t i = 0; i < value.size(); ++i) pointers(value[i], at + "/" + std::to_string(i), out);
    }
}

TEST(SpecFuzz, EveryFieldReplacedByEveryKindOfValue) {
    const std::vector<json> replacements = {
        nullptr, true, false, 0, 1, -1, 2.5, -0.0, 1e300, -1e300, 9223372036854775807LL,
        static_cast<std::uint64_t>(18446744073709551615ULL), "", "matrix", "per_token", json::array(),
        json::array({1, 2}), json::object(), json{{"gate", "per_token"}}, json{{"type", "l2"}}};
    int rejected = 0, total = 0;
    for (const std::string& text : spec_texts()) {
        const json original = json::parse(text);
        std::vector<std::string> locations;
        pointers(original, "", locations);
        for (const std::string& location : locations) {
            if (location.empty()) continue;
            for (const json& replacement : replacements) {
                json spec = original;
                spec[json::json_pointer(location)] = replacement;
                rejected += survives(spec.dump()) ? 0 : 1;
                ++total;
            }
        }
    }
    EXPECT_GT(rejected, total / 2);
}

}  // namespace
}  // namespace miras
