// Learning rate with linear warmup then cosine annealing, lr(s) = floor + (peak - floor)
// (1 + cos(pi (s - w) / (n - w))) / 2 for w <= s <= n, as PyTorch's CosineAnnealingLR with
// eta_min = floor (Zoology anneals to 0). Steps past n stay at floor.
#pragma once

#include <cmath>
#include <numbers>
#include <string>

#include "miras/core/error.hpp"
#include "miras/core/tensor.hpp"

namespace miras::nn {

struct CosineSchedule {
    double peak = 1e-3;
    double floor = 0;
    Index warmup = 0;  ///< w: steps of linear rise from peak / w to peak.
    Index total = 1;   ///< n: the step at which the rate reaches floor.

    void check() const {
        if (!(peak >= 0) || !(floor >= 0) || floor > peak) {
            throw ConfigError("CosineSchedule: need 0 <= floor <= peak, got floor = " + std::to_string(floor) +
                              ", peak = " + std::to_string(peak));
        }
        if (warmup < 0 || total <= warmup) {
            throw ConfigError("CosineSchedule: need 0 <= warmup < total, got warmup = " + std::to_string(warmup) +
                              ", total = " + std::to_string(total));
        }
    }

    /// Returns the learning rate of step `s` (from 0).
    double at(Index s) const {
        check();
        if (s < warmup) return peak * static_cast<double>(s + 1) / static_cast<double>(warmup);
        if (s >= total) return floor;
        const double progress = static_cast<double>(s - warmup) / static_cast<double>(total - warmup);
        return floor + (peak - floor) * (1 + std::cos(std::numbers::pi * progress)) / 2;
    }
};

}  // namespace miras::nn
