// Gates: per-head or per-channel values that are fixed or given per token.
//
// A gate is declared by a component (its name, axis and valid range) and configured by the user
// (fixed values or a per-token input tensor). Per-token tensors are [B, T, H] for a head gate and
// [B, T, H, C] for a channel gate, where C is the size of the key or value axis.
#pragma once

#include <limits>
#include <map>
#include <string>
#include <vector>

#include "miras/core/scalar.hpp"

namespace miras {

/// The axis a gate varies along: one value per head, or one per key channel or per value channel.
enum class Axis { head, key, value };

/// The range of values a gate accepts.
enum class Range {
    log_gate,     // g <= 0, the log of a decay in (0, 1]
    nonnegative,  // rates and strengths
    positive,     // ridge terms and scales that divide
    any,          // vectors such as the keys of a rank-one correction
};

inline const char* axis_name(Axis axis) {
    switch (axis) {
        case Axis::head: return "head";
        case Axis::key: return "key";
        case Axis::value: return "value";
    }
    return "?";
}

inline const char* range_description(Range range) {
    switch (range) {
        case Range::log_gate: return "a finite log-gate g <= 0 (decay = exp(g) in (0, 1])";
        case Range::nonnegative: return "a finite value >= 0";
        case Range::positive: return "a finite value > 0";
        case Range::any: return "a finite value";
    }
    return "?";
}

inline bool in_range(double x, Range range) {
    if (!std::isfinite(x)) return false;
    switch (range) {
        case Range::log_gate: return x <= 0.0;
        case Range::nonnegative: return x >= 0.0;
        case Range::positive: return x > 0.0;
        case Range::any: return true;
    }
    return false;
}

/// The user configuration of one gate: its axis and fixed values, or a per-token input.
struct GateConfig {
    Axis axis = Axis::head;
    bool per_token = false;
    /// Fixed values: one for all heads and channels, H (one per head) or H * C (per head and channel).
    std::vector<double> fixed{1.0};

    static GateConfig constant(double value, Axis axis = Axis::head) { return {axis, false, {value}}; }
    static GateConfig per_head(std::vector<double> values) { return {Axis::head, false, std::move(values)}; }
    static GateConfig input(Axis axis = Axis::head) { return {axis, true, {}}; }
};

/// A gate as a component declares it.
struct GateSpec {
    std::string name;
    GateConfig config;
    Range range = Range::nonnegative;
    /// Time entries per token of a per-token tensor: 1, or the steps per token for the inputs of
    /// an algorithm that writes several pairs per token.
    bool per_step = false;
    /// Channel count of a channel gate when it is not the size of its axis (0: the axis size).
    Index channels = 0;
};

/// The values of one gate at one (b, t, h): one value (broadcast) or one per channel.
template <class S>
struct GateValues {
    const S* data = nullptr;
    Index count = 1;

    S operator[](Index i) const { return count == 1 ? data[0] : data[i]; }
    bool scalar() const { return count == 1; }
};

/// A gate resolved for one forward call: where its values live and how to step through them.
template <class S>
struct BoundGate {
    const S* data = nullptr;
    Index stride_b = 0, stride_t = 0, stride_h = 0;
    Index channels = 1;

    GateValues<S> at(Index b, Index t, Index h) const {
        return {data + b * stride_b + t * stride_t + h * stride_h, channels};
    }
};

}  // namespace miras
