// Inputs of a layer call and the checks that run on them before any state moves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <list>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "miras/core/gate.hpp"
#include "miras/core/parallel.hpp"

namespace miras {

/// Sizes of one layer: heads H, key dimension K, value dimension V, the key feature dimension
/// (K unless a feature map changes it) and the number of pairs written per token.
struct LayerDims {
    Index heads = 1;
    Index key = 1;
    Index value = 1;
    Index key_features = 1;
    Index steps_per_token = 1;
};

/// The tensors of one call. q is [B, T, H, K]; k is [B, T * n, H, K] and v is [B, T * n, H, V],
/// where n is the number of pairs written per token (1 unless the layer writes several). Gates
/// and extra per-token inputs (a read key p, the vectors a and b of a rank-one correction) are
/// looked up by name.
template <class S>
struct Inputs {
    TensorView<S> q, k, v;
    std::map<std::string, TensorView<S>, std::less<>> gates;
};

namespace detail {

inline std::string position_string(const Shape& shape, Index flat, const char* letters) {
    std::vector<Index> index(shape.size());
    for (std::size_t axis = shape.size(); axis-- > 0;) {
        index[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    std::ostringstream out;
    out << "[";
    for (std::size_t axis = 0; axis < shape.size(); ++axis) {
        if (axis > 0) out << ", ";
        if (letters != nullptr && letters[axis] != '\0') out << letters[axis] << "=";
        out << index[axis];
    }
    out << "]";
    return out.str();
}

/// Returns whether every from[i] is finite for i < size, and with Copy sets to[i] = from[i] *
/// factor in the same pass. For float and double the test is a branch-free pass over the exponent
/// bits (all ones for infinities and NaN), which the compiler vectorises with the copy.
template <bool Copy, class S, class Factor>
bool finite_pass(const S* from, Index size, [[maybe_unused]] Factor factor, [[maybe_unused]] S* to) {
    if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
        using Bits = std::conditional_t<std::is_same_v<S, float>, std::uint32_t, std::uint64_t>;
        constexpr Bits exponent = std::is_same_v<S, float> ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
        Bits non_finite = 0;
        for (Index i = 0; i < size; ++i) {
            Bits bits;
            std::memcpy(&bits, from + i, sizeof bits);
            non_finite |= static_cast<Bits>((bits & exponent) == exponent);
            if constexpr (Copy) to[i] = from[i] * factor;
        }
        return non_finite == 0;
    } else {
        if constexpr (Copy) {
            for (Index i = 0; i < size; ++i) to[i] = from[i] * factor;
        }
        for (Index i = 0; i < size; ++i) {
            if (!std::isfinite(value_of(from[i]))) return false;
        }
        return true;
    }
}

/// Whether every value is finite (finite_pass).
template <class S>
bool all_finite(const S* data, Index size) {
    return finite_pass</*Copy=*/false>(data, size, /*factor=*/0, static_cast<S*>(nullptr));
}

/// Sets to[i] = from[i] * factor for i < size and returns whether every from[i] is finite: a copy
/// and a check in one pass, for the chunked forms that check their inputs as they read them.
template <class S>
bool scale_into_finite(const S* from, Index size, S factor, S* to) {
    return finite_pass</*Copy=*/true>(from, size, factor, to);
}

/// Returns whether every value is finite and in `range`, as in_range decides for each value. For
/// float and double this is one branch-free pass.
template <class S>
bool all_in_range(const S* data, Index size, Range range) {
    if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
        if (range == Range::any) return all_finite(data, size);
        // NaN fails every comparison, and the infinities lie outside [low, high].
        S low = std::numeric_limits<S>::lowest(), high = std::numeric_limits<S>::max();
        if (range == Range::log_gate) high = S(0);
        if (range == Range::nonnegative || range == Range::positive) low = S(0);
        const bool strict = range == Range::positive;
        // Integer flags rather than bool, so that the compiler vectorises the loop.
        unsigned outside = 0;
        for (Index i = 0; i < size; ++i) {
            outside |= static_cast<unsigned>(!(data[i] >= low)) | static_cast<unsigned>(!(data[i] <= high)) |
                       static_cast<unsigned>(strict & (data[i] == S(0)));
        }
        return outside == 0;
    } else {
        for (Index i = 0; i < size; ++i) {
            if (!in_range(value_of(data[i]), range)) return false;
        }
        return true;
    }
}

/// Returns whether every value is finite, reading a range in up to `threads` parts of at least
/// 2^18 values at once (a range under 2^19 values stays on one thread). The
/// reads run at the speed of memory, and a single-threaded pass over the inputs and outputs of a
/// call would limit the speed-up of its threads.
template <class S>
bool all_finite(const S* data, Index size, int threads) {
    constexpr Index smallest_part = Index(1) << 18;
    const Index parts = std::min<Index>(std::max(threads, 1), size / smallest_part);
    if (parts <= 1) return all_finite(data, size);
    std::vector<char> finite(static_cast<std::size_t>(parts), 1);
    parallel_for(parts, threads, [&](Index part) {
        const Index first = size * part / parts, last = size * (part + 1) / parts;
        finite[static_cast<std::size_t>(part)] = all_finite(data + first, last - first) ? 1 : 0;
    });
    return std::all_of(finite.begin(), finite.end(), [](char ok) { return ok != 0; });
}

/// Throws an InputError at the first non-finite value of the tensor.
template <class S>
void check_finite(const TensorView<S>& tensor, const std::string& description, const char* letters, int threads = 1) {
    if (all_finite(tensor.data(), tensor.size(), threads)) return;
    for (Index i = 0; i < tensor.size(); ++i) {
        double x = value_of(tensor.data()[i]);
        if (!std::isfinite(x)) {
            std::ostringstream out;
            out << description << " at " << position_string(tensor.shape(), i, letters) << " is " << x
                << "; valid is a finite value";
            throw InputError(out.str());
        }
    }
}

/// Throws a NumericalError at the first non-finite output [B, T, H, V].
template <class S>
void check_output_finite(const S* output, const Shape& shape, int threads = 1) {
    const Index size = element_count(shape);
    if (all_finite(output, size, threads)) return;
    for (Index i = 0; i < size; ++i) {
        const double x = value_of(output[i]);
        if (!std::isfinite(x)) {
            std::ostringstream out;
            out << "output at " << position_string(shape, i, "bthc") << " is " << x
                << ", not finite, from finite inputs: the state diverged. The layer does not normalise keys; "
                   "a delta rule stays bounded when beta * ||k||^2 <= 2 (keys of unit norm and rates in [0, 2]), "
                   "and an inner optimiser when its rate is small. The state of this call is not usable";
            throw NumericalError(out.str());
        }
    }
}

}  // namespace detail

/// The values of a per-token gate with one value per channel, [B, rows, H, C] with rows = T, or
/// T times the steps per token for a gate per step.
template <class S>
struct ChannelGateRows {
    const S* data = nullptr;
    Index rows = 0, heads = 0, channels = 0;
    bool per_step = false;
    Range range = Range::any;

