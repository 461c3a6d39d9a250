// The checks of `miras check`. Each one compares two routes to the same numbers.
//   stepping       one call over T tokens vs T calls of one token with the state carried;
//   split_resume   one call vs two calls whose state goes through save_state / load_state;
//   finite         a long run at the probe gates, unit-norm keys, queries and values (float);
//   inner_gradient J^T dl/dy of the memory and bias vs a central difference of the inner loss;
//   update_direction  the layer's own one-token step vs minus that finite-difference gradient;
//   equivalent_to  this layer vs the layer of another spec on the same inputs;
//   probe          what a memorisation probe reads back vs the values written.
#include "miras/spec/check.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <sstream>

#include "registry.hpp"

namespace miras {
namespace {

using Status = CheckResult::Status;
using nlohmann::json;

Index gate_channels(const GateSpec& spec, const LayerDims& dims) {
    if (spec.channels > 0 && spec.config.axis != Axis::head) return spec.channels;
    switch (spec.config.axis) {
        case Axis::head: return 1;
        case Axis::key: return dims.key_features;
        case Axis::value: return dims.value;
    }
    return 1;
}

void fill_unit_rows(Tensor<double>& tensor, std::mt19937_64& rng) {
    std::normal_distribution<double> normal(0.0, 1.0);
    const Index width = tensor.dim(tensor.rank() - 1);
    for (Index row = 0; row < tensor.size() / width; ++row) {
        double norm = 0.0;
        for (Index c = 0; c < width; ++c) {
            tensor[row * width + c] = normal(rng);
            norm += tensor[row * width + c] * tensor[row * width + c];
        }
        norm = std::sqrt(norm);
        for (Index c = 0; c < width; ++c) tensor[row * width + c] /= norm;
    }
}

double random_gate_value(Range range, Index channels, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    switch (range) {
        case Range::log_gate: return std::log(0.6 + 0.4 * uniform(rng));
        case Range::nonnegative: return 0.1 + 0.9 * uniform(rng);
        case Range::positive: return 0.5 + uniform(rng);
        case Range::any: {
            std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(static_cast<double>(channels)));
            return normal(rng);
        }
    }
    return 0.0;
}

/// Returns tokens [begin, end) of a tensor whose axis 1 has `factor` entries per token.
Tensor<double> slice_tokens(const Tensor<double>& tensor, Index begin, Index end, Index factor) {
    Shape shape = tensor.shape();
    const Index B = shape[0], T = shape[1];
    Index inner = 1;
    for (std::size_t axis = 2; axis < shape.size(); ++axis) inner *= shape[axis];
    shape[1] = (end - begin) * factor;
    Tensor<double> out(shape);
    for (Index b = 0; b < B; ++b) {
        const double* src = tensor.data() + (b * T + begin * factor) * inner;
        std::copy(src, src + shape[1] * inner, out.data() + b * shape[1] * inner);
    }
    return out;
}

/// max |a - b| / max(1e-300, max |b|), or infinity when the shapes differ or a value is not finite.
double relative_error(const TensorView<double>& a, const TensorView<double>& b) {
    if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
    double worst = 0.0, scale = 0.0;
    for (Index i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a.data()[i]) || !std::isfinite(b.data()[i])) return std::numeric_limits<double>::infinity();
        worst = std::max(worst, std::abs(a.data()[i] - b.data()[i]));
        scale = std::max(scale, std::abs(b.data()[i]));
    }
    return worst / std::max(scale, 1e-300);
}

double state_error(const NamedTensors<double>& a, const NamedTensors<double>& b) {
    if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
    double worst = 0.0;
    for (const auto& [name, tensor] : a) {
        auto found = b.find(name);
        if (found == b.end()) return std::numeric_limits<double>::infinity();
        worst = std::max(worst, relative_error(tensor.view(), found->second.view()));
    }
    return worst;
}

std::string scientific(double x) {
    std::ostringstream out;
    out.precision(2);
    out << std::scientific << x;
    return out.str();
}

CheckResult compare(const std::string& name, double error, double tolerance, const std::string& what) {
    const bool ok = error <= tolerance;
    return {name, ok ? Status::ok : Status::failed,
            what + " relative error " + scientific(error) + (ok ? " <= " : " > ") + scientific(tolerance)};
}

