// The spec subcommands of the miras tool:
//   miras list                     components, their spec fields, registered combinations, spec files
//   miras describe SPEC            the resolved combination, its update rule, its gates and state size
//   miras check SPEC...            validation plus every check of miras/spec/check.hpp, as a table
//   miras run SPEC --input --output   run a spec on tensors from a JSON file
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "commands.hpp"
#include "common/atomic_file.hpp"
#include "miras/io/tensor_json.hpp"
#include "miras/spec/check.hpp"
#include "miras/spec/spec.hpp"

namespace miras::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string combination_of(const LayerSpec& spec) {
    const auto type = [&](const char* section) { return spec.json.at(section).at("type").get<std::string>(); };
    return type("memory") + "/" + type("attentional_bias") + "/" + type("retention") + "/" + type("algorithm");
}

const char* range_words(Range range) {
    switch (range) {
        case Range::log_gate: return "log-gate <= 0";
        case Range::nonnegative: return ">= 0";
        case Range::positive: return "> 0";
        case Range::any: return "any real";
    }
    return "?";
}

std::vector<fs::path> spec_files(const std::string& directory) {
    std::vector<fs::path> files;
    if (!fs::is_directory(directory)) return files;
    for (const auto& item : fs::directory_iterator(directory)) {
        if (item.path().extension() == ".json" && item.path().filename() != "schema.json") files.push_back(item.path());
    }
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

Action add_list_command(CLI::App& app) {
    auto directory = std::make_shared<std::string>(MIRAS_SPECS_DIR);
    CLI::App* command = app.add_subcommand("list", "List the components, their spec fields, the registered "
                                                   "combinations and the spec files of the presets");
    command->add_option("--specs-dir", *directory, "Directory of spec files to list")->capture_default_str();
    return [directory]() {
        std::printf("components (spec field: description)\n");
        std::string role;
        for (const auto& info : component_catalog()) {
            if (info.role != role) {
                role = info.role;
                std::printf("\n  %s.type\n", role.c_str());
            }
            std::printf("    %-18s %s\n", info.type.c_str(), info.summary.c_str());
            for (const auto& field : info.fields) {
                std::printf("      %-16s %s\n", field.name.c_str(), field.description.c_str());
            }
        }
        std::printf("\n  gates: {\"gate\": \"per_token\", \"axis\": \"head|key|value\"}, {\"value\": x} or "
                    "{\"values\": [...], \"axis\": ...}\n");
        std::printf("  execution: read (after_write | before_write), query_scale (default 1/sqrt(K)), "
                    "steps_per_token (1-64)\n");

        const auto combinations = registered_combinations();
        std::printf("\nregistered combinations (%zu): memory/attentional_bias/retention/algorithm\n", combinations.size());
        for (const auto& key : combinations) std::printf("  %s\n", key.c_str());

        const auto files = spec_files(*directory);
        std::printf("\nspec files in %s (%zu)\n", directory->c_str(), files.size());
        for (const auto& path : files) {
            try {
                const LayerSpec spec = load_spec_file(path.string());
                std::printf("  %-32s %-42s %s\n", path.filename().string().c_str(), combination_of(spec).c_str(),
                            spec.json.value("description", "").c_str());
            } catch (const Error& e) {
                std::printf("  %-32s invalid: %s\n", path.filename().string().c_str(), e.what());
            }
        }
        return exit_ok;
    };
}

Action add_describe_command(CLI::App& app) {
    auto file = std::make_shared<std::string>();
    CLI::App* command = app.add_subcommand("describe", "Show the combination a spec resolves to, its update rule in "
                                                       "words and symbols, its gates and its state size per head");
    command->add_option("spec", *file, "Spec file (format: docs/specs.md)")->required()->check(CLI::ExistingFile);
    return [file]() {
        LayerSpec spec;
        try {
            spec = load_spec_file(*file);
        } catch (const SpecError& e) {
            std::cerr << "error: " << *file << ": " << e.what() << "\n";
            return exit_bad_input;
        }
        const auto layer = build_layer(spec);
        const LayerDims& dims = layer->dims();
        std::printf("name         %s\n", spec.name.c_str());
        std::printf("combination  %s\n", combination_of(spec).c_str());
        std::printf("dims         H = %lld, K = %lld, V = %lld, key features D = %lld, pairs per token = %lld\n",
                    static_cast<long long>(dims.heads), static_cast<long long>(dims.key),
                    static_cast<long long>(dims.value), static_cast<long long>(dims.key_features),
                    static_cast<long long>(dims.steps_per_token));
        std::printf("query scale  s = %.6g\n", layer->query_scale());
        const UpdateDescription update = describe_update(spec);
        std::printf("\nupdate rule\n  %s\n\n", update.words.c_str());
        for (const auto& line : update.symbols) std::printf("  %s\n", line.c_str());

        std::printf("\ngates\n");
        for (const GateSpec& gate : layer->gates()) {
            std::string how;
            if (gate.config.per_token) {
                how = "per-token input, probe value " + std::to_string(spec.probe_gates.at(gate.name));
            } else {
                how = "fixed:";
                for (double x : gate.config.fixed) how += " " + std::to_string(x);
            }
            std::printf("  %-7s %-6s axis  %-14s %s\n", gate.name.c_str(), axis_name(gate.config.axis),
                        range_words(gate.range), how.c_str());
        }
        const Index per_head = layer->state_size_per_head();
        if (layer->memory_name() == "kv_cache") {
            const Index window = spec.json.at("memory").at("window").get<Index>();
            std::printf("\nstate        %lld scalars per head per cached pair (%s)\n", static_cast<long long>(per_head),
                        window > 0 ? ("at most " + std::to_string(window) + " pairs").c_str() : "grows with T");
        } else {
            std::printf("\nstate        %lld scalars per head, %lld per sequence\n", static_cast<long long>(per_head),
                        static_cast<long long>(per_head * dims.heads));
        }
        return exit_ok;
    };
}

Action add_check_command(CLI::App& app) {
    struct Options {
        std::vector<std::string> files;
        Index horizon = 4096;
        unsigned seed = CheckOptions{}.seed;
    };
    auto options = std::make_shared<Options>();
    CLI::App* command = app.add_subcommand(
        "check", "Validate specs and run their expectations and the generic checks (stepping, split-and-resume, "
                 "finite outputs, inner gradient)");
    command->add_option("specs", options->files, "Spec files")->required()->check(CLI::ExistingFile);
    command->add_option("--horizon", options->horizon,
                        "Tokens of the finiteness run when a spec sets no expect.finite_for_tokens")
        ->check(CLI::Range(Index{1}, Index{1} << 20))
        ->capture_default_str();
    command->add_option("--seed", options->seed, "Seed of the random inputs")->capture_default_str();
    return [options]() {
        CheckOptions check_options;
        check_options.horizon = options->horizon;
        check_options.seed = options->seed;
        int failed = 0, invalid = 0;
        std::printf("%-36s %-20s %-8s %s\n", "spec", "check", "status", "detail");
        for (const auto& path : options->files) {
            const std::string shown = fs::path(path).filename().string();
            try {
                const LayerSpec spec = load_spec_file(path);
                std::printf("%-36s %-20s %-8s %s\n", shown.c_str(), "valid", "ok", combination_of(spec).c_str());
                bool passed = true;
                for (const auto& result : run_spec_checks(spec, check_options)) {
                    std::printf("%-36s %-20s %-8s %s\n", shown.c_str(), result.name.c_str(), status_name(result.status),
                                result.detail.c_str());
                    if (result.status == CheckResult::Status::failed) passed = false;
                }
                if (!passed) ++failed;
            } catch (const Error& e) {
                std::printf("%-36s %-20s %-8s %s\n", shown.c_str(), "valid", "FAILED", e.what());
                ++invalid;
            }
        }
        std::printf("%zu specs, %d failed a check, %d invalid\n", options->files.size(), failed, invalid);
        if (invalid > 0) return exit_bad_input;
        return failed > 0 ? exit_check_failed : exit_ok;
    };
}

namespace {

template <class S>
json run_in(const AnyLayer& layer, const json& file, bool use_double) {
    const json& inputs = file.at("inputs");
    std::vector<std::string> readable{"q", "k", "v"};
    for (const GateSpec& gate : layer.gates()) {
        if (gate.config.per_token) readable.push_back(gate.name);
    }
    std::map<std::string, Tensor<S>> tensors;
    for (const auto& item : inputs.items()) {
        if (std::find(readable.begin(), readable.end(), item.key()) == readable.end()) {
            std::string valid;
            for (const auto& name : readable) valid += (valid.empty() ? "" : ", ") + name;
            throw InputError("/inputs/" + item.key() + ": this layer does not read an input '" + item.key() +
                             "'; it reads " + valid);
        }
        tensors.emplace(item.key(), io::tensor_from_json<S>(item.value(), "/inputs/" + item.key()));
    }
    for (const char* name : {"q", "k", "v"}) {
        if (tensors.count(name) == 0) throw InputError(std::string("/inputs: missing the tensor '") + name + "'");
    }
    Inputs<S> view{tensors.at("q").view(), tensors.at("k").view(), tensors.at("v").view(), {}};
    for (const auto& [name, tensor] : tensors) {
        if (name != "q" && name != "k" && name != "v") view.gates[name] = tensor.view();
    }
    std::unique_ptr<AnyState> state;
    if (file.contains("state")) {
        if (!file.at("state").is_object()) throw InputError("/state: expected an object of named state tensors");
        NamedTensors<double> initial;
        for (const auto& item : file.at("state").items()) {
            initial.emplace(item.key(), io::tensor_from_json<double>(item.value(), "/state/" + item.key()));
        }
        state = layer.load_state(initial, use_double);
        if (state->batch() != view.q.dim(0)) {
            throw InputError("/state: holds " + std::to_string(state->batch()) + " sequences, /inputs/q " +
                             std::to_string(view.q.dim(0)));
        }
    } else {
        state = layer.initial_state(view.q.rank() > 0 ? view.q.dim(0) : 0, use_double);
    }
    const Tensor<S> o = layer.forward(view, *state);
    json out;
    out["outputs"]["o"] = io::tensor_to_json(o.view());
    for (const auto& [name, tensor] : layer.save_state(*state)) out["state"][name] = io::tensor_to_json(tensor.view());
    return out;
}

}  // namespace

Action add_run_command(CLI::App& app) {
    struct Options {
        std::string spec, input, output, precision = "float64";
        bool force = false;
    };
    auto options = std::make_shared<Options>();
    CLI::App* command = app.add_subcommand(
        "run", "Run a spec on the tensors of a JSON file and write the output o and the final state "
               "(tensor format: docs/specs.md)");
    command->add_option("spec", options->spec, "Spec file")->required()->check(CLI::ExistingFile);
    command->add_option("--input", options->input, "JSON file with {\"inputs\": {q, k, v, gates...}, \"state\": {...}}")
        ->required()
        ->check(CLI::ExistingFile);
    command->add_option("--output", options->output, "JSON file to write {\"outputs\": {\"o\"}, \"state\": {...}}")
        ->required();
    command->add_option("--precision", options->precision, "Scalar type of the run")
        ->check(CLI::IsMember({"float64", "float32"}))
        ->capture_default_str();
    command->add_flag("--force", options->force, "Overwrite an existing output file");
    return [options]() {
        if (fs::exists(options->output) && !options->force) {
            std::cerr << "error: '" << options->output << "' exists; pass --force to overwrite it\n";
            return exit_bad_input;
        }
        LayerSpec spec;
        try {
            spec = load_spec_file(options->spec);
        } catch (const SpecError& e) {
            std::cerr << "error: " << options->spec << ": " << e.what() << "\n";
            return exit_bad_input;
        }
        const auto layer = build_layer(spec);
        const json file = io::read_json_file(options->input);
        if (!file.is_object() || !file.contains("inputs") || !file.at("inputs").is_object()) {
            throw InputError("'" + options->input + "': expected {\"inputs\": {\"q\": tensor, \"k\": ..., \"v\": ...}}");
        }
        json out = options->precision == "float64" ? run_in<double>(*layer, file, true) : run_in<float>(*layer, file, false);
        out["spec"] = spec.name;
        out["combination"] = combination_of(spec);
        out["precision"] = options->precision;
        write_file_atomically(options->output, out.dump() + "\n");
        return exit_ok;
    };
}

}  // namespace miras::cli
