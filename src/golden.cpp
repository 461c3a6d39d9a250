// The table from golden model names to presets, and the comparison of their outputs.
//
// Golden states are [B, H, K, V] (o_t = S_t^T q_t); miras states are W = S^T, [B, H, V, K]. States are
// transposed on the way in and out.
#include "miras/io/golden.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "miras/io/tensor_json.hpp"
#include "miras/layer/presets_deep.hpp"
#include "miras/miras.hpp"

namespace miras::golden {
namespace {

using nlohmann::json;

template <class S>
using TensorMap = std::map<std::string, Tensor<S>>;

template <class S>
struct GoldenInputs {
    TensorMap<S> tensors;
    json parameters;

    bool has(const std::string& name) const { return tensors.count(name) > 0; }
    const Tensor<S>& at(const std::string& name) const {
        auto found = tensors.find(name);
        if (found == tensors.end()) throw InputError("golden file has no input '" + name + "'");
        return found->second;
    }
};

/// Swaps the last two axes of a rank-4 tensor: [B, H, K, V] <-> [B, H, V, K].
template <class S>
Tensor<S> transpose_last(const Tensor<S>& in) {
    if (in.rank() != 4) throw InputError("state of shape " + shape_string(in.shape()) + " is not [B, H, rows, cols]");
    const Index B = in.dim(0), H = in.dim(1), R = in.dim(2), C = in.dim(3);
    Tensor<S> out({B, H, C, R});
    for (Index bh = 0; bh < B * H; ++bh) {
        for (Index r = 0; r < R; ++r) {
            for (Index c = 0; c < C; ++c) out[(bh * C + c) * R + r] = in[(bh * R + r) * C + c];
        }
    }
    return out;
}

template <class S>
LayerOptions options_from(const GoldenInputs<S>& in) {
    const Tensor<S>& q = in.at("q");
    const Tensor<S>& v = in.at("v");
    if (q.rank() != 4 || v.rank() != 4) throw InputError("golden q and v must be [B, T, H, D]");
    LayerOptions options;
    options.heads = q.dim(2);
    options.key_dim = q.dim(3);
    options.value_dim = v.dim(3);
    if (in.parameters.contains("query_scale")) options.query_scale = in.parameters.at("query_scale").template get<double>();
    return options;
}

template <class S>
Inputs<S> layer_inputs(const GoldenInputs<S>& in, std::initializer_list<std::pair<const char*, const char*>> gates) {
    Inputs<S> inputs;
    inputs.q = in.at("q").view();
    inputs.k = in.at("k").view();
    inputs.v = in.at("v").view();
    for (const auto& [file_name, gate_name] : gates) inputs.gates[gate_name] = in.at(file_name).view();
    return inputs;
}

/// Runs a layer with a single matrix state W, read from initial_state and written to final_state.
template <class L, class S>
TensorMap<S> run_matrix_state(const L& layer, const GoldenInputs<S>& in, const Inputs<S>& inputs) {
    auto state = layer.template initial_state<S>(inputs.q.dim(0));
    if (in.has("initial_state")) state = layer.load_state(std::map<std::string, Tensor<S>>{{"W", transpose_last(in.at("initial_state"))}});
    TensorMap<S> out;
    out["o"] = layer.forward(inputs, state);
    out["final_state"] = transpose_last(layer.save_state(state).at("W"));
    return out;
}

/// Per-head weights [H, rows, cols] in the reference's row-vector convention (z = x W), shared by
/// the batch, as miras state tensors [B, H, cols, rows].
template <class S>
Tensor<S> batch_transposed(const Tensor<S>& per_head, Index batch) {
    if (per_head.rank() != 3) throw InputError("golden TTT weights of shape " + shape_string(per_head.shape()) + " are not [H, rows, cols]");
    const Index H = per_head.dim(0), R = per_head.dim(1), C = per_head.dim(2);
    Tensor<S> out({batch, H, C, R});
    for (Index b = 0; b < batch; ++b) {
        for (Index h = 0; h < H; ++h) {
            for (Index r = 0; r < R; ++r) {
                for (Index c = 0; c < C; ++c) out[((b * H + h) * C + c) * R + r] = per_head[(h * R + r) * C + c];
            }
        }
    }
    return out;
}

template <class S>
std::vector<double> values_of(const Tensor<S>& t) {
    std::vector<double> out;
    for (Index i = 0; i < t.size(); ++i) out.push_back(static_cast<double>(t[i]));
    return out;
}

/// TTT-Linear and TTT-MLP in the flash-linear-attention form (variant flash_linear_attention) or
/// the official form (variant official). States are the transposed weights W1, b1 (, W2, b2).
template <class S>
TensorMap<S> run_ttt(const GoldenInputs<S>& in, Index depth) {
    const std::string variant = in.parameters.value("variant", std::string("official"));
    const Index b = in.parameters.value("minibatch_size", Index{16});
    const LayerOptions options = options_from(in);
    const auto ln_weight = values_of(in.at("ln_weight"));
    const auto ln_bias = values_of(in.at("ln_bias"));
    TensorMap<S> out;
    if (variant == "flash_linear_attention") {
        if (depth != 1) throw InputError("the flash_linear_attention TTT variant has depth 1 only");
        const auto layer = presets::ttt_linear_fla(options, b, ln_weight, ln_bias);
        const Inputs<S> inputs = layer_inputs(in, {{"eta", "eta"}});
        auto state = layer.template initial_state<S>(inputs.q.dim(0));
        out["o"] = layer.forward(inputs, state);
        const auto saved = layer.save_state(state);
        out["final_state"] = transpose_last(saved.at("W1"));
        out["final_state_bias"] = transpose_last(saved.at("b1"));
        return out;
    }
    if (variant != "official") {
        throw InputError("TTT variant '" + variant + "' is unknown; valid are official and flash_linear_attention");
    }
    const auto layer = presets::ttt(options, depth, b, values_of(in.at("token_factor")), ln_weight, ln_bias);
    const Inputs<S> inputs = layer_inputs(in, {{"lr", "eta"}});
    const Index B = inputs.q.dim(0);
    std::map<std::string, Tensor<S>> initial;
    for (Index m = 1; m <= depth; ++m) {
        for (const char* kind : {"W", "b"}) {
            const std::string name = kind + std::to_string(m);
            initial.emplace(name, batch_transposed(in.at(name), B));
        }
    }
    auto state = layer.load_state(initial);
    out["o"] = layer.forward(inputs, state);
    const auto saved = layer.save_state(state);
    for (const auto& [name, tensor] : initial) out["final_" + name] = transpose_last(saved.at(name));
    return out;
}

template <class S>
using Runner = std::function<TensorMap<S>(const GoldenInputs<S>&)>;

template <class S>
const std::map<std::string, Runner<S>>& runners() {
    static const std::map<std::string, Runner<S>> table = {
        {"linear_attention",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::linear_attention(options_from(in)), in, layer_inputs(in, {}));
         }},
        {"scalar_decay_linear_attention",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::mamba2(options_from(in)), in, layer_inputs(in, {{"g", "g"}}));
         }},
        {"gated_linear_attention",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::gla(options_from(in)), in, layer_inputs(in, {{"g", "g"}}));
         }},
        {"retention",
         [](const GoldenInputs<S>& in) {
             // The file gives gamma_h; RetNet's own preset computes the same 1 - 2^(-5-h).
             const Tensor<S>& gamma = in.at("gamma");
             std::vector<double> g;
             for (Index h = 0; h < gamma.size(); ++h) g.push_back(std::log(static_cast<double>(gamma[h])));
             presets::DecayedLinearAttention layer(options_from(in), {}, {}, DecayRetention{GateConfig::per_head(g)},
                                                   presets::unit_step());
             return TensorMap<S>{{"o", layer.forward(layer_inputs(in, {}))}};
         }},
        {"delta_rule",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::deltanet(options_from(in)), in, layer_inputs(in, {{"beta", "eta"}}));
         }},
        {"gated_delta_rule",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::gated_deltanet(options_from(in)), in,
                                     layer_inputs(in, {{"beta", "eta"}, {"g", "g"}}));
         }},
        {"gated_delta_rule_per_channel",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::kda(options_from(in)), in, layer_inputs(in, {{"beta", "eta"}, {"g", "g"}}));
         }},
        {"comba",
         [](const GoldenInputs<S>& in) {
             return run_matrix_state(presets::comba(options_from(in)), in,
                                     layer_inputs(in, {{"beta", "eta"}, {"g", "g"}, {"p", "p"}}));
         }},
        {"diagonal_plus_low_rank",
         [](const GoldenInputs<S>& in) {
             LayerOptions options = options_from(in);
             if (!options.query_scale) options.query_scale = 1.0 / std::sqrt(static_cast<double>(options.key_dim));
             return run_matrix_state(presets::rwkv7(options), in, layer_inputs(in, {{"g", "g"}, {"a", "a"}, {"b", "b"}}));
         }},
        {"mesa_exact",
         [](const GoldenInputs<S>& in) {
             const Tensor<S>& lamb = in.at("lamb");
             std::vector<double> lambda;
             for (Index i = 0; i < lamb.size(); ++i) lambda.push_back(static_cast<double>(lamb[i]));
             const auto layer = presets::mesanet(options_from(in), lambda);
             const Inputs<S> inputs = layer_inputs(in, {{"g", "g"}, {"beta", "beta"}});
             auto state = layer.template initial_state<S>(inputs.q.dim(0));
             if (in.has("initial_kv")) {
                 state = layer.load_state(std::map<std::string, Tensor<S>>{{"W", transpose_last(in.at("initial_kv"))},
                                                                          {"H", in.at("initial_kk")}});
             }
             TensorMap<S> out;
             out["o"] = layer.forward(inputs, state);
             auto saved = layer.save_state(state);
             out["final_kv"] = transpose_last(saved.at("W"));
             out["final_kk"] = saved.at("H");
             return out;
         }},
        {"ttt_linear", [](const GoldenInputs<S>& in) { return run_ttt(in, 1); }},
        {"ttt_mlp", [](const GoldenInputs<S>& in) { return run_ttt(in, 2); }},
        {"elementwise_linear_rnn",
         [](const GoldenInputs<S>& in) {
             // h_t = exp(g_t) * h_{t-1} + x_t is a vector memory with q = k = 1 and v = x.
             const Tensor<S>& x = in.at("x");
             if (x.rank() != 3) throw InputError("golden x must be [B, T, D]");
             const Index B = x.dim(0), T = x.dim(1), D = x.dim(2);
             LayerOptions options;
             options.key_dim = options.value_dim = D;
             options.query_scale = 1.0;
             const auto layer = presets::elementwise_linear_rnn(options);
             Tensor<S> ones({B, T, 1, D}, S(1));
             Tensor<S> v({B, T, 1, D}, x.values());
             Tensor<S> g({B, T, 1, D}, in.at("g").values());
             Inputs<S> inputs;
             inputs.q = ones.view();
             inputs.k = ones.view();
             inputs.v = v.view();
             inputs.gates["g"] = g.view();
             auto state = layer.template initial_state<S>(B);
             if (in.has("initial_state")) {
                 state = layer.load_state(std::map<std::string, Tensor<S>>{{"w", Tensor<S>({B, 1, 1, D}, in.at("initial_state").values())}});
             }
             Tensor<S> o = layer.forward(inputs, state);
             TensorMap<S> out;
             out["o"] = Tensor<S>({B, T, D}, o.values());
             out["final_state"] = Tensor<S>({B, D}, layer.save_state(state).at("w").values());
             return out;
         }},
    };
    return table;
}