CheckResult check_stepping(const AnyLayer& layer, const CheckOptions& options) {
    const Index B = 2, T = 9;
    const SpecInputs inputs = random_inputs(layer, B, T, options.seed);
    auto whole_state = layer.initial_state(B, true);
    const Tensor<double> whole = layer.forward(inputs.view(), *whole_state);

    auto state = layer.initial_state(B, true);
    double error = 0.0;
    for (Index t = 0; t < T; ++t) {
        const SpecInputs token = inputs.slice(t, t + 1);
        const Tensor<double> o = layer.forward(token.view(), *state);
        error = std::max(error, relative_error(o.view(), slice_tokens(whole, t, t + 1, 1).view()));
    }
    error = std::max(error, state_error(layer.save_state(*state), layer.save_state(*whole_state)));
    return compare("stepping", error, options.execution_tolerance, "9 one-token calls vs one call (outputs, state):");
}

CheckResult check_split_resume(const AnyLayer& layer, const CheckOptions& options) {
    const Index B = 2, T = 11, split = 4;
    const SpecInputs inputs = random_inputs(layer, B, T, options.seed + 1);
    auto whole_state = layer.initial_state(B, true);
    const Tensor<double> whole = layer.forward(inputs.view(), *whole_state);

    auto first_state = layer.initial_state(B, true);
    const Tensor<double> first = layer.forward(inputs.slice(0, split).view(), *first_state);
    auto resumed = layer.load_state(layer.save_state(*first_state), true);
    const Tensor<double> second = layer.forward(inputs.slice(split, T).view(), *resumed);

    double error = relative_error(first.view(), slice_tokens(whole, 0, split, 1).view());
    error = std::max(error, relative_error(second.view(), slice_tokens(whole, split, T, 1).view()));
    error = std::max(error, state_error(layer.save_state(*resumed), layer.save_state(*whole_state)));
    return compare("split_resume", error, options.execution_tolerance,
                   "split at token 4 through save/load vs one call (outputs, state):");
}

CheckResult check_finite(const AnyLayer& layer, const LayerSpec& spec, Index horizon, unsigned seed) {
    const std::string name = "finite_" + std::to_string(horizon) + "_tokens";
    const SpecInputs inputs = random_inputs(layer, 1, horizon, seed, &spec.probe_gates);
    const auto as_float = [](const Tensor<double>& t) { return tensor_cast<float>(t.view()); };
    const Tensor<float> q = as_float(inputs.q), k = as_float(inputs.k), v = as_float(inputs.v);
    std::map<std::string, Tensor<float>> gates;
    Inputs<float> view{q.view(), k.view(), v.view(), {}};
    for (const auto& [gate, tensor] : inputs.gates) view.gates[gate] = gates.emplace(gate, as_float(tensor)).first->second.view();

    auto state = layer.initial_state(1, false);
    Tensor<float> o;
    try {
        o = layer.forward(view, *state);
    } catch (const NumericalError& e) {
        return {name, Status::failed, std::string(e.what()) + " (float)"};
    }
    double largest = 0.0;
    for (Index i = 0; i < o.size(); ++i) {
        if (!std::isfinite(o[i])) {
            return {name, Status::failed, "output " + std::to_string(i) + " of token " +
                                              std::to_string(i / (o.size() / horizon)) + " is not finite (float)"};
        }
        largest = std::max(largest, std::abs(static_cast<double>(o[i])));
    }
    for (const auto& [state_name, tensor] : layer.save_state(*state)) {
        for (Index i = 0; i < tensor.size(); ++i) {
            if (!std::isfinite(tensor[i])) return {name, Status::failed, "state '" + state_name + "' is not finite (float)"};
        }
    }
    return {name, Status::ok, "float run at the probe gates; largest |o| = " + scientific(largest)};
}

CheckResult check_inner_gradient(const LayerSpec& spec, const CheckOptions& options) {
    const std::string key = spec.json.at("memory").at("type").get<std::string>() + "/" +
                            spec.json.at("attentional_bias").at("type").get<std::string>() + "/" +
                            spec.json.at("retention").at("type").get<std::string>() + "/" +
                            spec.json.at("algorithm").at("type").get<std::string>();
    const json& bias = spec.json.at("attentional_bias");
    if (bias.at("type") == "lp" && bias.at("smoothing") == "tanh_sign") {
        return {"inner_gradient", Status::skipped,
                "the tanh_sign smoothing replaces Sign(e) in the gradient only, so it is not the gradient of the loss"};
    }
    for (const auto& entry : spec_registry::all_entries()) {
        if (entry.key() != key) continue;
        const double error = entry.inner_gradient(spec.json, options.seed);
        if (error < 0.0) return {"inner_gradient", Status::skipped, "the kv_cache memory has no parameters"};
        return compare("inner_gradient", error, options.gradient_tolerance,
                       "J^T dl/dy vs central difference of l(W):");
    }
    return {"inner_gradient", Status::failed, "combination " + key + " is not registered"};
}