    /// The C values of sequence b at row `row` (a token, or a step for a gate per step) and head h.
    const S* at(Index b, Index row, Index h) const { return data + ((b * rows + row) * heads + h) * channels; }
};

namespace detail {

/// Returns whether the values of every gate in `gates` at sequence b, token t, step `step` and
/// head h lie in the gate's range (all_in_range).
template <class S>
bool channel_gates_in_range(const std::vector<ChannelGateRows<S>>& gates, Index b, Index t, Index step, Index h) {
    bool in_range = true;
    for (const ChannelGateRows<S>& gate : gates) {
        in_range = in_range && all_in_range(gate.at(b, gate.per_step ? step : t, h), gate.channels, gate.range);
    }
    return in_range;
}

}  // namespace detail

/// Resolves the gates a layer declares against the inputs of one call, checking shapes and ranges.
template <class S>
class GateBinder {
public:
    GateBinder(const Inputs<S>& inputs, const LayerDims& dims, Index batch, Index tokens)
        : inputs_(inputs), dims_(dims), batch_(batch), tokens_(tokens) {}

    Index channels(const GateSpec& spec) const {
        if (spec.channels > 0 && spec.config.axis != Axis::head) return spec.channels;
        switch (spec.config.axis) {
            case Axis::head: return 1;
            case Axis::key: return dims_.key_features;
            case Axis::value: return dims_.value;
        }
        return 1;
    }

