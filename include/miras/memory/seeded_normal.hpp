// A seeded normal generator that gives the same numbers on every platform: splitmix64 for the
// uniform stream and the Box-Muller transform for the normals. Used to initialise deep memories.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace miras {

class SeededNormal {
public:
    explicit SeededNormal(std::uint64_t seed) : state_(seed) {}

    /// Returns a uniform number in (0, 1).
    double uniform() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return (static_cast<double>(z >> 11) + 0.5) * 0x1.0p-53;
    }

    /// Returns a standard normal number (Box-Muller, using both values of each pair).
    double normal() {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        const double radius = std::sqrt(-2.0 * std::log(uniform()));
        const double angle = 2.0 * std::numbers::pi * uniform();
        spare_ = radius * std::sin(angle);
        has_spare_ = true;
        return radius * std::cos(angle);
    }

private:
    std::uint64_t state_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

}  // namespace miras