/// Runs the update-direction check where the update is a plain gradient step of the inner loss.
CheckResult check_update_direction(const LayerSpec& spec, const CheckOptions& options) {
    const std::string name = "update_direction";
    const json& j = spec.json;
    const std::string algorithm = j.at("algorithm").at("type").get<std::string>();
    if (algorithm != "gd" && algorithm != "implicit" && algorithm != "minibatch_gd" && algorithm != "momentum") {
        return {name, Status::skipped, "the " + algorithm + " update is not a step along the inner gradient"};
    }
    if (algorithm == "momentum" && j.at("algorithm").at("newton_schulz_steps").get<int>() > 0) {
        return {name, Status::skipped, "Newton-Schulz orthogonalises the momentum, which turns the step away from the gradient"};
    }
    if (algorithm == "minibatch_gd" && j.at("algorithm").at("rate_form") == "factored" &&
        j.at("algorithm").at("token_factor").at(0).get<double>() == 0.0) {
        return {name, Status::skipped, "token_factor[0] = 0 makes no step at the first token"};
    }
    if (algorithm == "momentum") {
        const json& gamma = j.at("algorithm").at("window_weight");
        if (gamma.contains("values")) {
            for (const auto& value : gamma.at("values")) {
                if (value.get<double>() == 0.0) return {name, Status::skipped, "a window weight gamma of 0 makes no step"};
            }
        }
    }
    if (j.at("retention").at("type") == "mirror") {
        return {name, Status::skipped, "the mirror retention maps the step through a nonlinear map (" +
                                           j.at("retention").at("kind").get<std::string>() + "), so it leaves the gradient's direction"};
    }
    const json& bias = j.at("attentional_bias");
    if (bias.at("type") == "lp" && bias.at("smoothing") == "tanh_sign") {
        return {name, Status::skipped, "the tanh_sign smoothing steps along a surrogate of the gradient"};
    }
    if (algorithm == "implicit" && j.at("algorithm").at("diagonal").get<bool>()) {
        return {name, Status::skipped, "the diagonal implicit step approximates the curvature term"};
    }
    if (j.at("execution").at("steps_per_token").get<Index>() != 1) {
        return {name, Status::skipped, "several pairs per token make several steps"};
    }
    const json& rate = j.at("algorithm").at("rate");
    if (rate.contains("values") && rate.at("values").size() > 1) {
        return {name, Status::skipped, "fixed rates that differ across heads or channels change the direction"};
    }
    const json& retention = j.at("retention");
    if (retention.at("type") == "decay" && retention.at("gate").contains("values")) {
        for (const auto& g : retention.at("gate").at("values")) {
            if (g.get<double>() != 0.0) return {name, Status::skipped, "a fixed decay other than 1 moves the state too"};
        }
    }
    const std::string key = j.at("memory").at("type").get<std::string>() + "/" +
                            j.at("attentional_bias").at("type").get<std::string>() + "/" +
                            retention.at("type").get<std::string>() + "/" + algorithm;
    for (const auto& entry : spec_registry::all_entries()) {
        if (entry.key() != key) continue;
        return compare(name, entry.update_direction(j, options.seed), options.gradient_tolerance,
                       "one-token update vs -grad l by central difference (unit directions):");
    }
    return {name, Status::failed, "combination " + key + " is not registered"};
}