template <class S>
FileResult run_file(const std::string& path, const json& file, Precision precision, const Tolerance& tolerance) {
    FileResult result;
    result.path = path;
    result.precision = precision;
    if (!file.is_object() || !file.contains("model") || !file.at("model").is_string()) {
        throw InputError("'" + path + "' has no string field \"model\"; it is not a golden file");
    }
    result.model = file.at("model").get<std::string>();
    const auto& table = runners<S>();
    auto runner = table.find(result.model);
    if (runner == table.end()) {
        std::string known;
        for (const auto& [name, unused] : table) known += (known.empty() ? "" : ", ") + name;
        throw InputError("'" + path + "' names the model '" + result.model + "', which has no preset; known models: " + known);
    }
    for (const char* field : {"inputs", "outputs"}) {
        if (!file.contains(field) || !file.at(field).is_object()) {
            throw InputError("'" + path + "' has no object field \"" + std::string(field) + "\"");
        }
    }

    GoldenInputs<S> in;
    in.parameters = file.value("parameters", json::object());
    for (const auto& [name, tensor] : file.at("inputs").items()) {
        in.tensors.emplace(name, io::tensor_from_json<S>(tensor, "/inputs/" + name));
    }
    const TensorMap<S> ours = runner->second(in);

    result.passed = true;
    for (const auto& [name, tensor] : file.at("outputs").items()) {
        const Tensor<double> reference = io::tensor_from_json<double>(tensor, "/outputs/" + name);
        auto found = ours.find(name);
        if (found == ours.end()) throw InputError("'" + path + "': the preset produces no output '" + name + "'");
        const Tensor<S>& mine = found->second;
        if (mine.shape() != reference.shape()) {
            throw InputError("'" + path + "': output '" + name + "' has shape " + shape_string(mine.shape()) +
                             ", the reference " + shape_string(reference.shape()));
        }
        Comparison c;
        c.output = name;
        double scale = 0.0;
        for (Index i = 0; i < reference.size(); ++i) {
            const double diff = std::abs(static_cast<double>(mine[i]) - reference[i]);
            c.max_abs_error = std::isnan(diff) ? INFINITY : std::max(c.max_abs_error, diff);
            scale = std::max(scale, std::abs(reference[i]));
        }
        c.max_rel_error = scale > 0.0 ? c.max_abs_error / scale : c.max_abs_error;
        c.reference_scale = scale;
        c.passed = precision == Precision::float64 ? c.max_rel_error <= tolerance.float64_rel
                                                   : c.max_abs_error <= tolerance.float32_bound(scale);
        result.passed = result.passed && c.passed;
        result.comparisons.push_back(c);
    }
    return result;
}

}  // namespace

std::vector<std::string> supported_models() {
    std::vector<std::string> names;
    for (const auto& [name, unused] : runners<double>()) names.push_back(name);
    return names;
}

FileResult check_file(const std::string& path, Precision precision, const Tolerance& tolerance) {
    const json file = io::read_json_file(path);
    if (precision == Precision::float64) return run_file<double>(path, file, precision, tolerance);
    return run_file<float>(path, file, precision, tolerance);
}

}  // namespace miras::golden
