// A downstream program: a preset template used directly, and the same model loaded from a JSON spec
// through the registry. Both must give the same outputs.
#include <cmath>
#include <cstdio>

#include <miras/miras.hpp>
#include <miras/spec/spec.hpp>

int main() {
    using namespace miras;
    auto layer = presets::gated_deltanet(LayerOptions{.heads = 2, .key_dim = 4, .value_dim = 4});

    const Index B = 1, T = 3, H = 2, K = 4;
    Tensor<double> q({B, T, H, K}, 0.5), k({B, T, H, K}, 0.5), v({B, T, H, K}, 1.0);
    Tensor<double> g({B, T, H}, -0.1);
    Tensor<double> eta({B, T, H}, 0.9);
    Inputs<double> inputs{q.view(), k.view(), v.view(), {{"g", g.view()}, {"eta", eta.view()}}};

    auto state = layer.initial_state<double>(B);
    const Tensor<double> o = layer.forward(inputs, state);
    const Tensor<double> W = layer.save_state(state).at("W");
    std::printf("template: o[0] = %.6f, W[0, 0] = %.6f\n", o[0], W[0]);

    const LayerSpec spec = parse_spec_text(R"({
        "name": "gated_deltanet",
        "memory": {"type": "matrix"},
        "attentional_bias": {"type": "l2"},
        "retention": {"type": "decay", "gate": {"gate": "per_token", "axis": "head"}},
        "algorithm": {"type": "gd", "rate": {"gate": "per_token", "axis": "head"}},
        "dims": {"heads": 2, "key": 4, "value": 4}
    })", "<consumer>");
    const std::unique_ptr<AnyLayer> from_json = build_layer(spec);
    auto json_state = from_json->initial_state(B, /*use_double=*/true);
    const Tensor<double> o_json = from_json->forward(inputs, *json_state);
    std::printf("spec %s: %s/%s/%s/%s, o[0] = %.6f\n", spec.name.c_str(), from_json->memory_name().c_str(),
                from_json->bias_name().c_str(), from_json->retention_name().c_str(),
                from_json->algorithm_name().c_str(), o_json[0]);

    double difference = 0.0;
    for (Index i = 0; i < o.size(); ++i) difference = std::max(difference, std::abs(o[i] - o_json[i]));
    return std::isfinite(o[0]) && o.size() == B * T * H * K && difference == 0.0 ? 0 : 1;
}