CheckResult check_equivalent(const AnyLayer& layer, const LayerSpec& spec, const CheckOptions& options) {
    const std::string name = "equivalent_to";
    const std::string path = spec.expect.contains("equivalent_to_path") ? spec.expect.at("equivalent_to_path").get<std::string>()
                                                                         : spec.expect.at("equivalent_to").get<std::string>();
    const LayerSpec other_spec = load_spec_file(path);
    const auto other = build_layer(other_spec);
    const LayerDims &a = layer.dims(), &b = other->dims();
    if (a.heads != b.heads || a.key != b.key || a.value != b.value || a.steps_per_token != b.steps_per_token) {
        return {name, Status::failed, "'" + other_spec.name + "' has other dims or steps per token"};
    }
    const Index B = 2, T = 13;
    SpecInputs inputs = random_inputs(layer, B, T, options.seed + 2);
    // Gates only the other layer reads are added; gates of the same name are shared.
    const SpecInputs extra = random_inputs(*other, B, T, options.seed + 3);
    for (const auto& [gate, tensor] : extra.gates) inputs.gates.emplace(gate, tensor);

    auto state = layer.initial_state(B, true), other_state = other->initial_state(B, true);
    const Tensor<double> o = layer.forward(inputs.view(), *state);
    const Tensor<double> reference = other->forward(inputs.view(), *other_state);
    const double tolerance = spec.expect.at("tolerance").get<double>();
    return compare(name, relative_error(o.view(), reference.view()), tolerance,
                   "outputs vs '" + other_spec.name + "':");
}

/// Copies a state of one sequence into `batch` sequences.
NamedTensors<double> replicate(const NamedTensors<double>& state, Index batch) {
    NamedTensors<double> out;
    for (const auto& [name, tensor] : state) {
        Shape shape = tensor.shape();
        shape[0] = batch;
        Tensor<double> copies(shape);
        for (Index b = 0; b < batch; ++b) std::copy(tensor.values().begin(), tensor.values().end(), copies.data() + b * tensor.size());
        out.emplace(name, std::move(copies));
    }
    return out;
}

}  // namespace

ProbeResult memorisation_probe(const LayerSpec& spec, Index tokens, unsigned seed) {
    const auto writer = build_layer(spec);
    LayerSpec read_spec = spec;
    read_spec.json["execution"]["read"] = "before_write";
    read_spec.json["execution"]["query_scale"] = 1.0;
    const auto reader = build_layer(read_spec);

    const LayerDims& dims = writer->dims();
    const Index H = dims.heads, K = dims.key, V = dims.value, n = dims.steps_per_token;
    const Index pairs = tokens * n;
    const SpecInputs written = random_inputs(*writer, 1, tokens, seed, &spec.probe_gates);
    auto state = writer->initial_state(1, true);
    writer->forward(written.view(), *state);

    // One read per written pair, as a batch of copies of the final state.
    SpecInputs reads = random_inputs(*reader, pairs, 1, seed + 1, &spec.probe_gates);
    for (Index i = 0; i < pairs; ++i) {
        for (Index x = 0; x < H * K; ++x) reads.q[i * H * K + x] = written.k[i * H * K + x];
    }
    auto read_state = reader->load_state(replicate(writer->save_state(*state), pairs), true);
    const Tensor<double> o = reader->forward(reads.view(), *read_state);

    double error = 0.0;
    Index correct = 0;
    for (Index i = 0; i < pairs; ++i) {
        for (Index h = 0; h < H; ++h) {
            const double* out = o.data() + (i * H + h) * V;
            Index best = 0;
            double best_score = -std::numeric_limits<double>::infinity();
            for (Index j = 0; j < pairs; ++j) {
                const double* v = written.v.data() + (j * H + h) * V;
                double score = 0.0;
                for (Index c = 0; c < V; ++c) score += out[c] * v[c];
                if (score > best_score) {
                    best_score = score;
                    best = j;
                }
                if (j == i) {
                    for (Index c = 0; c < V; ++c) error += (out[c] - v[c]) * (out[c] - v[c]);
                }
            }
            if (best == i) ++correct;
        }
    }
    ProbeResult result;
    result.pairs = pairs;
    result.accuracy = static_cast<double>(correct) / static_cast<double>(pairs * H);
    result.mean_squared_error = error / static_cast<double>(pairs * H);
    return result;
}

