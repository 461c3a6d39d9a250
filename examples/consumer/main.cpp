// Uses a preset template directly: Gated DeltaNet on a short sequence, state carried across calls.
#include <cmath>
#include <cstdio>

#include <miras/miras.hpp>

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

    std::printf("o[0] = %.6f, W[0, 0] = %.6f\n", o[0], W[0]);
    return std::isfinite(o[0]) && o.size() == B * T * H * K ? 0 : 1;
}