    BoundGate<S> bind(const GateSpec& spec) {
        const Index C = channels(spec);
        const Index H = dims_.heads;
        if (!spec.config.per_token) return bind_fixed(spec, C);

        const Index steps = spec.per_step ? dims_.steps_per_token : 1;
        auto found = inputs_.gates.find(spec.name);
        if (found == inputs_.gates.end() || found->second.empty()) {
            Shape required = {batch_, tokens_ * steps, H};
            if (spec.config.axis != Axis::head) required.push_back(C);
            throw InputError("missing per-token input '" + spec.name + "' (" + axis_name(spec.config.axis) +
                             " axis); the layer declares it as a per-token gate, so pass a tensor of shape " +
                             shape_string(required) + " with " + range_description(spec.range));
        }
        const TensorView<S>& tensor = found->second;
        Shape expected = {batch_, tokens_ * steps, H};
        bool matches = tensor.shape() == expected;
        if (spec.config.axis == Axis::head) {
            Shape with_unit = {batch_, tokens_ * steps, H, 1};
            matches = matches || tensor.shape() == with_unit;
        } else {
            expected.push_back(C);
            matches = tensor.shape() == expected;
        }
        if (!matches) {
            throw InputError("input '" + spec.name + "' has shape " + shape_string(tensor.shape()) + ", expected " +
                             shape_string(expected) +
                             (spec.config.axis == Axis::head ? " = [B, T, H]"
                                                             : " = [B, T, H, C] with C = " + std::to_string(C) +
                                                                   " " + axis_name(spec.config.axis) + " channels"));
        }
        per_token_.push_back({spec, &tensor});
        BoundGate<S> gate;
        gate.data = tensor.data();
        gate.channels = spec.config.axis == Axis::head ? 1 : C;
        gate.stride_h = gate.channels;
        gate.stride_t = H * gate.stride_h;
        gate.stride_b = tokens_ * steps * gate.stride_t;
        return gate;
    }

    /// Checks that every per-token gate bound so far contains values in its range. The values are
    /// read at each call, so a caller that refills the same buffers checks them again. With
    /// `channel_gates` false it leaves out the gates with a value per channel (channel_gates()),
    /// which a chunked form checks row by row as it reads its inputs.
    void check_values(bool channel_gates = true) const {
        for (const auto& [spec, tensor] : per_token_) {
            if (!channel_gates && spec.config.axis != Axis::head) continue;
            if (detail::all_in_range(tensor->data(), tensor->size(), spec.range)) continue;
            const char* letters = spec.config.axis == Axis::head ? "bth" : "bthc";
            for (Index i = 0; i < tensor->size(); ++i) {
                const double x = value_of(tensor->data()[i]);
                if (!in_range(x, spec.range)) {
                    std::ostringstream out;
                    out << "input '" << spec.name << "' at " << detail::position_string(tensor->shape(), i, letters)
                        << " is " << x << "; valid is " << range_description(spec.range);
                    throw InputError(out.str());
                }
            }
        }
    }

    /// Returns the per-token gates bound so far that have a value per channel, the ones that
    /// check_values(false) leaves out.
    std::vector<ChannelGateRows<S>> channel_gates() const {
        std::vector<ChannelGateRows<S>> gates;
        for (const auto& [spec, tensor] : per_token_) {
            if (spec.config.axis == Axis::head) continue;
            gates.push_back({tensor->data(), tensor->dim(1), tensor->dim(2), tensor->dim(3), spec.per_step, spec.range});
        }
        return gates;
    }

private:
    struct PerTokenGate {
        GateSpec spec;
        const TensorView<S>* tensor;
    };

    BoundGate<S> bind_fixed(const GateSpec& spec, Index C) {
        const auto& fixed = spec.config.fixed;
        const Index H = dims_.heads;
        const Index n = static_cast<Index>(fixed.size());
        if (n != 1 && n != H && n != H * C) {
            throw InputError("fixed gate '" + spec.name + "' has " + std::to_string(n) +
                             " values; expected 1, H = " + std::to_string(H) + " or H * C = " +
                             std::to_string(H * C) + " (" + axis_name(spec.config.axis) + " axis)");
        }
        for (Index i = 0; i < n; ++i) {
            if (!in_range(fixed[static_cast<std::size_t>(i)], spec.range)) {
                std::ostringstream out;
                out << "fixed gate '" << spec.name << "' value " << i << " is " << fixed[static_cast<std::size_t>(i)]
                    << "; valid is " << range_description(spec.range);
                throw InputError(out.str());
            }
        }
        auto& values = storage_.emplace_back();
        for (double x : fixed) values.push_back(S(x));
        BoundGate<S> gate;
        gate.data = values.data();
        gate.channels = (n == H * C && C > 1) ? C : 1;
        gate.stride_h = (n == 1) ? 0 : gate.channels;
        return gate;
    }

    const Inputs<S>& inputs_;
    LayerDims dims_;
    Index batch_;
    Index tokens_;
    std::list<std::vector<S>> storage_;  // converted fixed values; list keeps their addresses stable
    std::vector<PerTokenGate> per_token_;  // the gates bound to inputs, whose values check_values() reads
};

}  // namespace miras