namespace {

CheckResult check_probe(const LayerSpec& spec, const CheckOptions& options) {
    const json& thresholds = spec.expect.at("probe");
    const Index tokens = thresholds.value("pairs", spec.json.at("dims").at("key").get<Index>());
    const ProbeResult probe = memorisation_probe(spec, tokens, options.seed + 5);
    const double accuracy = probe.accuracy, error = probe.mean_squared_error;
    const Index pairs = probe.pairs;

    bool ok = std::isfinite(error);
    std::ostringstream detail;
    detail << pairs << " pairs: accuracy " << accuracy;
    if (thresholds.contains("min_accuracy")) {
        const double min_accuracy = thresholds.at("min_accuracy").get<double>();
        ok = ok && accuracy >= min_accuracy;
        detail << (accuracy >= min_accuracy ? " >= " : " < ") << min_accuracy;
    }
    detail << ", mean squared error " << scientific(error);
    if (thresholds.contains("max_error")) {
        const double max_error = thresholds.at("max_error").get<double>();
        ok = ok && error <= max_error;
        detail << (error <= max_error ? " <= " : " > ") << scientific(max_error);
    }
    return {"probe", ok ? Status::ok : Status::failed, detail.str()};
}

template <class F>
CheckResult guarded(const std::string& name, F&& run) {
    try {
        return run();
    } catch (const std::exception& e) {
        return {name, Status::failed, e.what()};
    }
}

}  // namespace

Inputs<double> SpecInputs::view() const {
    Inputs<double> inputs{q.view(), k.view(), v.view(), {}};
    for (const auto& [name, tensor] : gates) inputs.gates[name] = tensor.view();
    return inputs;
}

SpecInputs SpecInputs::slice(Index begin, Index end) const {
    const Index T = q.dim(1);
    const auto cut = [&](const Tensor<double>& t) { return slice_tokens(t, begin, end, t.dim(1) / T); };
    SpecInputs out{cut(q), cut(k), cut(v), {}};
    for (const auto& [name, tensor] : gates) out.gates.emplace(name, cut(tensor));
    return out;
}

SpecInputs random_inputs(const AnyLayer& layer, Index batch, Index tokens, unsigned seed,
                         const std::map<std::string, double>* constants) {
    std::mt19937_64 rng(seed);
    const LayerDims& dims = layer.dims();
    const Index H = dims.heads, n = dims.steps_per_token;
    SpecInputs in{Tensor<double>({batch, tokens, H, dims.key}), Tensor<double>({batch, tokens * n, H, dims.key}),
                  Tensor<double>({batch, tokens * n, H, dims.value}), {}};
    fill_unit_rows(in.q, rng);
    fill_unit_rows(in.k, rng);
    fill_unit_rows(in.v, rng);
    for (const GateSpec& gate : layer.gates()) {
        if (!gate.config.per_token) continue;
        const Index steps = gate.per_step ? n : 1;
        const Index C = gate_channels(gate, dims);
        Shape shape{batch, tokens * steps, H};
        if (gate.config.axis != Axis::head) shape.push_back(C);
        Tensor<double> values(shape);
        const auto constant = constants != nullptr ? constants->find(gate.name) : std::map<std::string, double>::const_iterator{};
        for (Index i = 0; i < values.size(); ++i) {
            values[i] = (constants != nullptr && constant != constants->end()) ? constant->second
                                                                               : random_gate_value(gate.range, C, rng);
        }
        in.gates.emplace(gate.name, std::move(values));
    }
    return in;
}

std::vector<CheckResult> run_spec_checks(const LayerSpec& spec, const CheckOptions& options) {
    const auto layer = build_layer(spec);
    std::vector<CheckResult> results;
    results.push_back(guarded("stepping", [&] { return check_stepping(*layer, options); }));
    results.push_back(guarded("split_resume", [&] { return check_split_resume(*layer, options); }));
    Index horizon = options.horizon;
    if (spec.expect.is_object() && spec.expect.contains("finite_for_tokens")) {
        horizon = spec.expect.at("finite_for_tokens").get<Index>();
    }
    results.push_back(guarded("finite", [&] { return check_finite(*layer, spec, horizon, options.seed + 4); }));
    results.push_back(guarded("inner_gradient", [&] { return check_inner_gradient(spec, options); }));
    results.push_back(guarded("update_direction", [&] { return check_update_direction(spec, options); }));
    if (spec.expect.is_object() && spec.expect.contains("equivalent_to")) {
        results.push_back(guarded("equivalent_to", [&] { return check_equivalent(*layer, spec, options); }));
    }
    if (spec.expect.is_object() && spec.expect.contains("probe")) {
        results.push_back(guarded("probe", [&] { return check_probe(spec, options); }));
    }
    return results;
}

}  // namespace miras
